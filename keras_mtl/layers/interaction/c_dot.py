"""CDot: compression and dot interaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import validation
from keras_mtl.layers.core.mlp import MLP


@keras.saving.register_keras_serializable(package="keras_mtl")
class CDot(keras.layers.Layer):
    """Compression and Dot interaction (an input-dependent AllInt).

    For fields `X` `(batch, F, D)`:

    1. `proj = Xᵀ W_p` `(batch, D, P)` with `W_p` `(F, P)`;
    2. `comp = compress_tower(flatten(proj))` `(batch, D * P)`, where the
       tower is an `MLP` with output dims `compress_units + [D * P]`,
       `activation` on the hidden layers, a **linear last layer** and
       weight-normalized kernels (the `MLP` defaults);
    3. `crossed = X reshape(comp, (D, P))` `(batch, F, P)`;
    4. output `concat([flatten(crossed), comp])` `(batch, F * P + D * P)`,
       crossed features first.

    Args:
        project_dim: positive int. Projection dimension `P`.
        compress_units: int or list of int. Hidden widths of the compression
            MLP; an int `n` means `[n]`. An empty list gives a single linear
            layer (no hidden layer).
        activation: hidden activation of the compression MLP (a name, a
            serialized dict or a callable); `None` follows the `MLP` rule
            (ReLU on hidden layers). Defaults to `"relu"`.
        initializer: kernel initializer of `W_p` and the MLP (a Keras
            initializer, its name or its config); `None` means
            `"glorot_normal"`. Defaults to `None`.
        regularizer: kernel regularizer of `W_p` and the MLP (a Keras
            regularizer, its name, its config or `None`). Defaults to
            `None`.
        **kwargs: Args to pass to the base class.

    Input shape: `(batch, F, D)` with static `F` and `D`; integer inputs are
    cast to the compute dtype. After the first call, other `F` or `D` raise
    a `ValueError`.
    Output shape: `(batch, F * P + D * P)`.

    Weights: `project_weight` `(F, P)`;
    `compress_tower/dense_{i}/{kernel, kernel_norm, bias}`.

    Example:

    ```python
    cdot = keras_mtl.layers.CDot(project_dim=4, compress_units=[16])
    y = cdot(np.random.rand(8, 5, 6))  # (8, 5 * 4 + 6 * 4)
    ```

    References:
        - [Lian et al., 2018](https://arxiv.org/abs/1803.05170)
    """

    def __init__(
        self,
        project_dim: int,
        compress_units: int | Sequence[int],
        activation: activations.ActivationLike = "relu",
        initializer: str | keras.initializers.Initializer | None = None,
        regularizer: str | keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.project_dim = validation.positive_int("project_dim", project_dim)
        # `[]` has a meaning here (no hidden layer), kept for saved configs
        # and the `no_hidden_linear` conformance case.
        self.compress_units = validation.positive_int_or_list(
            "compress_units", compress_units, allow_empty=True
        )
        self.activation = activations.get_named("activation", activation)
        self.initializer = validation.initializer(
            "initializer", "glorot_normal" if initializer is None else initializer
        )
        self.regularizer = validation.regularizer("regularizer", regularizer)
        self.compress_tower: MLP | None = None
        # Other args.
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                "`CDot` expects inputs of shape (batch, fields, dim) with static "
                f"fields and dim. Received: input_shape={tuple(input_shape)}"
            )
        f, d = int(input_shape[1]), int(input_shape[2])
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={1: f, 2: d})
        self.project_weight = self.add_weight(
            name="project_weight",
            shape=(f, self.project_dim),
            initializer=self.initializer,
            regularizer=self.regularizer,
        )
        # The tower's last width depends on D, so it is made here.
        self.compress_tower = MLP(
            self.compress_units + [d * self.project_dim],
            activations=activations.serialize(self.activation),
            initializers=keras.initializers.serialize(self.initializer),
            kernel_regularizer=self.regularizer,
            dtype=self.dtype_policy,
            name="compress_tower",
        )
        self.compress_tower.build((None, d * self.project_dim))

    def call(self, inputs: Any) -> Any:
        f, d = inputs.shape[1], inputs.shape[2]
        p = self.project_dim
        inputs = ops.cast(inputs, self.compute_dtype)
        proj = ops.matmul(ops.transpose(inputs, (0, 2, 1)), self.project_weight)
        comp = self.compress_tower(ops.reshape(proj, (-1, d * p)))
        crossed = ops.matmul(inputs, ops.reshape(comp, (-1, d, p)))
        return ops.concatenate([ops.reshape(crossed, (-1, f * p)), comp], axis=-1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        f, d = input_shape[1], input_shape[2]
        return (input_shape[0], (f + d) * self.project_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "project_dim": self.project_dim,
                "compress_units": list(self.compress_units),
                "activation": activations.serialize(self.activation),
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
            }
        )
        return config
