"""Attention GRU cell (AGRU / AUGRU) and attention RNN helpers with masks."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import numerics
from keras_mtl import validation
from keras_mtl.backend.scan import scan_states

ATT_TYPES = ("AGRU", "AUGRU")


@keras.saving.register_keras_serializable(package="keras_mtl")
class AGRUCell(keras.layers.Layer):
    """GRU cell whose update is steered by an attention score (DIEN).

    One step, with input `x` `[B, I]`, state `h` `[B, U]` and attention `a`
    `[B, 1]` (reset gate first, then update gate):

    `[r, u] = sigmoid([x, h] @ W_g + b_g)`
    `c = act([x, r * h] @ W_c + b_c)`

    - no attention: `h' = (1 - u) * h + u * c` (a plain GRU step);
    - `AGRU`: `h' = (1 - a) * h + a * c` (the attention replaces the update
      gate);
    - `AUGRU` (DIEN paper): `u~ = a * u`, `h' = (1 - u~) * h + u~ * c`
      (the attention scales the update gate, so `a = 0` keeps `h`).

    With a step mask `m` `[B]` (bool, or numeric: real where `>= 1`),
    `h' <- where(m, h', h)`: a masked (padded) step leaves the state
    unchanged. The helpers also replace padded inputs and scores by zeros
    with a select first, so NaN or inf padding reaches neither the states
    nor the gradients.

    `cell(x, state, att_score)` runs one step and returns `(h', h')`, as in
    the reference library. As a `keras.layers.RNN` cell,
    `call(inputs, states)` runs the step; with
    `attention_in_inputs=True` the last input feature is the attention score
    (feed `concat([x_t, a_t[..., None]], -1)`), otherwise no attention is
    used. `static_rnn_with_attention` and `dynamic_rnn_with_attention` drive
    the same `step` over a whole sequence.

    Args:
        units: positive int. State width `U`.
        att_type: `"AGRU"` or `"AUGRU"` (case-insensitive). Defaults to
            `"AGRU"`.
        activation: candidate activation (a name, a serialized dict or a
            callable); `None` means `tanh`. Defaults to `None`.
        initializer: kernel initializer (a Keras initializer, its name or
            its config); `None` means `HeNormal`. Defaults to `None`.
        regularizer: regularizer for kernels and biases (a Keras
            regularizer, its name, its config or `None`). Defaults to
            `None`.
        attention_in_inputs: bool. In `call`, read the attention score from
            the last input feature. Defaults to `False`.
        **kwargs: Args to pass to the base class.

    Input shape: `x` `(batch, input_dim)`, state `(batch, units)`, attention
    `(batch, 1)` or `(batch,)`; integer inputs are cast to the compute
    dtype. After the build, another `input_dim` or state width raises a
    `ValueError`.
    Output shape: `(batch, units)` (output and new state are equal).

    Weights: `gates_kernel` `(I + U, 2U)`, `gates_bias` `(2U,)` (ones),
    `candidate_kernel` `(I + U, U)`, `candidate_bias` `(U,)` (ones).

    Example:

    ```python
    from keras_mtl.layers import dynamic_rnn_with_attention

    cell = keras_mtl.layers.AGRUCell(8, att_type="AUGRU")
    outputs, final = dynamic_rnn_with_attention(
        cell, x, att, mask=mask)  # x (B, T, I), att (B, T), mask (B, T)
    ```

    References:
        - [Zhou et al., 2019, Deep Interest Evolution Network](
          https://arxiv.org/abs/1809.03672)
    """

    def __init__(
        self,
        units: int,
        att_type: str = "AGRU",
        activation: activations.ActivationLike = None,
        initializer: str | keras.initializers.Initializer | None = None,
        regularizer: str | keras.regularizers.Regularizer | None = None,
        attention_in_inputs: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.units = validation.positive_int("units", units)
        if not isinstance(att_type, str) or att_type.upper() not in ATT_TYPES:
            raise ValueError(
                f"`att_type` must be one of {list(ATT_TYPES)} (case-insensitive). "
                f"Received: att_type={att_type!r}"
            )
        self.att_type = att_type.upper()
        self.activation = activations.get_named(
            "activation", "tanh" if activation is None else activation
        )
        self.initializer = validation.initializer(
            "initializer", "he_normal" if initializer is None else initializer
        )
        self.regularizer = validation.regularizer("regularizer", regularizer)
        self.attention_in_inputs = validation.boolean(
            "attention_in_inputs", attention_in_inputs
        )
        self.state_size = self.units
        self.output_size = self.units

    def build(self, input_shape: Any) -> None:
        if isinstance(input_shape, (list, tuple)) and isinstance(
            input_shape[0], (list, tuple)
        ):
            input_shape = input_shape[0]
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "AGRUCell needs a static input dimension. "
                f"Received: input_shape={input_shape}"
            )
        if self.attention_in_inputs:
            input_dim -= 1
        if input_dim < 1:
            raise ValueError(
                "AGRUCell needs at least one input feature (besides the "
                f"attention score with attention_in_inputs=True). Received: "
                f"input_shape={input_shape}"
            )
        self.input_dim = int(input_dim)
        width = self.input_dim + self.units
        self.gates_kernel = self.add_weight(
            name="gates_kernel",
            shape=(width, 2 * self.units),
            initializer=self.initializer,
            regularizer=self.regularizer,
        )
        self.gates_bias = self.add_weight(
            name="gates_bias",
            shape=(2 * self.units,),
            initializer="ones",
            regularizer=self.regularizer,
        )
        self.candidate_kernel = self.add_weight(
            name="candidate_kernel",
            shape=(width, self.units),
            initializer=self.initializer,
            regularizer=self.regularizer,
        )
        self.candidate_bias = self.add_weight(
            name="candidate_bias",
            shape=(self.units,),
            initializer="ones",
            regularizer=self.regularizer,
        )

    def step(
        self,
        x: Any,
        h: Any,
        att: Any | None = None,
        step_mask: Any | None = None,
    ) -> Any:
        """One step: the new state `[B, U]` (see the class docstring)."""
        x = ops.cast(ops.convert_to_tensor(x), self.compute_dtype)
        h = ops.cast(ops.convert_to_tensor(h), self.compute_dtype)
        validation.last_dim(self, "the step input", x.shape, self.input_dim)
        validation.last_dim(self, "the state", h.shape, self.units)
        gates = ops.sigmoid(
            ops.matmul(ops.concatenate([x, h], axis=-1), self.gates_kernel)
            + self.gates_bias
        )
        r = gates[:, : self.units]
        u = gates[:, self.units :]
        c = self.activation(
            ops.matmul(ops.concatenate([x, r * h], axis=-1), self.candidate_kernel)
            + self.candidate_bias
        )
        if att is None:
            new = (1.0 - u) * h + u * c
        else:
            att = ops.reshape(ops.cast(att, h.dtype), (-1, 1))
            if self.att_type == "AGRU":
                new = (1.0 - att) * h + att * c
            else:
                u = att * u
                new = (1.0 - u) * h + u * c
        if step_mask is not None:
            step_mask = ops.reshape(numerics.real_mask(step_mask), (-1, 1))
            new = ops.where(step_mask, new, h)
        return new

    def call(
        self,
        inputs: Any,
        states: Any,
        att_score: Any | None = None,
        training: bool | None = None,
    ) -> Any:
        h = states[0] if isinstance(states, (list, tuple)) else states
        if h.shape[-1] is not None and h.shape[-1] != self.units:
            raise ValueError(
                f"The state width must equal units={self.units}. "
                f"Received: state.shape={tuple(h.shape)}"
            )
        att = att_score
        if self.attention_in_inputs:
            att = inputs[:, -1]
            inputs = inputs[:, :-1]
        new = self.step(inputs, h, att)
        if isinstance(states, (list, tuple)):
            return new, [new]
        return new, new

    def get_initial_state(self, batch_size: Any = None) -> list[Any]:
        return [ops.zeros((batch_size, self.units), dtype=self.compute_dtype)]

    def zero_state(self, batch_size: Any, dtype: Any = None) -> Any:
        """Zeros `[batch_size, units]`."""
        return ops.zeros((batch_size, self.units), dtype=dtype or self.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "att_type": self.att_type,
                "activation": activations.serialize(self.activation),
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "attention_in_inputs": self.attention_in_inputs,
            }
        )
        return config


def _check_rnn_args(cell: Any, inputs: Any, att_scores: Any, mask: Any | None) -> None:
    if not isinstance(cell, AGRUCell):
        raise ValueError(
            "`cell` must be an AGRUCell. "
            f"Received: cell={cell!r} of type {type(cell).__name__}"
        )
    if len(inputs.shape) != 3:
        raise ValueError(
            "`inputs` must have shape (batch, steps, features). "
            f"Received: inputs.shape={tuple(inputs.shape)}"
        )
    expected = tuple(inputs.shape[:2])
    if att_scores is not None:
        shape = tuple(att_scores.shape)
        if len(shape) == 3 and shape[-1] == 1:
            shape = shape[:2]
        if not validation.compatible_shapes(shape, expected):
            raise ValueError(
                "`att_scores` must have shape (batch, steps) = "
                f"{expected}. Received: att_scores.shape={tuple(att_scores.shape)}"
            )
    if mask is not None:
        shape = tuple(mask.shape)
        if not validation.compatible_shapes(shape, expected):
            raise ValueError(
                f"`mask` must have shape (batch, steps) = {expected}. "
                f"Received: mask.shape={shape}"
            )


def _prepare(
    cell: AGRUCell, inputs: Any, att_scores: Any, init_state: Any, mask: Any
) -> tuple[Any, Any, Any, Any]:
    """Checked inputs, scores, initial state and bool mask of the helpers."""
    inputs, att_scores, mask = (
        None if x is None else ops.convert_to_tensor(x)
        for x in (inputs, att_scores, mask)
    )
    _check_rnn_args(cell, inputs, att_scores, mask)
    dtype = cell.compute_dtype
    # Integer inputs and scores are cast, as every layer casts its inputs.
    inputs = ops.cast(inputs, dtype)
    if not cell.built:
        cell.build((inputs.shape[0], inputs.shape[-1]))
    validation.last_dim(cell, "inputs", inputs.shape, cell.input_dim)
    if att_scores is not None:
        att_scores = ops.cast(att_scores, dtype)
        if len(att_scores.shape) == 3:
            att_scores = att_scores[:, :, 0]
    if init_state is None:
        init_state = ops.zeros((ops.shape(inputs)[0], cell.units), dtype=dtype)
    else:
        init_state = ops.cast(ops.convert_to_tensor(init_state), dtype)
        shape = tuple(init_state.shape)
        expected = (inputs.shape[0], cell.units)
        if not validation.compatible_shapes(shape, expected):
            raise ValueError(
                f"`init_state` must have shape (batch, units) = {expected}. "
                f"Received: init_state.shape={shape}"
            )
    if mask is not None:
        # Real where `>= 1` (`numerics.real_mask`). Padded inputs and scores
        # are selected away (not multiplied by 0), so NaN padding reaches no
        # state or gradient.
        mask = numerics.real_mask(mask)
        inputs = ops.where(ops.expand_dims(mask, -1), inputs, ops.zeros_like(inputs))
        if att_scores is not None:
            att_scores = ops.where(mask, att_scores, ops.zeros_like(att_scores))
    return inputs, att_scores, init_state, mask


def static_rnn_with_attention(
    cell: AGRUCell,
    inputs: Any,
    att_scores: Any | None,
    init_state: Any | None = None,
    mask: Any | None = None,
) -> tuple[Any, Any]:
    """Runs `cell` over a static number of steps with an unrolled Python loop.

    Args:
        cell: an `AGRUCell`.
        inputs: `[B, T, I]`, `T` static (integer inputs are cast to the
            cell's compute dtype).
        att_scores: `[B, T]` (or `[B, T, 1]`) attention scores, or `None`.
        init_state: `[B, U]`; zeros when `None`.
        mask: `[B, T]`, bool or numeric (real where `>= 1`); a masked
            step keeps the previous state, and its input and score are
            replaced by zeros with a select (NaN padding stays out).

    Returns:
        `(outputs [B, T, U], final_state [B, U])`; `outputs[:, t]` is the state
        after step `t` (the carried state at masked steps).

    Raises:
        ValueError: for a cell that is not an `AGRUCell`, shapes that do not
            match (inputs, scores, mask, initial state, the cell's input
            width) or an unknown number of steps.
    """
    if len(ops.shape(inputs)) == 3 and ops.shape(inputs)[1] is None:
        raise ValueError(
            "`static_rnn_with_attention` needs a static number of steps; use "
            "`dynamic_rnn_with_attention`. "
            f"Received: inputs.shape={tuple(inputs.shape)}"
        )
    inputs, att_scores, h, mask = _prepare(cell, inputs, att_scores, init_state, mask)
    outputs = []
    for t in range(inputs.shape[1]):
        h = cell.step(
            inputs[:, t],
            h,
            None if att_scores is None else att_scores[:, t],
            None if mask is None else mask[:, t],
        )
        outputs.append(h)
    return ops.stack(outputs, axis=1), h


def dynamic_rnn_with_attention(
    cell: AGRUCell,
    inputs: Any,
    att_scores: Any | None,
    parallel_iterations: int = 1,
    swap_memory: bool = True,
    init_state: Any | None = None,
    mask: Any | None = None,
) -> tuple[Any, Any]:
    """Runs `cell` over the sequence with a scan (same maths).

    The scan is `keras.ops.scan`, or `tf.scan` on TensorFlow so that the
    backward pass compiles under XLA (`keras_mtl.backend.scan`).

    `parallel_iterations` (a positive int) and `swap_memory` (a bool), TF
    `while_loop` settings in the reference library, are checked for
    compatibility and ignored. The other args, the returns and the errors
    are as in `static_rnn_with_attention` (any number of steps).
    """
    validation.positive_int("parallel_iterations", parallel_iterations)
    validation.boolean("swap_memory", swap_memory)
    inputs, att_scores, h0, mask = _prepare(cell, inputs, att_scores, init_state, mask)
    batch = ops.shape(inputs)[0]
    steps = ops.shape(inputs)[1]
    if att_scores is None:
        att_scores = ops.ones((batch, steps), dtype=inputs.dtype)
        use_att = False
    else:
        use_att = True
    if mask is None:
        mask = ops.ones((batch, steps), dtype="bool")
    xs = (
        ops.transpose(inputs, (1, 0, 2)),
        ops.transpose(att_scores, (1, 0)),
        ops.transpose(mask, (1, 0)),
    )

    def step(h: Any, x: Any) -> Any:
        x_t, a_t, m_t = x
        return cell.step(x_t, h, a_t if use_att else None, m_t)

    final, outputs = scan_states(step, h0, xs)
    return ops.transpose(outputs, (1, 0, 2)), final
