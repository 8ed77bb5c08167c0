"""Deep & Cross Network: vector (v1), matrix (v2) and low-rank mixture layers."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import numerics
from keras_mtl import validation

DCN_TYPES = ("vector", "matrix", "mixed")


@keras.saving.register_keras_serializable(package="keras_mtl")
class DCN(keras.layers.Layer):
    """Deep & Cross Network cross layers (DCN v1, DCN v2 and DCN-Mix).

    With `x0` the input and `x_0 = x0`, each of the `layer_num` cross layers
    `l` maps `x_l` to `x_{l+1}` over the last axis (row-vector convention,
    `x @ K`):

    - `"vector"` (DCN v1): `x_{l+1} = x0 * (x_l @ w_l) + b_l + x_l`, with
      `w_l` of shape `(d, 1)`; the bias sits *outside* the product.
    - `"matrix"` (DCN v2): `x_{l+1} = x0 * (x_l @ W_l + b_l) + x_l`, with
      `W_l` of shape `(d, d)`; with `low_rank=r` the kernel is factored as
      `W_l = D_l @ P_l` (DCN v2's low-rank cross, `D_l` `(d, r)`, `P_l`
      `(r, d)`), computed as `(x_l @ D_l) @ P_l`, never forming `W_l`.
    - `"mixed"` (DCN-Mix, low-rank experts `e = 1..E`, rank `r`):
      `E_e = x0 * (g(g(x_l @ V_le) @ C_le) @ U_leᵀ + b_l)`,
      `gate = softmax_e(x_l @ G_l)` and
      `x_{l+1} = sum_e gate_e * E_e + x_l`, where `g` is
      `low_rank_activation` (tanh by default). The softmax runs over the
      experts. With `share_gates=True` one gate kernel `G` serves every
      layer. With `num_experts=1` the gate is identically 1 and no gate
      weight is created.

    With `allow_kernel_norm=True` every kernel (never a bias) is weight
    normalized over its input axis: `K = g * W / sqrt(max(sum W^2, 1e-6))`,
    where the trainable scale `g` starts at the column norms of the initial
    `W` (so a fresh layer computes what it would without normalization).

    With `use_dropout=True`, inverted dropout with rate `1 - keep_prob` is
    applied after every cross layer, only when `training=True`.

    Args:
        layer_num: positive int. Number of cross layers. Defaults to `1`.
        dcn_type: `"vector"`, `"matrix"` or `"mixed"`. Defaults to `"matrix"`.
        initializer: initializer of every kernel (a Keras initializer, its
            name or its config); `None` means `"glorot_normal"`. Biases
            start at zero. Defaults to `None`.
        regularizer: regularizer of every kernel, not the biases (a Keras
            regularizer, its name, its config or `None`). Defaults to
            `None`.
        num_experts: positive int. Number of low-rank experts (`"mixed"`
            only). Defaults to `1`.
        low_rank: int >= 0 or `None`. Rank `r` of the experts; required
            (positive) for `"mixed"`. With `"matrix"`, a positive `r`
            factors each kernel into `(d, r) @ (r, d)`; `None` or `0` keeps
            the full `(d, d)` kernel. Only `None` or `0` with `"vector"`.
            Defaults to `None`.
        allow_kernel_norm: bool. Weight-normalize the kernels. Defaults to
            `False`.
        use_dropout: bool. Apply dropout after every layer in training.
            Defaults to `False`.
        keep_prob: finite float in (0, 1]. Dropout keep probability.
            Defaults to `0.95`.
        share_gates: bool. Share the expert gate kernel across layers
            (`"mixed"` only; torchrec and DeepCTR do). Defaults to `False`.
        low_rank_activation: activation `g` of the low-rank experts (a
            name, a serialized dict, a callable or `None` for linear;
            `"mixed"` only; the low-rank `"matrix"` kernel is linear, as
            in DCN v2; torchrec uses relu, DeepCTR tanh). Defaults to
            `"tanh"`.
        **kwargs: Args to pass to the base class.

    Input shape: `(batch, ..., d)` with a static `d`; integer inputs are
    cast to the compute dtype. After the first call, another `d` raises a
    `ValueError`.
    Output shape: same as the input.

    Weights (layer `i`, raw kernels in `x @ K` layout):

    - vector: `kernel_{i}` `(d, 1)`, `bias_{i}` `(d,)`.
    - matrix: `kernel_{i}` `(d, d)`, `bias_{i}` `(d,)`; with `low_rank=r`,
      `down_kernel_{i}` `(d, r)` and `up_kernel_{i}` `(r, d)` instead of
      `kernel_{i}`.
    - mixed: `u_kernel_{i}` `(E, d, r)`, `v_kernel_{i}` `(E, d, r)`,
      `c_kernel_{i}` `(E, r, r)`, `bias_{i}` `(d,)` and, when `E > 1`,
      `gate_kernel_{i}` `(d, E)` (or one `gate_kernel` `(d, E)` with
      `share_gates=True`).
    - with kernel norm, each kernel `<name>` has a scale `<name>_norm` of its
      shape without the input axis (`(1,)`, `(d,)`, `(E, r)`, `(E,)`).

    Weight mapping to peer libraries (the same maths):

    - keras-rs `FeatureCross()` (one per layer, called `(x0, x_i)`,
      `diag_scale=0`, no `pre_activation`): `dense.kernel = kernel_{i}`,
      `dense.bias = bias_{i}` for `"matrix"`.
    - torchrec `CrossNet`: `kernels[i] = kernel_{i}ᵀ`,
      `bias[i] = bias_{i}[:, None]`. torchrec `VectorCrossNet`:
      `kernels[i] = kernel_{i}`, `bias[i] = bias_{i}[:, None]`.
    - torchrec `LowRankMixtureCrossNet(activation=g)` with
      `share_gates=True`: `U_kernels[i][e] = u_kernel_{i}[e]`,
      `V_kernels[i][e] = v_kernel_{i}[e]ᵀ`, `C_kernels[i][e] =
      c_kernel_{i}[e]ᵀ`, `bias[i] = bias_{i}[:, None]`,
      `gates[e].weight = gate_kernel[:, e][None]`. DeepCTR `CrossNetMix`
      (tanh, shared gates): `U_list{i}[e] = u_kernel_{i}[e]`,
      `V_list{i}[e] = v_kernel_{i}[e]`, `C_list{i}[e] = c_kernel_{i}[e]ᵀ`,
      `bias{i} = bias_{i}[:, None]`, gating kernel `e` `= gate_kernel[:, e:e+1]`.
    - keras-rs `FeatureCross(projection_dim=r)` (`diag_scale=0`, no
      `pre_activation`) is `"matrix"` with `low_rank=r`:
      `down_proj_dense.kernel = down_kernel_{i}`,
      `dense.kernel = up_kernel_{i}`, `dense.bias = bias_{i}`. torchrec
      `LowRankCrossNet`: `V_kernels[i] = down_kernel_{i}ᵀ`,
      `W_kernels[i] = up_kernel_{i}ᵀ`, `bias[i] = bias_{i}[:, None]`.
      (`"mixed"` with `E = 1`, `C = I` and `low_rank_activation=None` is the
      same maths with an extra `r x r` product.)

    Example:

    ```python
    dcn = keras_mtl.layers.DCN(layer_num=2, dcn_type="mixed", num_experts=3,
                               low_rank=4)
    y = dcn(np.random.rand(8, 16))  # (8, 16)
    low_rank = keras_mtl.layers.DCN(layer_num=3, low_rank=8)  # W = D @ P
    ```

    References:
        - [Wang et al., 2017 (DCN)](https://arxiv.org/abs/1708.05123)
        - [Wang et al., 2020 (DCN V2 / DCN-Mix)](https://arxiv.org/abs/2008.13535)
    """

    def __init__(
        self,
        layer_num: int = 1,
        dcn_type: str = "matrix",
        initializer: str | keras.initializers.Initializer | None = None,
        regularizer: str | keras.regularizers.Regularizer | None = None,
        num_experts: int = 1,
        low_rank: int | None = None,
        allow_kernel_norm: bool = False,
        use_dropout: bool = False,
        keep_prob: float = 0.95,
        share_gates: bool = False,
        low_rank_activation: activations.ActivationLike = "tanh",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.layer_num = validation.positive_int("layer_num", layer_num)
        self.dcn_type = validation.one_of("dcn_type", dcn_type, DCN_TYPES)
        self.initializer = validation.initializer(
            "initializer", "glorot_normal" if initializer is None else initializer
        )
        self.regularizer = validation.regularizer("regularizer", regularizer)
        self.num_experts = validation.positive_int("num_experts", num_experts)
        if self.dcn_type == "mixed":
            if low_rank is None or low_rank == 0:
                raise ValueError(
                    "`low_rank` must be a positive integer when "
                    f"`dcn_type='mixed'`. Received: dcn_type={dcn_type!r} with "
                    f"low_rank={low_rank!r}"
                )
            low_rank = validation.positive_int("low_rank", low_rank)
        elif low_rank is not None:
            low_rank = validation.int_in_range("low_rank", low_rank, 0)
            if self.dcn_type == "vector" and low_rank:
                raise ValueError(
                    "`low_rank` applies to dcn_type='matrix' or 'mixed', not "
                    f"'vector'. Received: dcn_type={dcn_type!r} with "
                    f"low_rank={low_rank!r}"
                )
        self.low_rank = low_rank
        self.allow_kernel_norm = validation.boolean(
            "allow_kernel_norm", allow_kernel_norm
        )
        self.use_dropout = validation.boolean("use_dropout", use_dropout)
        self.keep_prob = validation.in_range(
            "keep_prob", keep_prob, 0.0, 1.0, low_inclusive=False
        )
        self.share_gates = validation.boolean("share_gates", share_gates)
        self.low_rank_activation = activations.clone(
            activations.get_named("low_rank_activation", low_rank_activation),
            name="low_rank_activation",
            dtype=self.dtype_policy,
        )
        # Sub-layers are created here so their names are stable.
        self.dropout = (
            keras.layers.Dropout(
                1.0 - self.keep_prob, dtype=self.dtype_policy, name="dropout"
            )
            if self.use_dropout
            else None
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True

    # -- weights ---------------------------------------------------------------

    def _kernel(self, name: str, shape: tuple[int, ...]) -> tuple[Any, Any]:
        """A raw kernel and, with kernel norm, its trainable scale."""
        kernel = self.add_weight(
            name=name,
            shape=shape,
            initializer=self.initializer,
            regularizer=self.regularizer,
        )
        norm = None
        if self.allow_kernel_norm:
            norm = self.add_weight(
                name=f"{name}_norm",
                shape=shape[:-2] + shape[-1:],
                initializer=numerics.column_norm_initializer(kernel),
            )
        return kernel, norm

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                "`DCN` expects inputs of rank >= 2 with a static last dimension. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        d = int(input_shape[-1])
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: d})
        e, r = self.num_experts, self.low_rank
        self._kernels: list[dict[str, tuple[Any, Any]]] = []
        self._biases = []
        shared_gate = None
        if self.dcn_type == "mixed" and e > 1 and self.share_gates:
            shared_gate = self._kernel("gate_kernel", (d, e))
        for i in range(self.layer_num):
            kernels: dict[str, tuple[Any, Any]] = {}
            if self.dcn_type == "vector":
                kernels["w"] = self._kernel(f"kernel_{i}", (d, 1))
            elif self.dcn_type == "matrix" and r:
                kernels["down"] = self._kernel(f"down_kernel_{i}", (d, r))
                kernels["up"] = self._kernel(f"up_kernel_{i}", (r, d))
            elif self.dcn_type == "matrix":
                kernels["w"] = self._kernel(f"kernel_{i}", (d, d))
            else:
                kernels["u"] = self._kernel(f"u_kernel_{i}", (e, d, r))
                kernels["v"] = self._kernel(f"v_kernel_{i}", (e, d, r))
                kernels["c"] = self._kernel(f"c_kernel_{i}", (e, r, r))
                if e > 1:
                    kernels["g"] = shared_gate or self._kernel(
                        f"gate_kernel_{i}", (d, e)
                    )
            self._kernels.append(kernels)
            self._biases.append(
                self.add_weight(name=f"bias_{i}", shape=(d,), initializer="zeros")
            )
        if isinstance(self.low_rank_activation, keras.layers.Layer):
            self.low_rank_activation.build((None, r or d))

    def _effective(self, pair: tuple[Any, Any]) -> Any:
        kernel, norm = pair
        if norm is None:
            return kernel
        return numerics.weight_norm(kernel, norm)

    # -- forward ---------------------------------------------------------------

    def _act(self, x: Any) -> Any:
        if self.low_rank_activation is None:
            return x
        return self.low_rank_activation(x)

    def _single_expert(self, xl: Any, kernels: dict[str, Any]) -> Any:
        """`g(g(x_l @ V) @ C) @ Uᵀ` for one expert (no gate): plain matmuls.

        With a linear `g` the product is associated as `x_l @ (V @ C)`, so the
        `r x r` matrix costs one `(d, r) x (r, r)` product per step instead of
        an `(N, r) x (r, r)` one per row: the same maths as keras-rs
        `FeatureCross(projection_dim=r)` (up to float rounding).
        """
        v, c, u = kernels["v"][0], kernels["c"][0], kernels["u"][0]
        if self._linear_low_rank():
            h = ops.matmul(xl, ops.matmul(v, c))
        else:
            h = self._act(ops.matmul(self._act(ops.matmul(xl, v)), c))
        return ops.matmul(h, ops.transpose(u))

    def _linear_low_rank(self) -> bool:
        act = self.low_rank_activation
        return act is None or activations.name_of(act) == "linear"

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        inputs = ops.cast(inputs, self.compute_dtype)
        x0 = inputs
        xl = inputs
        for i in range(self.layer_num):
            kernels = {k: self._effective(p) for k, p in self._kernels[i].items()}
            bias = self._biases[i]
            if self.dcn_type == "vector":
                xl = x0 * ops.matmul(xl, kernels["w"]) + bias + xl
            elif "down" in kernels:
                low = ops.matmul(ops.matmul(xl, kernels["down"]), kernels["up"])
                xl = x0 * (low + bias) + xl
            elif self.dcn_type == "matrix":
                xl = x0 * (ops.matmul(xl, kernels["w"]) + bias) + xl
            elif "g" not in kernels:
                xl = x0 * (self._single_expert(xl, kernels) + bias) + xl
            else:
                # Experts as batched 2-D matmuls over rows (N = all leading
                # dims): one (N, d) x (d, E*r) product, then (E, N, r) batches.
                # Broadcasting (..., 1, 1, d) rows against (E, d, r) kernels
                # ran one tiny product per row and expert (27x slower on torch).
                # No einsum: TF's float16 einsum with an ellipsis is wrong on CPU.
                num_experts, dim, rank = kernels["v"].shape
                rows = ops.reshape(xl, (-1, dim))  # (N, d)
                v_flat = ops.reshape(
                    ops.transpose(kernels["v"], (1, 0, 2)), (dim, num_experts * rank)
                )
                v = ops.reshape(ops.matmul(rows, v_flat), (-1, num_experts, rank))
                v = ops.transpose(self._act(v), (1, 0, 2))  # (E, N, r)
                c = self._act(ops.matmul(v, kernels["c"]))  # (E, N, r)
                u_t = ops.transpose(kernels["u"], (0, 2, 1))  # (E, r, d)
                u = ops.transpose(ops.matmul(c, u_t), (1, 0, 2))  # (N, E, d)
                u = ops.reshape(u, (-1,) + tuple(x0.shape[1:-1]) + (num_experts, dim))
                experts = ops.expand_dims(x0, axis=-2) * (u + bias)  # (..., E, d)
                gates = ops.softmax(ops.matmul(xl, kernels["g"]), axis=-1)
                xl = ops.sum(experts * ops.expand_dims(gates, -1), axis=-2) + xl
            if self.dropout is not None and training:
                xl = self.dropout(xl, training=training)
        return xl

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "layer_num": self.layer_num,
                "dcn_type": self.dcn_type,
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "num_experts": self.num_experts,
                "low_rank": self.low_rank,
                "allow_kernel_norm": self.allow_kernel_norm,
                "use_dropout": self.use_dropout,
                "keep_prob": self.keep_prob,
                "share_gates": self.share_gates,
                "low_rank_activation": activations.serialize(self.low_rank_activation),
            }
        )
        return config
