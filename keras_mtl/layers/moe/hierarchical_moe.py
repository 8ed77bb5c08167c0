"""Two-level hierarchical mixture of experts (Mesh-TensorFlow MoE v2)."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import experts
from keras_mtl import numerics
from keras_mtl import routing
from keras_mtl import validation
from keras_mtl.backend import grouped
from keras_mtl.layers.moe._base import TokenMixture

POLICIES = ("all", "none", "threshold", "random")
DISPATCHERS = ("auto", "index", "grouped", "einsum")


@keras.saving.register_keras_serializable(package="keras_mtl")
class HierarchicalMoE(TokenMixture):
    """Two-level mixture of `X × Y` experts with top-2 gating at both levels.

    The layer of Mesh-TensorFlow `transformer_moe_layer_v2` (Shazeer et al.,
    2017, §B "hierarchical MoE"). Tokens are split into `G1` groups of `S`
    (Mesh-TF `_split_into_groups`: the fewest groups of at most `group_size`
    tokens that divide the token count). A top-2 gate `softmax(x @ W_outer)`
    sends each token to up to two of the `X` outer expert groups, with
    capacity `C = max(min(S, int(S * cf / X)), min_capacity)` per group. Each
    outer group `x` then treats its `G1 * C` slots as tokens, regrouped into
    `G2` groups of `t`, and routes them with its own top-2 gate
    `softmax(v @ W_inner[x])` to its `Y` experts, capacity
    `D = max(min(t, int(t * cf2 / Y)), min_capacity)`. The second level
    receives each slot's importance: 1 for a first-choice slot, 0.5 for a
    second-choice slot, 0 for an empty slot; a 0.5 slot is routed only to
    its best inner expert, with weight 1. Expert `(x, y)` is
    `act(v @ K_in[x, y] + b_in) @ K_out[x, y] + b_out`. Outputs are combined
    inner, then outer. Every token reaches 0 to 3 experts.

    Top-2 gating, per level (all float32; Mesh-TensorFlow's `_top_2_gating`):
    `g1, i1` the best expert, `g2, i2` the best of the rest, `g1, g2`
    normalized by `g1 + g2 + 1e-9`; the second choice is kept per the policy
    (`"all"`, `"none"`, `"threshold"`: `g2 > t`, `"random"`: `u < g2 / t` with
    `u ~ U(0, 1)`), separately for training and inference; first choices take
    capacity before second choices; gates are not renormalized after drops.
    Balance loss per level: `E^2 * mean(mean_S(m1) * mean_S(p))`.
    `(loss_outer + loss_inner) * loss_coef` is added with `add_loss` on every
    call.

    Args:
        num_experts: a pair of ints `(X, Y)`, each >= 2: outer groups and
            experts per group.
        expert_hidden_units: int. Hidden width `H` of every expert.
        output_dim: int or `None`. Output width; `None` keeps the input
            width. Defaults to `None`.
        group_size: int. Largest group size at both levels (Mesh-TF
            `moe_group_size`). Defaults to `1024`.
        capacity_factor: float > 0. First-level factor in training.
            Defaults to `1.25`.
        eval_capacity_factor: float > 0. First-level factor at inference.
            Defaults to `2.0`.
        second_level_capacity_factor: float > 0. Defaults to `1.0`.
        min_capacity: int >= 1. Defaults to `4`.
        second_policy_train: second-expert policy in training. Defaults to
            `"random"`.
        second_policy_eval: second-expert policy at inference. Defaults to
            `"random"` (Mesh-TF's default; it makes inference stochastic, so
            `"threshold"` or `"all"` are the usual choices for serving).
        second_threshold_train: float >= 0. Defaults to `0.2`.
        second_threshold_eval: float >= 0. Defaults to `0.2`.
        loss_coef: float >= 0. Defaults to `1e-2`.
        dispatcher: `"index"` (gather/scatter into capacity buffers),
            `"grouped"` (the second level's kept slots sorted by expert into
            rows with no capacity padding, the `X * Y` experts as grouped
            matmuls; see `SparseMoE`), `"einsum"` (one-hot dispatch/combine
            tensors) or `"auto"`: `"grouped"` where the backend's native
            grouped matmul is fast for the device and dtype, else
            `"index"`. Identical results. Defaults to `"auto"`.
        activation: expert hidden activation (a function). Defaults to
            `"relu"`.
        use_bias: bool. Expert biases (Mesh-TF has none). Defaults to `False`.
        kernel_initializer: expert kernels. Defaults to `"glorot_uniform"`.
        bias_initializer: expert biases. Defaults to `"zeros"`.
        router_initializer: gate kernels. Defaults to `"glorot_uniform"`.
        seed: int or `None`. Seed of the `"random"` policy. Defaults to
            `None`.
        **kwargs: Args to pass to the base class.

    Call args:
        inputs: `[..., d]` with a static token count (integer inputs are cast
            to the compute dtype).
        mask: optional `inputs.shape[:-1]`, true (numeric: `>= 1`) for real
            tokens (Mesh-TF `nonpadding`). Padded tokens are routed nowhere
            and output 0; their values are selected away, so a NaN there goes
            nowhere.
        training: bool.
        outer_uniforms: optional `[T]` uniforms for the first-level
            `"random"` policy (tokens in input order).
        inner_uniforms: optional `[X, G1 * C]` uniforms for the second level
            (the slots of each outer group, group-major).

    Input shape: `(..., d)`. Output shape: `(..., output_dim)`.

    Weights: `outer_gate_kernel` `[d, X]`, `inner_gate_kernel` `[X, d, Y]`,
    `expert_kernel_in` `[X, Y, d, H]`, `expert_kernel_out` `[X, Y, H, N]`,
    and with `use_bias` `expert_bias_in` `[X, Y, H]`, `expert_bias_out`
    `[X, Y, N]`. Mesh-TF stores `wi` as `[Y, X, d, H]`: transpose the first
    two axes to load its checkpoints.

    Example:

    ```python
    moe = keras_mtl.layers.HierarchicalMoE(num_experts=(4, 4),
                                           expert_hidden_units=64,
                                           second_policy_eval="all")
    y = moe(np.random.rand(8, 64, 32))  # (8, 64, 32)
    ```

    References:
        Shazeer et al., Outrageously Large Neural Networks: The
        Sparsely-Gated Mixture-of-Experts Layer, 2017 (arXiv:1701.06538).
        Mesh TensorFlow, `mesh_tensorflow/transformer/moe.py`
        (`transformer_moe_layer_v2`, `_top_2_gating`).
    """

    def __init__(
        self,
        num_experts: tuple[int, int] | list[int],
        expert_hidden_units: int,
        output_dim: int | None = None,
        group_size: int = 1024,
        capacity_factor: float = 1.25,
        eval_capacity_factor: float = 2.0,
        second_level_capacity_factor: float = 1.0,
        min_capacity: int = 4,
        second_policy_train: str = "random",
        second_policy_eval: str = "random",
        second_threshold_train: float = 0.2,
        second_threshold_eval: float = 0.2,
        loss_coef: float = 1e-2,
        dispatcher: str = "auto",
        activation: str | Any = "relu",
        use_bias: bool = False,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        router_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (
            not isinstance(num_experts, (list, tuple))
            or len(num_experts) != 2
            or any(
                isinstance(n, bool) or not isinstance(n, int) or n < 2
                for n in num_experts
            )
        ):
            raise ValueError(
                "`num_experts` must be a pair of ints >= 2 (outer groups, "
                f"experts per group). Received: num_experts={num_experts!r}"
            )
        self.num_experts = (int(num_experts[0]), int(num_experts[1]))
        self.expert_hidden_units = validation.positive_int(
            "expert_hidden_units", expert_hidden_units
        )
        self.output_dim = validation.optional_positive_int("output_dim", output_dim)
        self.group_size = validation.positive_int("group_size", group_size)
        self.capacity_factor = validation.positive_float(
            "capacity_factor", capacity_factor
        )
        self.eval_capacity_factor = validation.positive_float(
            "eval_capacity_factor", eval_capacity_factor
        )
        self.second_level_capacity_factor = validation.positive_float(
            "second_level_capacity_factor", second_level_capacity_factor
        )
        self.min_capacity = validation.positive_int("min_capacity", min_capacity)
        self.second_policy_train = validation.one_of(
            "second_policy_train", second_policy_train, POLICIES
        )
        self.second_policy_eval = validation.one_of(
            "second_policy_eval", second_policy_eval, POLICIES
        )
        self.second_threshold_train = validation.in_range(
            "second_threshold_train", second_threshold_train, 0.0, math.inf
        )
        self.second_threshold_eval = validation.in_range(
            "second_threshold_eval", second_threshold_eval, 0.0, math.inf
        )
        self.loss_coef = validation.in_range("loss_coef", loss_coef, 0.0, math.inf)
        self.dispatcher = validation.one_of("dispatcher", dispatcher, DISPATCHERS)
        self.activation = activations.get_function("activation", activation)
        self.use_bias = validation.boolean("use_bias", use_bias)
        self.kernel_initializer = validation.initializer(
            "kernel_initializer", kernel_initializer
        )
        self.bias_initializer = validation.initializer(
            "bias_initializer", bias_initializer
        )
        self.router_initializer = validation.initializer(
            "router_initializer", router_initializer
        )
        self.seed = validation.seed("seed", seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def build(self, input_shape: Any) -> None:
        d = self.input_dim = self._feature_dim(input_shape)
        n = self.output_dim or d
        x, y = self.num_experts
        h = self.expert_hidden_units
        self.outer_gate_kernel = self.add_weight(
            name="outer_gate_kernel", shape=(d, x), initializer=self.router_initializer
        )
        self.inner_gate_kernel = self.add_weight(
            name="inner_gate_kernel",
            shape=(x, d, y),
            initializer=self.router_initializer,
        )
        self.expert_kernel_in = self.add_weight(
            name="expert_kernel_in",
            shape=(x, y, d, h),
            initializer=self.kernel_initializer,
        )
        self.expert_kernel_out = self.add_weight(
            name="expert_kernel_out",
            shape=(x, y, h, n),
            initializer=self.kernel_initializer,
        )
        if self.use_bias:
            self.expert_bias_in = self.add_weight(
                name="expert_bias_in",
                shape=(x, y, h),
                initializer=self.bias_initializer,
            )
            self.expert_bias_out = self.add_weight(
                name="expert_bias_out",
                shape=(x, y, n),
                initializer=self.bias_initializer,
            )

    def layout(self, num_tokens: int, training: bool = False) -> dict[str, int]:
        """Groups and capacities for `num_tokens` tokens: `G1, S, C, G2, t, D`."""
        x, y = self.num_experts
        g1, s = routing.split_into_groups(num_tokens, self.group_size)
        cf = self.capacity_factor if training else self.eval_capacity_factor
        c = routing.mtf_capacity(s, x, cf, self.min_capacity)
        g2, t = routing.split_into_groups(g1 * c, self.group_size)
        d = routing.mtf_capacity(
            t, y, self.second_level_capacity_factor, self.min_capacity
        )
        return {"G1": g1, "S": s, "C": c, "G2": g2, "t": t, "D": d}

    def _uniforms(self, given: Any, shape: tuple[int, ...], policy: str) -> Any:
        if policy != "random":
            return None
        if given is not None:
            return ops.reshape(ops.cast(given, "float32"), shape)
        return keras.random.uniform(shape, dtype="float32", seed=self.seed_generator)

    def _experts(self, v: Any, rows: Any | None) -> Any:
        """The `X * Y` expert MLPs (flattened, `experts.mlp`) on dispatched
        rows: `[X * Y, M, d]`, or `[M, d]` sorted by expert with `rows`."""
        e = self.num_experts[0] * self.num_experts[1]

        def flat(w: Any) -> Any:
            return ops.reshape(w, (e, *w.shape[2:]))

        kernels = [flat(self.expert_kernel_in), flat(self.expert_kernel_out)]
        biases = None
        if self.use_bias:
            biases = [flat(self.expert_bias_in), flat(self.expert_bias_out)]
        return experts.mlp(v, kernels, biases, [self.activation, None], rows)

    def resolve_dispatcher(self, x: Any) -> str:
        """The dispatcher a call on tokens `x` uses (see `dispatcher`)."""
        if self.dispatcher != "auto":
            return self.dispatcher
        num_x, num_y = self.num_experts
        d, h = self.input_dim, self.expert_hidden_units
        n = self.output_dim or d
        fast = grouped.native_is_fast(
            x, (num_x * num_y, d, h)
        ) and grouped.native_is_fast(x, (num_x * num_y, h, n))
        return "grouped" if fast else "index"

    # -- call: route -> dispatch -> experts -> combine -> losses -----------------

    def call(
        self,
        inputs: Any,
        mask: Any | None = None,
        training: bool | None = None,
        outer_uniforms: Any | None = None,
        inner_uniforms: Any | None = None,
    ) -> Any:
        training = bool(training)
        num_x, num_y = self.num_experts
        d = self.input_dim
        n_out = self.output_dim or d
        lead = inputs.shape[:-1]
        if any(s is None for s in lead):
            raise ValueError(
                "`HierarchicalMoE` needs a static token count (its groups and "
                "capacities are derived from it, as in Mesh-TF). Received: "
                f"input shape {tuple(inputs.shape)}"
            )
        num_tokens = int(math.prod(lead))
        validation.last_dim(self, "inputs", inputs.shape, d)
        if mask is not None:
            validation.same_shape(self, "mask", mask.shape, lead)
        inputs = validation.float_tensor(inputs, self.compute_dtype)
        x = ops.reshape(inputs, (num_tokens, d))
        if num_tokens == 0:
            # No tokens, no groups: an empty output and a zero loss.
            self.add_loss(ops.zeros((), dtype="float32"))
            return ops.reshape(ops.zeros((0, n_out), dtype=x.dtype), (*lead, n_out))
        sizes = self.layout(num_tokens, training)
        g1, s, c, g2, t, cap2 = (sizes[k] for k in ("G1", "S", "C", "G2", "t", "D"))
        policy = self.second_policy_train if training else self.second_policy_eval
        threshold = (
            self.second_threshold_train if training else self.second_threshold_eval
        )
        if mask is None:
            importance = ops.ones((g1, s), dtype="float32")
        else:
            # Real where `>= 1` (`numerics.real_mask`; importance 1). Padded
            # values are selected away, so a NaN there reaches neither the
            # gates nor the loss.
            real = numerics.real_mask(ops.reshape(mask, (num_tokens,)))
            x = ops.where(ops.expand_dims(real, -1), x, ops.zeros_like(x))
            importance = ops.reshape(ops.cast(real, "float32"), (g1, s))
        dispatcher = self.resolve_dispatcher(x)

        # Level 1: tokens -> outer groups (capacity buffer [X * G1 * C, d]).
        outer = routing.top2_gating(
            ops.matmul(
                ops.cast(ops.reshape(x, (g1, s, d)), "float32"),
                ops.cast(self.outer_gate_kernel, "float32"),
            ),
            c,
            importance,
            policy,
            threshold,
            self._uniforms(outer_uniforms, (g1, s), policy),
        )
        slots1 = ops.reshape(
            routing.slot_ids(
                outer["experts"], outer["positions"], outer["keep"], g1, c
            ),
            (-1, 2),
        )
        gates1 = ops.cast(ops.reshape(outer["gates"], (-1, 2)), x.dtype)
        if dispatcher == "einsum":
            dispatch1, combine1 = routing.one_hot_dispatch_combine(
                outer["experts"],
                outer["positions"],
                outer["keep"],
                outer["gates"],
                num_x,
                c,
            )
            buffer1 = ops.einsum(
                "gsxc,gsd->xgcd",
                ops.cast(dispatch1, x.dtype),
                ops.reshape(x, (g1, s, d)),
            )
        else:
            buffer1 = routing.index_dispatch(x, slots1, num_x * g1 * c)

        # Level 2: each outer group's slots -> its inner experts. A slot's
        # importance: 1 (first choice), 0.5 (second), 0 (empty).
        slot_gate = routing.scatter_to_slots(
            ops.reshape(outer["gates"], (-1, 2)), slots1, num_x * g1 * c
        )
        slot_importance = 0.5 * (
            ops.cast(slot_gate > 0.5, "float32") + ops.cast(slot_gate > 0.0, "float32")
        )
        v = ops.reshape(buffer1, (num_x, g2, t, d))
        inner = routing.top2_gating(
            ops.reshape(
                ops.einsum(
                    "xgtd,xdy->xgty",
                    ops.cast(v, "float32"),
                    ops.cast(self.inner_gate_kernel, "float32"),
                ),
                (num_x * g2, t, num_y),
            ),
            cap2,
            ops.reshape(slot_importance, (num_x * g2, t)),
            policy,
            threshold,
            self._uniforms(inner_uniforms, (num_x * g2, t), policy),
        )
        if dispatcher == "einsum":
            z = self._inner_einsum(v, inner, g2, t, cap2, x.dtype)
            y = ops.einsum(
                "gsxc,xgcn->gsn",
                ops.cast(combine1, x.dtype),
                ops.reshape(z, (num_x, g1, c, n_out)),
            )
        else:
            z = self._inner_gathered(v, inner, g2, cap2, dispatcher, x.dtype)
            y = routing.index_combine(z, slots1, gates1)
        self.add_loss((outer["loss"] + inner["loss"]) * self.loss_coef)
        return ops.reshape(y, (*lead, n_out))

    def _inner_gathered(
        self,
        v: Any,
        inner: dict[str, Any],
        g2: int,
        cap2: int,
        dispatcher: str,
        dtype: str,
    ) -> Any:
        """Second level with the index or grouped dispatcher: `[X*G2*t, n]`.

        Inner group `i` belongs to outer expert `x = i // G2` and is its
        `h = i % G2`-th group; its choice `y` is global expert `x * Y + y`,
        whose rows are laid out expert-major, then by `h` (as `slot_ids`).
        """
        num_x, num_y = self.num_experts
        d = v.shape[-1]
        outer_of_group = ops.reshape(
            ops.repeat(ops.arange(0, num_x, dtype="int32"), g2, axis=0), (-1, 1, 1)
        )
        global_expert = outer_of_group * num_y + inner["experts"]
        tokens = ops.reshape(v, (-1, d))
        gates2 = ops.cast(ops.reshape(inner["gates"], (-1, 2)), dtype)
        if dispatcher == "grouped":
            none = routing.fill_like(global_expert, -1)
            chosen = ops.where(inner["keep"], global_expert, none)
            kept = ops.sum(
                routing.one_hot(chosen, num_x * num_y, "int32"), axis=(1, 2)
            )  # [X * G2, X * Y]
            slots2, sizes2 = routing.packed_slot_ids(
                global_expert,
                inner["positions"],
                inner["keep"],
                kept,
                num_x * g2,
            )
            slots2 = ops.reshape(slots2, (-1, 2))
            num_rows = ops.shape(slots2)[0] * 2
            buffer2 = routing.index_dispatch(tokens, slots2, num_rows)
            out2 = self._experts(buffer2, routing.grouped_rows(sizes2, num_rows))
            return routing.index_combine(out2, slots2, gates2)
        group_in_outer = ops.reshape(
            ops.tile(ops.arange(0, g2, dtype="int32"), (num_x,)), (-1, 1, 1)
        )
        slots2 = (global_expert * g2 + group_in_outer) * cap2 + inner["positions"]
        slots2 = ops.where(inner["keep"], slots2, routing.fill_like(slots2, -1))
        slots2 = ops.reshape(slots2, (-1, 2))
        n2 = num_x * num_y * g2 * cap2
        buffer2 = routing.index_dispatch(tokens, slots2, n2)
        out2 = self._experts(ops.reshape(buffer2, (num_x * num_y, g2 * cap2, d)), None)
        out2 = ops.reshape(out2, (n2, out2.shape[-1]))
        return routing.index_combine(out2, slots2, gates2)

    def _inner_einsum(
        self, v: Any, inner: dict[str, Any], g2: int, t: int, cap2: int, dtype: str
    ) -> Any:
        """Second level with one-hot dispatch/combine tensors: `[X, G2*t, n]`."""
        num_x, num_y = self.num_experts
        d = v.shape[-1]
        dispatch2, combine2 = routing.one_hot_dispatch_combine(
            inner["experts"],
            inner["positions"],
            inner["keep"],
            inner["gates"],
            num_y,
            cap2,
        )
        shape2 = (num_x, g2, t, num_y, cap2)
        buffer2 = ops.einsum(
            "xhtyd,xhtm->xyhdm",
            ops.cast(ops.reshape(dispatch2, shape2), dtype),
            v,
        )
        out2 = self._experts(ops.reshape(buffer2, (num_x * num_y, g2 * cap2, d)), None)
        n_out = out2.shape[-1]
        out2 = ops.reshape(out2, (num_x, num_y, g2, cap2, n_out))
        return ops.einsum(
            "xhtyd,xyhdn->xhtn", ops.cast(ops.reshape(combine2, shape2), dtype), out2
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_experts": list(self.num_experts),
                "expert_hidden_units": self.expert_hidden_units,
                "output_dim": self.output_dim,
                "group_size": self.group_size,
                "capacity_factor": self.capacity_factor,
                "eval_capacity_factor": self.eval_capacity_factor,
                "second_level_capacity_factor": self.second_level_capacity_factor,
                "min_capacity": self.min_capacity,
                "second_policy_train": self.second_policy_train,
                "second_policy_eval": self.second_policy_eval,
                "second_threshold_train": self.second_threshold_train,
                "second_threshold_eval": self.second_threshold_eval,
                "loss_coef": self.loss_coef,
                "dispatcher": self.dispatcher,
                "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "router_initializer": keras.initializers.serialize(
                    self.router_initializer
                ),
                "seed": self.seed,
            }
        )
        return config
