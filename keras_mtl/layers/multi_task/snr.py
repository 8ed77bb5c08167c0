"""Sub-Network Routing (SNR) with hard-concrete gates."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keras_mtl import gating
from keras_mtl import validation
from keras_mtl.layers.core.dense import InitializerLike
from keras_mtl.layers.core.dense import RegularizerLike

SNR_TYPES = ("trans", "aver")


@keras.saving.register_keras_serializable(package="keras_mtl")
class SNR(keras.layers.Layer):
    """Sub-Network Routing (Ma et al., AAAI 2019) between two levels of sub-networks.

    `I` input sub-networks `x_i` (`[B, d_in]` each) are routed to `O` output
    sub-networks through `R = I * O` routes, route `r = i * O + j`, each with
    a hard-concrete gate `z_ij` (Louizos et al., 2018):

    `y_j = sum_i z_ij * x_i @ W_ij`

    `snr_type="trans"` learns a `W_ij` `[d_in, d_out]` per route (stored as
    `weight` `[R, d_in * d_out]`); `"aver"` uses `W_ij = I` (needs
    `d_in == d_out`), a gated *sum* of the inputs.

    Gates, from the trainable `log_alpha` `[R, 1]`:

    - training (`training=True`): `u ~ U(0, 1)`,
      `s = sigmoid((log u - log(1 - u) + log_alpha) / beta)`;
    - otherwise (deterministic): `s = sigmoid(log_alpha)`;
    - then `z = clip(s * (zeta - gamma) + gamma, 0, 1)`.

    With `use_ste=True` the clip passes gradients straight through
    (`z = s_bar + stop_gradient(clip(s_bar) - s_bar)`), identically on every
    backend. The expected L0 penalty
    `l0_weight * sum_r sigmoid(log_alpha_r - beta * log(-gamma / zeta))` is
    added with `add_loss` on every call. Gates are computed in float32.

    Args:
        num_out_subnet: positive int. Number of output sub-networks `O`.
        out_subnet_dim: positive int. Output dimension `d_out`.
        snr_type: `"trans"` or `"aver"`. Defaults to `"trans"`.
        zeta: finite float > 1. Upper end of the stretched interval. Defaults
            to `1.1`.
        gamma: finite float < 0. Lower end of the stretched interval.
            Defaults to `-0.1`.
        beta: finite float > 0. Temperature of the concrete distribution.
            Defaults to `0.5`.
        use_ste: bool. Straight-through gradient through the clip. Defaults to
            `False`.
        initializer: initializer of `weight` (`"trans"`): a Keras initializer,
            its name or its config (`None` means the default). Defaults to
            `"glorot_uniform"` (fans of the 2-D `[R, d_in * d_out]` shape, as
            in the reference).
        regularizer: regularizer of `weight` (a Keras regularizer, its name,
            its config or `None`). Defaults to `None`.
        l0_weight: finite float >= 0. Coefficient of the L0 penalty. Defaults
            to `1.0`.
        seed: int or `None`. Seed of the gate sampling. Defaults to `None`.
        **kwargs: Args to pass to the base class.

    Every argument is checked at construction: a wrong type or value raises a
    `ValueError` naming the argument.

    Input shape: a list of `I >= 1` tensors `(batch, d_in)`, equal `d_in`;
    once built, the same `I` and `d_in` (else a `ValueError` naming the
    layer). Integer inputs are cast to the compute dtype first.
    Output shape: a list of `O` tensors `(batch, out_subnet_dim)`.

    Weights (all created by `build`): `log_alpha` `[R, 1]` (zeros); `weight`
    `[R, d_in * d_out]` for `"trans"`.

    Example:

    ```python
    snr = keras_mtl.layers.SNR(num_out_subnet=2, out_subnet_dim=8)
    y0, y1 = snr([np.random.rand(4, 16) for _ in range(3)])  # (4, 8) each
    ```

    References:
        - [Ma et al., 2019](https://ojs.aaai.org/index.php/AAAI/article/view/3788)
        - [Louizos et al., 2018](https://arxiv.org/abs/1712.01312)
    """

    def __init__(
        self,
        num_out_subnet: int,
        out_subnet_dim: int,
        snr_type: str = "trans",
        zeta: float = 1.1,
        gamma: float = -0.1,
        beta: float = 0.5,
        use_ste: bool = False,
        initializer: InitializerLike = "glorot_uniform",
        regularizer: RegularizerLike = None,
        l0_weight: float = 1.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.num_out_subnet = validation.positive_int("num_out_subnet", num_out_subnet)
        self.out_subnet_dim = validation.positive_int("out_subnet_dim", out_subnet_dim)
        self.snr_type = validation.one_of("snr_type", snr_type, SNR_TYPES)
        inf = float("inf")
        self.zeta = validation.in_range("zeta", zeta, 1.0, inf, low_inclusive=False)
        self.gamma = validation.in_range(
            "gamma", gamma, -inf, 0.0, high_inclusive=False
        )
        self.beta = validation.in_range("beta", beta, 0.0, inf, low_inclusive=False)
        self.use_ste = validation.boolean("use_ste", use_ste)
        self.initializer = validation.initializer(
            "initializer", "glorot_uniform" if initializer is None else initializer
        )
        self.regularizer = validation.regularizer("regularizer", regularizer)
        self.l0_weight = validation.non_negative_float("l0_weight", l0_weight)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
        self.seed = seed
        # Other args.
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.num_in_subnet: int | None = None
        self.in_subnet_dim: int | None = None

    def build(self, input_shape: Any) -> None:
        if not (
            isinstance(input_shape, (list, tuple))
            and input_shape
            and all(isinstance(s, (list, tuple)) for s in input_shape)
        ):
            raise ValueError(
                "`SNR` expects a list of input tensors (one per input sub-network). "
                f"Received: input_shape={input_shape}"
            )
        dims = [s[-1] for s in input_shape]
        if any(len(s) != 2 for s in input_shape) or dims[0] is None:
            raise ValueError(
                "`SNR` expects rank-2 inputs with a static last dimension. "
                f"Received: input_shape={input_shape}"
            )
        if any(d != dims[0] for d in dims):
            raise ValueError(
                "All SNR inputs must have the same last dimension. "
                f"Received: input last dims={dims}"
            )
        self.num_in_subnet = len(input_shape)
        self.in_subnet_dim = int(dims[0])
        if self.snr_type == "aver" and self.in_subnet_dim != self.out_subnet_dim:
            raise ValueError(
                "`snr_type='aver'` needs the input dimension to equal "
                f"`out_subnet_dim`. Received: out_subnet_dim={self.out_subnet_dim} "
                f"with input dim {self.in_subnet_dim}"
            )
        routes = self.num_in_subnet * self.num_out_subnet
        self.log_alpha = self.add_weight(
            name="log_alpha", shape=(routes, 1), initializer="zeros"
        )
        if self.snr_type == "trans":
            self.weight = self.add_weight(
                name="weight",
                shape=(routes, self.in_subnet_dim * self.out_subnet_dim),
                initializer=self.initializer,
                regularizer=self.regularizer,
            )

    def gates(self, training: bool | None = None) -> Any:
        """Route gates `z` `[R, 1]` in float32 (sampled when training)."""
        log_alpha = ops.cast(self.log_alpha, "float32")
        return gating.hard_concrete(
            log_alpha,
            zeta=self.zeta,
            gamma=self.gamma,
            beta=self.beta,
            training=bool(training),
            straight_through=self.use_ste,
            seed=self.seed_generator,
        )

    def l0_penalty(self) -> Any:
        """`l0_weight * sum_r sigmoid(log_alpha_r - beta * log(-gamma / zeta))`."""
        shift = self.beta * math.log(-self.gamma / self.zeta)
        log_alpha = ops.cast(self.log_alpha, "float32")
        return self.l0_weight * ops.sum(ops.sigmoid(log_alpha - shift))

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        inputs = validation.input_count(self, inputs, self.num_in_subnet)
        self._check_shapes([x.shape for x in inputs])
        inputs = [ops.cast(x, self.compute_dtype) for x in inputs]
        self.add_loss(self.l0_penalty())
        x = ops.stack(inputs, axis=1)  # [B, I, d_in]
        z = ops.reshape(self.gates(training), (self.num_in_subnet, self.num_out_subnet))
        z = ops.cast(z, x.dtype)
        if self.snr_type == "trans":
            w = ops.reshape(
                self.weight,
                (
                    self.num_in_subnet,
                    self.num_out_subnet,
                    self.in_subnet_dim,
                    self.out_subnet_dim,
                ),
            )
            w = w * z[:, :, None, None]
            y = ops.einsum("bid,iodk->bok", x, w)
        else:
            y = ops.einsum("bid,io->bod", x, z)
        return [y[:, j, :] for j in range(self.num_out_subnet)]

    def _check_shapes(self, shapes: list[Any]) -> None:
        """Call-time checks: rank 2, the built `d_in`, one batch size."""
        for i, shape in enumerate(shapes):
            if len(shape) != 2:
                raise ValueError(
                    f"`SNR` (layer '{self.name}') expects inputs of rank 2 "
                    f"(batch, features). Received: inputs[{i}] of shape "
                    f"{tuple(shape)}"
                )
            validation.last_dim(self, f"inputs[{i}]", shape, self.in_subnet_dim)
            batch, first = shape[0], shapes[0][0]
            if batch is not None and first is not None and batch != first:
                raise ValueError(
                    f"`SNR` (layer '{self.name}') expects inputs with the same "
                    f"batch size. Received: shapes {[tuple(s) for s in shapes]}"
                )

    def compute_output_shape(self, input_shape: Any) -> Any:
        if self.built:  # Symbolic calls run this, not `call`.
            shapes = validation.input_count(self, input_shape, self.num_in_subnet)
            self._check_shapes(shapes)
        batch = input_shape[0][0]
        return [(batch, self.out_subnet_dim) for _ in range(self.num_out_subnet)]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_out_subnet": self.num_out_subnet,
                "out_subnet_dim": self.out_subnet_dim,
                "snr_type": self.snr_type,
                "zeta": self.zeta,
                "gamma": self.gamma,
                "beta": self.beta,
                "use_ste": self.use_ste,
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "l0_weight": self.l0_weight,
                "seed": self.seed,
            }
        )
        return config
