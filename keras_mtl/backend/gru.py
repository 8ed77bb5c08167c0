"""`gru_states`: a Keras `GRU`'s states over a masked sequence, one scan on torch.

With a mask, Keras's torch `GRU` (Keras 3.15) runs its generic RNN loop: it
tests a tensor (`while time < steps`) and calls the cell through
`Layer.__call__`, and `torch.compile` breaks the graph at both, on every call
(DIEN's compiled training step compiled 19 graphs). On torch this adapter
computes the same recurrence with the GRU's own weights over
`keras_mtl.backend.scan.scan_states`, which torch.compile traces in one graph;
torch has no cuDNN path for a masked GRU either. Elsewhere, and without a
mask, it calls the GRU: TensorFlow and JAX keep Keras's fused and cuDNN
kernels, and Keras's unmasked torch loop traces.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl.backend.scan import scan_states


def gru_states(gru: keras.layers.GRU, inputs: Any, mask: Any | None) -> Any:
    """`gru(inputs, mask=mask)` for a built `gru` with `return_sequences=True`.

    On torch with a mask: the recurrence of Keras's `GRUCell` with
    `reset_after=True` (`implementation=2`), from a zero state,

        [x_z, x_r, x_h] = x_t K + b_in        [h_z, h_r, h_h] = h R + b_rec
        z = σ_rec(x_z + h_z)    r = σ_rec(x_r + h_r)    c = σ(x_h + r ⊙ h_h)
        h' = z ⊙ h + (1 − z) ⊙ c,   h_t = mask_t ? h' : h

    which is what Keras returns (its masked RNN repeats the previous output at
    a masked step, and a GRU's output is its state). Dropout is not applied
    there: the GRU must have none.

    Args:
        gru: a built `keras.layers.GRU` (`reset_after=True`,
            `return_sequences=True`, no dropout).
        inputs: `[B, T, I]` in the GRU's compute dtype.
        mask: `[B, T]` bool, or `None`.

    Returns:
        `[B, T, units]`: the state after each step.
    """
    if mask is None or keras.backend.backend() != "torch":
        return gru(inputs, mask=mask)
    cell = gru.cell
    x_proj = ops.matmul(inputs, cell.kernel)
    rec_bias = None
    if cell.use_bias:
        x_proj = x_proj + cell.bias[0]
        rec_bias = cell.bias[1]
    recurrent_kernel = cell.recurrent_kernel
    h0 = ops.zeros((ops.shape(inputs)[0], cell.units), dtype=inputs.dtype)

    def step(h: Any, x: Any) -> Any:
        x_t, m_t = x
        h_proj = ops.matmul(h, recurrent_kernel)
        if rec_bias is not None:
            h_proj = h_proj + rec_bias
        x_z, x_r, x_h = ops.split(x_t, 3, axis=-1)
        h_z, h_r, h_h = ops.split(h_proj, 3, axis=-1)
        z = cell.recurrent_activation(x_z + h_z)
        r = cell.recurrent_activation(x_r + h_r)
        c = cell.activation(x_h + r * h_h)
        new = z * h + (1 - z) * c
        return ops.where(ops.expand_dims(m_t, -1), new, h)

    xs = (ops.transpose(x_proj, (1, 0, 2)), ops.transpose(mask, (1, 0)))
    _, states = scan_states(step, h0, xs)
    return ops.transpose(states, (1, 0, 2))
