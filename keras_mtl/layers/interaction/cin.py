"""Compressed Interaction Network (xDeepFM)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import validation


@keras.saving.register_keras_serializable(package="keras_mtl")
class CIN(keras.layers.Layer):
    """Compressed Interaction Network, the explicit high-order part of xDeepFM.

    With `X0` the input fields `(batch, F, D)` and `X^0 = X0` (`H_0 = F`
    maps), layer `k` computes vector-wise interactions with `X0`:

    `X^k[b, o, d] = act_k(sum_{h, m} K_k[h * F + m, o] * X^{k-1}[b, h, d] *
    X0[b, m, d] + bias_k[o])`

    which is a 1x1 convolution over the embedding axis (Lian et al., 2018,
    eq. 6). Each layer's maps are sum-pooled over `D` and the pooled vectors
    of all layers are concatenated: output `(batch, sum of direct maps)`.

    `activation` applies to every layer except the last one, which is linear
    (as in the reference library) unless `activate_last_layer=True` (as in
    DeepCTR's CIN).

    With `split_half=True` (DeepCTR's option, off by default), every layer
    but the last sends its first `H_k / 2` maps to the next layer and its
    last `H_k / 2` maps to the output; the last layer sends all its maps to
    the output. Non-last `hidden_uints` must then be even.

    Args:
        hidden_uints: int or non-empty list of int. Number of maps `H_k` per
            layer (the reference library's spelling is kept); an int `n`
            means `[n]`.
        activation: activation of the hidden layers (a name, a serialized
            dict or a callable); `None` means linear. Defaults to `None`.
        initializer: kernel initializer (a Keras initializer, its name or
            its config; `None` means `"glorot_uniform"`). Defaults to
            `"glorot_uniform"`.
        regularizer: kernel regularizer (a Keras regularizer, its name, its
            config or `None`). Defaults to `None`.
        split_half: bool. Split each non-last layer between the next layer
            and the output. Defaults to `False`.
        activate_last_layer: bool. Apply `activation` to the last layer too.
            Defaults to `False`.
        **kwargs: Args to pass to the base class.

    Input shape: `(batch, F, D)` with static `F` and `D`; integer inputs are
    cast to the compute dtype. After the first call, other `F` or `D` raise
    a `ValueError`.
    Output shape: `(batch, sum_k direct_k)` where `direct_k = H_k`, or
    `H_k / 2` for non-last layers with `split_half`.

    Weights: `kernel_{k}` `(H_{k-1} * F, H_k)` with input channel
    `h * F + m` (previous map major, field minor), and `bias_{k}` `(H_k,)`.
    With the canonical `W_k[o, h, m]`: `kernel_{k} = W.reshape(H_k, -1).T`.
    DeepCTR-Torch `CIN`: `conv1ds[k].weight[:, :, 0] = kernel_{k}ᵀ`, same
    channel order. DeepCTR (TF) `CIN` orders channels `m * H + h`:
    `filter{k}[0] = W.transpose(2, 1, 0).reshape(-1, H_k)`. The reference
    library's `Conv1D` kernel is `kernel_{k}[None]`.

    Example:

    ```python
    cin = keras_mtl.layers.CIN([8, 6], activation="relu")
    y = cin(np.random.rand(4, 5, 3))  # (4, 14)
    ```

    References:
        - [Lian et al., 2018 (xDeepFM)](https://arxiv.org/abs/1803.05170)
    """

    def __init__(
        self,
        hidden_uints: int | Sequence[int],
        activation: activations.ActivationLike = None,
        initializer: str | keras.initializers.Initializer | None = "glorot_uniform",
        regularizer: str | keras.regularizers.Regularizer | None = None,
        split_half: bool = False,
        activate_last_layer: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.hidden_uints = validation.positive_int_or_list(
            "hidden_uints", hidden_uints
        )
        self.activation = activations.get_named("activation", activation)
        self.initializer = validation.initializer(
            "initializer", "glorot_uniform" if initializer is None else initializer
        )
        self.regularizer = validation.regularizer("regularizer", regularizer)
        self.split_half = validation.boolean("split_half", split_half)
        self.activate_last_layer = validation.boolean(
            "activate_last_layer", activate_last_layer
        )
        if self.split_half and any(h % 2 for h in self.hidden_uints[:-1]):
            raise ValueError(
                "`hidden_uints` must be even (except the last) when "
                f"`split_half=True`. Received: hidden_uints={hidden_uints!r}"
            )
        n = len(self.hidden_uints)
        self.activations = [
            activations.clone(
                self.activation, name=f"activation_{k}", dtype=self.dtype_policy
            )
            if k < n - 1 or self.activate_last_layer
            else None
            for k in range(n)
        ]
        # Other args.
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def _direct(self, k: int) -> int:
        """Maps of layer `k` that go to the output."""
        h = self.hidden_uints[k]
        last = k == len(self.hidden_uints) - 1
        return h // 2 if self.split_half and not last else h

    def _next(self, k: int) -> int:
        """Maps of layer `k` that feed layer `k + 1`."""
        h = self.hidden_uints[k]
        return h // 2 if self.split_half else h

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                "`CIN` expects inputs of shape (batch, fields, dim) with static "
                f"fields and dim. Received: input_shape={tuple(input_shape)}"
            )
        f, d = int(input_shape[1]), int(input_shape[2])
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={1: f, 2: d})
        self.kernels = []
        self.biases = []
        prev = f
        for k, h in enumerate(self.hidden_uints):
            self.kernels.append(
                self.add_weight(
                    name=f"kernel_{k}",
                    shape=(prev * f, h),
                    initializer=self.initializer,
                    regularizer=self.regularizer,
                )
            )
            self.biases.append(
                self.add_weight(name=f"bias_{k}", shape=(h,), initializer="zeros")
            )
            act = self.activations[k]
            if isinstance(act, keras.layers.Layer):
                act.build((None, d, h))
            prev = self._next(k)

    def call(self, inputs: Any) -> Any:
        f, d = inputs.shape[1], inputs.shape[2]
        inputs = ops.cast(inputs, self.compute_dtype)
        x0 = ops.transpose(inputs, (0, 2, 1))  # (B, D, F)
        xl = x0
        pooled = []
        for k, h in enumerate(self.hidden_uints):
            prev = xl.shape[-1]
            z = ops.expand_dims(xl, -1) * ops.expand_dims(x0, -2)  # (B, D, H, F)
            z = ops.reshape(z, (-1, d, prev * f))
            out = ops.matmul(z, self.kernels[k]) + self.biases[k]  # (B, D, H_k)
            if self.activations[k] is not None:
                out = self.activations[k](out)
            if self.split_half and k < len(self.hidden_uints) - 1:
                xl, direct = out[..., : h // 2], out[..., h // 2 :]
            else:
                xl, direct = out, out
            pooled.append(ops.sum(direct, axis=1))
        return ops.concatenate(pooled, axis=-1) if len(pooled) > 1 else pooled[0]

    def compute_output_shape(self, input_shape: Any) -> Any:
        total = sum(self._direct(k) for k in range(len(self.hidden_uints)))
        return (input_shape[0], total)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "hidden_uints": list(self.hidden_uints),
                "activation": activations.serialize(self.activation),
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "split_half": self.split_half,
                "activate_last_layer": self.activate_last_layer,
            }
        )
        return config
