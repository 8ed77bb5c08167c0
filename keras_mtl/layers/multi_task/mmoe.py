"""Multi-gate Mixture-of-Experts (MMoE)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import gating
from keras_mtl import numerics
from keras_mtl import validation
from keras_mtl.layers.core.dense import InitializerLike
from keras_mtl.layers.core.dense import RegularizerLike
from keras_mtl.layers.core.mlp import MLP
from keras_mtl.layers.core.mlp_options import MLPOptionAttributes
from keras_mtl.layers.core.mlp_options import MLPOptions
from keras_mtl.layers.core.stacked_mlp import StackedMLP
from keras_mtl.layers.core.stacked_mlp import check_expert_input
from keras_mtl.layers.core.stacked_mlp import per_expert_initializers

GATE_TYPES = ("softmax", "topk", "noise_topk")
# Accepted, deprecated: the spelling `SparseMoE` used before.
GATE_TYPE_ALIASES = {"noisy_topk": "noise_topk"}


@keras.saving.register_keras_serializable(package="keras_mtl")
class MMoE(MLPOptionAttributes, keras.layers.Layer):
    """Multi-gate Mixture-of-Experts (Ma et al., KDD 2018).

    `E` expert MLPs `f_e` share the expert input `x`; each of the `T` tasks has
    its own gate over the experts, computed from the gate input `z` (by
    default `z = x`):

    `logits[b, t, e] = (z @ W_g)[b, t * E + e] / temperature`
    `g[b, t] = softmax(logits[b, t])`
    `y_t[b] = sum_e g[b, t, e] * f_e(x)[b]`

    Gate types:

    - `"softmax"`: the dense gate above.
    - `"topk"`: the softmax is taken over all experts, then exactly `top_k`
      experts are kept (ties broken by index, the lower index wins) and the
      kept probabilities are renormalized to sum to 1.
    - `"noise_topk"`: as `"topk"`, with noisy logits in training only
      (Shazeer et al., 2017): `logits += N(0, 1) * softplus(z @ W_noise)`,
      before the temperature. Inference is deterministic.

    For `"topk"` and `"noise_topk"` a load-balancing loss is added with
    `add_loss` on every call:
    `balance_loss_weight * sum_t cv2(sum_b g[b, t, :])`, where
    `cv2(v) = var(v) / (mean(v)^2 + 1e-10)` with the population variance
    over experts. `"softmax"` adds no loss. The routing (gate matmul,
    softmax, top-k, loss) runs in float32 under mixed precision; the
    gates are cast back to the compute dtype before mixing the experts.

    Experts are `MLP`s with this layer's weight-norm, bias and batch-norm
    settings (weight normalization is **on by default**) and follow its
    activation rules: an expert given a **single** activation uses it on its
    hidden layers and its **last layer is linear**
    (`expert_output_dims=[8, 4]` with `"relu"` gives relu, linear); an
    expert given a list has one activation per layer (`["relu", "relu"]`
    is relu on every layer, as DeepCTR's experts).
    `expert_activations=None` gives fully linear experts. When all experts
    have the same dims and the same activation, their weights are stacked
    (`experts/dense_{i}/kernel` of shape `[E, in, out]`) and all experts run
    in one matmul per layer; otherwise each expert is its own `MLP` `expert_{e}`.

    Args:
        num_tasks: positive int. Number of tasks `T` (gates and outputs).
        expert_output_dims: positive int or list of positive ints (the same
            MLP for every expert; an int means one layer), or a list of such
            lists (one MLP per expert; last dims must be equal).
        expert_activations: activation for every expert (a name, serialized
            dict, Keras layer or callable), or a list with one entry per
            expert; an entry may itself be a list with one activation per
            layer of that expert (`[["relu", "relu"]] * E`). `None` means
            linear. Unknown names raise a `ValueError`.
        expert_initializers: kernel initializer for every expert (a Keras
            initializer, its name or its config; a seeded one gets seed
            `seed + e` for expert `e`, so experts differ), or a list with one
            per expert. Defaults to `"glorot_uniform"`.
        gate_type: one of `"softmax"`, `"topk"`, `"noise_topk"` (the
            spelling `"noisy_topk"` is accepted, deprecated). Defaults to
            `"softmax"`.
        top_k: int in `[1, num_experts]`. Experts kept by the top-k gates.
            Defaults to `1`.
        num_experts: positive int or `None`. When `None`, inferred (in this
            order) from the length of a list-of-lists `expert_output_dims`,
            of a list `expert_activations`, of a list `expert_initializers`.
            Defaults to `None`.
        kernel_regularizer: regularizer for expert kernels (a Keras
            regularizer, its name, its config or `None`). Defaults to `None`.
        use_weight_norm: bool. Weight-normalize expert kernels. Defaults to
            `True`.
        use_learnable_weight_norm: bool. Train the weight-norm scales.
            Defaults to `True`.
        use_bias: bool. Expert biases. Defaults to `True`.
        bias_regularizer: regularizer for expert biases. Defaults to `None`.
        enable_batch_normalization: bool. Batch norm in the experts (see
            `MLP`). Defaults to `False`.
        batch_normalization_momentum: finite float in [0, 1]. Defaults to
            `0.99`.
        batch_normalization_renorm: bool. Defaults to `False`.
        batch_normalization_renorm_clipping: `None` or a dict (see `MLP`).
            Defaults to `None`.
        batch_normalization_renorm_momentum: finite float in [0, 1].
            Defaults to `0.99`.
        balance_loss_weight: finite float >= 0. Coefficient of the CV²
            balance loss. Defaults to `1.0`.
        temperature: finite float > 0. Gate logits are divided by it.
            Defaults to `1.0`.
        return_gates: bool. Also return the gates `[B, T, E]` as the last
            output. Defaults to `False`.
        seed: int or `None`. Seed of the gate noise (`"noise_topk"`).
            Defaults to `None`.
        **kwargs: Args to pass to the base class.

    Every argument is checked at construction: a wrong type or value raises a
    `ValueError` naming the argument.

    Input shape: `(batch, in)`, or a list `[(batch, in), (batch, gate_in)]`
    (`[expert_input, gate_input]`), with the `in` and `gate_in` the layer was
    built with; another rank, size or number of inputs raises a `ValueError`
    naming the layer. Integer inputs are cast to the compute dtype first.

    Output shape: a list of `T` tensors `(batch, D)`, `D` the experts' last
    dim; with `return_gates`, followed by the gates `(batch, T, E)`.

    Weights (all created by `build`): `gate_weight` `[gate_in, T * E]`
    (zeros), `gate_noise` `[gate_in, T * E]` (Glorot normal, `"noise_topk"`
    only), and the expert weights (see above).

    Example:

    ```python
    mmoe = keras_mtl.layers.MMoE(num_tasks=2, expert_output_dims=[16, 8],
                                 expert_activations="relu", num_experts=4)
    y0, y1 = mmoe(np.random.rand(32, 10))  # two (32, 8) tensors
    ```

    References:
        - [Ma et al., 2018](https://dl.acm.org/doi/10.1145/3219819.3220007)
        - [Shazeer et al., 2017](https://arxiv.org/abs/1701.06538)
    """

    def __init__(
        self,
        num_tasks: int,
        expert_output_dims: int | Sequence[int] | Sequence[Sequence[int]],
        expert_activations: activations.ActivationLike
        | Sequence[activations.ActivationLike],
        expert_initializers: InitializerLike
        | Sequence[InitializerLike] = "glorot_uniform",
        gate_type: str = "softmax",
        top_k: int = 1,
        num_experts: int | None = None,
        kernel_regularizer: RegularizerLike = None,
        use_weight_norm: bool = True,
        use_learnable_weight_norm: bool = True,
        use_bias: bool = True,
        bias_regularizer: RegularizerLike = None,
        enable_batch_normalization: bool = False,
        batch_normalization_momentum: float = 0.99,
        batch_normalization_renorm: bool = False,
        batch_normalization_renorm_clipping: dict[str, float] | None = None,
        batch_normalization_renorm_momentum: float = 0.99,
        balance_loss_weight: float = 1.0,
        temperature: float = 1.0,
        return_gates: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.num_tasks = validation.positive_int("num_tasks", num_tasks)
        self.gate_type = validation.choice(
            "MMoE", "gate_type", gate_type, GATE_TYPES, GATE_TYPE_ALIASES
        )
        per_expert_dims = _is_list_of_lists(expert_output_dims)
        self.num_experts = _infer_num_experts(
            num_experts,
            expert_output_dims,
            expert_activations,
            expert_initializers,
            per_expert_dims,
        )
        self.expert_output_dims = _resolve_dims(
            expert_output_dims, self.num_experts, per_expert_dims
        )
        self.expert_activations = _per_expert(
            "expert_activations", expert_activations, self.num_experts
        )
        self.expert_activations = [
            _expert_activation(a, dims)
            for a, dims in zip(
                self.expert_activations, self.expert_output_dims, strict=True
            )
        ]
        if isinstance(expert_initializers, (list, tuple)):
            inits = _per_expert(
                "expert_initializers", expert_initializers, self.num_experts
            )
            inits = [
                keras.initializers.serialize(
                    validation.initializer("expert_initializers", i)
                )
                for i in inits
            ]
        else:
            # A seeded initializer gets seed + e for expert e (distinct experts).
            inits = per_expert_initializers(
                validation.initializer(
                    "expert_initializers",
                    "glorot_uniform"
                    if expert_initializers is None
                    else expert_initializers,
                ),
                self.num_experts,
            )
        self.expert_initializers = [keras.initializers.get(i) for i in inits]
        self.top_k = validation.positive_int("top_k", top_k)
        if self.top_k > self.num_experts:
            raise ValueError(
                "`top_k` must not exceed the number of experts. "
                f"Received: top_k={self.top_k} with num_experts={self.num_experts}"
            )
        # The expert options, as `MLP` checks them (same names).
        self.mlp_options = MLPOptions.checked(
            kernel_regularizer=kernel_regularizer,
            use_weight_norm=use_weight_norm,
            use_learnable_weight_norm=use_learnable_weight_norm,
            use_bias=use_bias,
            bias_regularizer=bias_regularizer,
            enable_batch_normalization=enable_batch_normalization,
            batch_normalization_momentum=batch_normalization_momentum,
            batch_normalization_renorm=batch_normalization_renorm,
            batch_normalization_renorm_clipping=batch_normalization_renorm_clipping,
            batch_normalization_renorm_momentum=batch_normalization_renorm_momentum,
        )
        self.balance_loss_weight = validation.non_negative_float(
            "balance_loss_weight", balance_loss_weight
        )
        self.temperature = validation.positive_float("temperature", temperature)
        self.return_gates = validation.boolean("return_gates", return_gates)
        self.seed = validation.seed("seed", seed)
        # Other args.
        self._input_dims: tuple[int | None, int | None] = (None, None)  # `build`
        self.seed_generator = keras.random.SeedGenerator(seed)
        # A single activation per expert: hidden layers use it, the last layer
        # is linear (MLP rule); `None` means linear (Keras `activations.get`).
        # A per-layer list is used as it is.
        mlp_acts = [_mlp_activations(a) for a in self.expert_activations]
        # Sub-layers are created here so their names (weight paths) are stable.
        self.stacked = _all_equal(
            [json.dumps(d) for d in self.expert_output_dims]
        ) and _all_equal(
            [json.dumps(a, sort_keys=True) for a in self.expert_activations]
        )
        if self.stacked:
            self.experts = StackedMLP(
                self.num_experts,
                self.expert_output_dims[0],
                activations=mlp_acts[0],
                initializers=self.expert_initializers,
                options=self.mlp_options,
                dtype=self.dtype_policy,
                name="experts",
            )
        else:
            self.experts = [
                MLP(
                    self.expert_output_dims[e],
                    activations=mlp_acts[e],
                    initializers=self.expert_initializers[e],
                    name=f"expert_{e}",
                    dtype=self.dtype_policy,
                    **self.mlp_options.kwargs(),
                )
                for e in range(self.num_experts)
            ]

    @property
    def output_dim(self) -> int:
        return self.expert_output_dims[0][-1]

    def _split_shapes(self, input_shape: Any) -> tuple[Any, Any]:
        if (
            isinstance(input_shape, (list, tuple))
            and input_shape
            and isinstance(input_shape[0], (list, tuple))
        ):
            if len(input_shape) != 2:
                raise ValueError(
                    "`MMoE` takes one input or a list `[expert_input, gate_input]`. "
                    f"Received: {len(input_shape)} inputs"
                )
            return tuple(input_shape[0]), tuple(input_shape[1])
        return tuple(input_shape), tuple(input_shape)

    def build(self, input_shape: Any) -> None:
        expert_shape, gate_shape = self._split_shapes(input_shape)
        for name, shape in (("expert_input", expert_shape), ("gate_input", gate_shape)):
            if len(shape) != 2 or shape[-1] is None:
                raise ValueError(
                    f"`MMoE` expects a rank-2 `{name}` with a static last "
                    f"dimension. Received: {name} shape={shape}"
                )
        gate_in = gate_shape[-1]
        self._input_dims = (expert_shape[-1], gate_in)
        gate_units = self.num_tasks * self.num_experts
        self.gate_weight = self.add_weight(
            name="gate_weight",
            shape=(gate_in, gate_units),
            initializer="zeros",
        )
        if self.gate_type == "noise_topk":
            self.gate_noise = self.add_weight(
                name="gate_noise",
                shape=(gate_in, gate_units),
                initializer="glorot_normal",
            )
        if self.stacked:
            self.experts.build(expert_shape)
        else:
            for expert in self.experts:
                expert.build(expert_shape)

    def compute_gates(self, gate_input: Any, training: bool | None = None) -> Any:
        """Gates `[B, T, E]` in float32 (see the class docstring)."""
        z = ops.cast(gate_input, "float32")
        logits = ops.matmul(z, ops.cast(self.gate_weight, "float32"))
        if self.gate_type == "noise_topk" and training:
            scale = ops.softplus(ops.matmul(z, ops.cast(self.gate_noise, "float32")))
            noise = keras.random.normal(
                ops.shape(logits), dtype="float32", seed=self.seed_generator
            )
            logits = logits + noise * scale
        logits = ops.reshape(logits, (-1, self.num_tasks, self.num_experts))
        if self.temperature != 1.0:
            logits = logits / self.temperature
        gates = ops.softmax(logits, axis=-1)
        if self.gate_type != "softmax":
            gates = gating.top_k_renormalize(gates, self.top_k)
        return gates

    def balance_loss(self, gates: Any) -> Any:
        """`balance_loss_weight * sum_t cv2(sum_b gates[b, t, :])`."""
        importance = ops.sum(gates, axis=0)  # [T, E]
        return self.balance_loss_weight * ops.sum(numerics.cv_squared(importance))

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if isinstance(inputs, (list, tuple)):
            expert_input, gate_input = validation.input_count(self, inputs, 2)
        else:
            expert_input = gate_input = inputs
        self._check_shapes(expert_input.shape, gate_input.shape)
        expert_input = ops.cast(expert_input, self.compute_dtype)
        gate_input = ops.cast(gate_input, self.compute_dtype)
        # Expert-major [E, B, D]: the stacked experts' batched matmuls produce
        # it, and mixing from it skips a transpose of the expert outputs (and
        # of their gradient): MMoE step (B=2048, D=512, E=8, [256, 128]) on
        # JAX 159 -> 154 ms.
        if self.stacked:
            expert_outputs = self.experts(
                expert_input, training=training, expert_major=True
            )
        else:
            expert_outputs = ops.stack(
                [e(expert_input, training=training) for e in self.experts], axis=0
            )
        gates = self.compute_gates(gate_input, training=training)
        if self.gate_type != "softmax":
            self.add_loss(self.balance_loss(gates))
        gates = ops.cast(gates, expert_outputs.dtype)
        mixed = ops.einsum("bte,ebd->btd", gates, expert_outputs)
        outputs = [mixed[:, t, :] for t in range(self.num_tasks)]
        if self.return_gates:
            outputs.append(gates)
        return outputs

    def _check_shapes(self, expert_shape: Any, gate_shape: Any) -> None:
        check_expert_input(self, "expert_input", expert_shape, self._input_dims[0])
        check_expert_input(self, "gate_input", gate_shape, self._input_dims[1])
        a, b = expert_shape[0], gate_shape[0]
        if a is not None and b is not None and a != b:
            raise ValueError(
                f"`MMoE` (layer '{self.name}') expects `expert_input` and "
                "`gate_input` with the same batch size. Received: shapes "
                f"{tuple(expert_shape)} and {tuple(gate_shape)}"
            )

    def compute_output_shape(self, input_shape: Any) -> Any:
        expert_shape, gate_shape = self._split_shapes(input_shape)
        self._check_shapes(expert_shape, gate_shape)  # Symbolic calls skip `call`.
        batch = expert_shape[0]
        shapes = [(batch, self.output_dim) for _ in range(self.num_tasks)]
        if self.return_gates:
            shapes.append((batch, self.num_tasks, self.num_experts))
        return shapes

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_tasks": self.num_tasks,
                "expert_output_dims": [list(d) for d in self.expert_output_dims],
                "expert_activations": list(self.expert_activations),
                "expert_initializers": [
                    keras.initializers.serialize(i) for i in self.expert_initializers
                ],
                "gate_type": self.gate_type,
                "top_k": self.top_k,
                "num_experts": self.num_experts,
                **self.mlp_options.config(),
                "balance_loss_weight": self.balance_loss_weight,
                "temperature": self.temperature,
                "return_gates": self.return_gates,
                "seed": self.seed,
            }
        )
        return config


def _all_equal(items: list[Any]) -> bool:
    return all(item == items[0] for item in items)


def _is_list_of_lists(dims: Any) -> bool:
    return (
        isinstance(dims, (list, tuple))
        and len(dims) > 0
        and all(isinstance(d, (list, tuple)) for d in dims)
    )


def _infer_num_experts(
    num_experts: Any,
    dims: Any,
    acts: Any,
    inits: Any,
    per_expert_dims: bool,
) -> int:
    if num_experts is not None:
        num_experts = validation.positive_int("num_experts", num_experts)
        if per_expert_dims and len(dims) != num_experts:
            raise ValueError(
                "`expert_output_dims` given per expert must have `num_experts` "
                f"entries. Received: {len(dims)} expert_output_dims with "
                f"num_experts={num_experts}"
            )
        return num_experts
    if per_expert_dims:
        return len(dims)
    if isinstance(acts, (list, tuple)):
        return validation.positive_int("len(expert_activations)", len(acts))
    if isinstance(inits, (list, tuple)):
        return validation.positive_int("len(expert_initializers)", len(inits))
    raise ValueError(
        "`num_experts` is None and cannot be inferred: pass it, or give "
        "`expert_output_dims` as a list of lists or `expert_activations` / "
        "`expert_initializers` as lists. Received: num_experts=None with "
        f"expert_output_dims={dims!r}, expert_activations={acts!r}, "
        f"expert_initializers={inits!r}"
    )


def _resolve_dims(dims: Any, num_experts: int, per_expert: bool) -> list[list[int]]:
    if not per_expert:
        return [
            validation.positive_int_or_list("expert_output_dims", dims)
        ] * num_experts
    resolved = [validation.positive_int_or_list("expert_output_dims", d) for d in dims]
    if not _all_equal([d[-1] for d in resolved]):
        raise ValueError(
            "Every expert must end with the same output dimension. "
            f"Received: expert_output_dims={[list(d) for d in dims]!r}"
        )
    return resolved


def _expert_activation(value: Any, dims: list[int]) -> Any:
    """One expert's activation, checked and serializable: `None`, a name or
    dict, or a list with one of those per layer of the expert."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(dims):
            raise ValueError(
                "An entry of `expert_activations` given as a list needs one "
                f"activation per expert layer. Received: {list(value)!r} for "
                f"expert_output_dims={dims}"
            )
        return [_expert_activation(a, [1]) for a in value]
    activations.get_named("expert_activations", value)  # Fails early.
    return (
        value
        if value is None or isinstance(value, str)
        else (activations.serialize(value))
    )


def _mlp_activations(value: Any) -> Any:
    """`MLP`'s `activations` for one expert (`None` is linear here)."""
    if isinstance(value, list):
        return ["linear" if a is None else activations.get(a) for a in value]
    return "linear" if value is None else activations.get(value)


def _per_expert(name: str, value: Any, num_experts: int) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != num_experts:
            raise ValueError(
                f"`{name}` given as a list needs one entry per expert. "
                f"Received: {len(value)} {name} with num_experts={num_experts}"
            )
        return list(value)
    return [value] * num_experts
