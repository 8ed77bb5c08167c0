"""Token-routed sparse mixture of experts with capacity (SparseMoE)."""

from __future__ import annotations

import math
from collections.abc import Sequence
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

GATE_TYPES = ("softmax", "noise_topk")
# Earlier spellings, still accepted (deprecated) so old configs load.
GATE_TYPE_ALIASES = {"noisy_topk": "noise_topk"}
DISPATCHERS = ("auto", "index", "grouped", "einsum", "dense")


@keras.saving.register_keras_serializable(package="keras_mtl")
class SparseMoE(TokenMixture):
    """Token-routed top-k mixture of experts where only chosen experts compute.

    Every token `x_t` (all leading axes of the input are flattened into
    tokens) is sent to the `k` experts with the largest router probabilities
    and the expert outputs are mixed by the gates (Shazeer et al., 2017;
    GShard; Switch):

    `p_t = softmax(x_t @ W_r)` (float32; noisy in training, see below)
    `(g_t, e_t) = top_k(p_t)`, `g_t /= sum(g_t)` if `normalize_gates`
    `y_t = sum_j keep_tj * g_tj * f_{e_tj}(x_t)`

    Each expert is an MLP `f_e` (`expert_hidden_units`, then a linear layer
    to `output_dim`) with weights stacked over experts. Tokens are split into
    groups of `group_size`; an expert takes at most
    `C = min(S, max(min_capacity, ceil(k * S * cf / E)))` assignments per
    group (`cf` = `capacity_factor` in training, `eval_capacity_factor`
    otherwise). Assignments are queued choice-major (every first choice in
    the group before any second choice, tokens in order); those at position
    `>= C` are dropped (`keep = 0`) and the gates are not renormalized, so a
    token whose assignments are all dropped outputs zeros (add a residual
    around the layer). Because `C` is a Python int, every shape is static
    under `jax.jit`, `tf.function(jit_compile=True)` and `torch.compile`,
    even when the batch size is unknown, as long as `group_size` is set.

    A factor of `None` is dropless (Megablocks; MaxText's default): every
    assignment is kept, whatever the routing. Shapes stay static, since the
    `T * k` assignments are a static count; only their split over the
    experts depends on the data.

    Dispatchers (all give the same results, drops included):

    - `"grouped"`: the kept assignments sorted by expert into `T * k` rows
      (no capacity padding; not-kept assignments compute on a zero row and
      are read with weight 0), each expert layer one grouped matmul:
      `torch._grouped_mm` on torch, `jax.lax.ragged_dot` on JAX GPUs and
      TPUs, elsewhere a `keras.ops` fallback that pads each expert's rows to
      blocks of about `T * k / E` rows (at most about twice the rows;
      `keras_mtl.backend.grouped`). Dropless, it routes all tokens as one
      group, so `group_size` is not needed.
    - `"index"`: an inverse slot map built with one `scatter_update`, `take`
      to fill the `[E, G*C, d]` expert buffer and `take` to combine. Cost
      `O(T*k*d)` plus the experts on `E*G*C ≈ k*cf*T` rows; dropless, each
      expert's buffer holds the whole group (`C = S`, `E / k` times the
      rows).
    - `"einsum"`: the GShard one-hot dispatch/combine tensors `[G, S, E, C]`
      (cost grows with the group size; the pattern SPMD partitioners like).
    - `"dense"`: every expert on every token, mixed by the same (dropped)
      combine weights; for tiny `E` or for checking.
    - `"auto"` (default), decided per call from the backend, the device and
      the dtype of the tokens: `"grouped"` where the native grouped matmul is
      fast (torch on the CPU; torch in bfloat16 on NVIDIA compute capability
      9.x/10.x; JAX on GPU and TPU; every expert width a multiple of 16 bytes
      for torch) and for dropless routing, `"index"` otherwise. The choice
      follows measurements (`bench/moe_results.md`): on the CPU, JAX's
      native `ragged_dot` ran at 1.8 GFLOP/s against 117 for a batched
      matmul of the same shape; torch's CUDA `_grouped_mm` outside bfloat16
      on 9.x/10.x loops over the experts with a host sync.

    Gates: `"softmax"`, or `"noise_topk"` (Shazeer et al., 2017): in training
    `route = logits + N(0, 1) * (softplus(x @ W_noise) + 1e-2)`. With
    `jitter_eps > 0` the router input is multiplied by `U[1-eps, 1+eps]` in
    training (Switch). Routing runs in float32 under mixed precision; the
    experts run in the compute dtype.

    One auxiliary loss is added with `add_loss` on every call when any
    coefficient is positive, over non-padded tokens only:
    `switch_loss_weight * E * sum_e f_e * P_e` (Switch/GShard; `f_e` the
    fraction of the `k*N` assignments routed to `e` before drops, `P_e` the
    mean probability; minimum 1),
    `+ importance_loss_weight * (cv2(importance) + cv2(load))` (Shazeer; the
    load is the smooth `P(in top k)` estimate for noisy gates in training,
    else the assignment counts), `+ z_loss_weight * mean(logsumexp(route)^2)`
    (ST-MoE).

    Routing statistics are kept in non-trainable float32 variables updated
    on every call: `expert_load` `[E]` (kept assignments per expert over
    `k*N`) and `dropped_fraction` (dropped assignments over `k*N`).

    Args:
        num_experts: int >= 1. Number of experts `E`.
        expert_hidden_units: int or list of int. Hidden widths of each expert
            MLP; `[]` gives linear experts.
        output_dim: int or `None`. Output width; `None` keeps the input width.
            Defaults to `None`.
        top_k: int in `[1, num_experts]`. Experts per token. Defaults to `2`.
        gate_type: `"softmax"` or `"noise_topk"` (the name `MMoE` uses;
            the earlier spelling `"noisy_topk"` is accepted, deprecated).
            Defaults to `"softmax"`.
        normalize_gates: bool. Renormalize the `k` gates to sum to 1.
            Defaults to `True`.
        capacity_factor: float > 0, or `None` for dropless routing. Capacity
            factor in training. Defaults to `1.25`.
        eval_capacity_factor: float > 0, or `None` for dropless routing.
            Capacity factor at inference. Defaults to `2.0`.
        min_capacity: int >= 1. Lower bound of the capacity. Defaults to `4`.
        group_size: int or `None`. Tokens per routing group; `None` routes all
            tokens of a call as one group (needs a static token count, except
            for dropless routing with the grouped dispatcher). Defaults to
            `None`.
        pad_to_group: bool. Pad the token count up to a multiple of
            `group_size` with masked tokens; if `False`, a token count that
            `group_size` does not divide raises. Defaults to `True`.
        dispatcher: `"auto"`, `"grouped"`, `"index"`, `"einsum"` or
            `"dense"` (see above). Defaults to `"auto"`.
        activation: activation between expert layers (a function; the last
            expert layer is linear). Defaults to `"relu"`.
        use_bias: bool. Expert biases. Defaults to `True`.
        jitter_eps: float in `[0, 1)`. Multiplicative router-input jitter in
            training. Defaults to `0.0`.
        switch_loss_weight: float >= 0. Coefficient of the Switch balance
            loss (named `balance_loss_weight` before; that name is accepted,
            deprecated, and is `MMoE`'s CV² loss coefficient). Defaults to
            `1e-2`.
        importance_loss_weight: float >= 0. Defaults to `0.0`.
        z_loss_weight: float >= 0. Defaults to `0.0`.
        kernel_initializer: expert kernels. Defaults to `"glorot_uniform"`.
        bias_initializer: expert biases. Defaults to `"zeros"`.
        router_initializer: router kernel. Defaults to `"glorot_uniform"`.
        noise_initializer: noise kernel (`"noise_topk"`). Defaults to
            `"zeros"`.
        seed: int or `None`. Seed of the router noise and jitter. Defaults to
            `None`.
        **kwargs: Args to pass to the base class.

    Call args:
        inputs: `[..., d]` (integer inputs are cast to the compute dtype).
        mask: optional `inputs.shape[:-1]`, true (numeric: `>= 1`) for real
            tokens. Padded tokens take no capacity, count in no loss and
            output 0; their values are selected away, so a NaN there goes
            nowhere.
        training: bool.
        router_noise: optional `inputs.shape[:-1] + (E,)` standard-normal
            draws used instead of sampling (reproducible noisy gates).

    Input shape: `(..., d)`. Output shape: `(..., output_dim)`.

    Weights: `router_kernel` `[d, E]`, `noise_kernel` `[d, E]`
    (`"noise_topk"`), `expert_kernel_{i}` `[E, d_i, d_{i+1}]` and
    `expert_bias_{i}` `[E, d_{i+1}]` with `d_0 = d`, the hidden units, then
    `output_dim`.

    Example:

    ```python
    moe = keras_mtl.layers.SparseMoE(num_experts=16, expert_hidden_units=64,
                                     top_k=2, group_size=256)
    y = moe(np.random.rand(8, 100, 32))  # (8, 100, 32)
    dropless = keras_mtl.layers.SparseMoE(num_experts=16, expert_hidden_units=64,
                                          capacity_factor=None,
                                          eval_capacity_factor=None)
    ```

    References:
        Shazeer et al., Outrageously Large Neural Networks: The
        Sparsely-Gated Mixture-of-Experts Layer, 2017 (arXiv:1701.06538).
        Lepikhin et al., GShard, 2020 (arXiv:2006.16668).
        Fedus et al., Switch Transformers, JMLR 2022 (arXiv:2101.03961).
        Zoph et al., ST-MoE, 2022 (arXiv:2202.08906).
        Gale et al., MegaBlocks: Efficient Sparse Training with
        Mixture-of-Experts, MLSys 2023 (arXiv:2211.15841).
    """

    def __init__(
        self,
        num_experts: int,
        expert_hidden_units: int | Sequence[int],
        output_dim: int | None = None,
        top_k: int = 2,
        gate_type: str = "softmax",
        normalize_gates: bool = True,
        capacity_factor: float | None = 1.25,
        eval_capacity_factor: float | None = 2.0,
        min_capacity: int = 4,
        group_size: int | None = None,
        pad_to_group: bool = True,
        dispatcher: str = "auto",
        activation: str | Any = "relu",
        use_bias: bool = True,
        jitter_eps: float = 0.0,
        switch_loss_weight: float = 1e-2,
        importance_loss_weight: float = 0.0,
        z_loss_weight: float = 0.0,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        router_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        noise_initializer: str | keras.initializers.Initializer = "zeros",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        # Errors name the argument as the caller spelled it.
        switch_name = (
            "balance_loss_weight"
            if "balance_loss_weight" in kwargs
            else "switch_loss_weight"
        )
        switch_loss_weight = validation.renamed(
            "SparseMoE",
            kwargs,
            "balance_loss_weight",
            "switch_loss_weight",
            switch_loss_weight,
            1e-2,
        )
        super().__init__(**kwargs)
        self.num_experts = validation.positive_int("num_experts", num_experts)
        # `[]` is meaningful here: linear experts.
        expert_hidden_units = validation.positive_int_or_list(
            "expert_hidden_units", expert_hidden_units, allow_empty=True
        )
        self.expert_hidden_units = list(expert_hidden_units)
        self.output_dim = validation.optional_positive_int("output_dim", output_dim)
        self.top_k = validation.positive_int("top_k", top_k)
        if self.top_k > self.num_experts:
            raise ValueError(
                "`top_k` must be at most `num_experts`. "
                f"Received: top_k={top_k} with num_experts={num_experts}"
            )
        self.gate_type = validation.choice(
            "SparseMoE", "gate_type", gate_type, GATE_TYPES, GATE_TYPE_ALIASES
        )
        if self.gate_type == "noise_topk" and self.top_k == self.num_experts:
            raise ValueError(
                "`gate_type='noise_topk'` needs `top_k < num_experts` (its load "
                "estimate compares with the (k+1)-th logit). "
                f"Received: top_k={top_k} with num_experts={num_experts}"
            )
        self.normalize_gates = validation.boolean("normalize_gates", normalize_gates)
        self.capacity_factor = _capacity_factor("capacity_factor", capacity_factor)
        self.eval_capacity_factor = _capacity_factor(
            "eval_capacity_factor", eval_capacity_factor
        )
        self.min_capacity = validation.positive_int("min_capacity", min_capacity)
        self.group_size = validation.optional_positive_int("group_size", group_size)
        self.pad_to_group = validation.boolean("pad_to_group", pad_to_group)
        self.dispatcher = validation.one_of("dispatcher", dispatcher, DISPATCHERS)
        self.activation = activations.get_function("activation", activation)
        self.use_bias = validation.boolean("use_bias", use_bias)
        self.jitter_eps = validation.in_range(
            "jitter_eps", jitter_eps, 0.0, 1.0, high_inclusive=False
        )
        self.switch_loss_weight = validation.non_negative_float(
            switch_name, switch_loss_weight
        )
        self.importance_loss_weight = validation.non_negative_float(
            "importance_loss_weight", importance_loss_weight
        )
        self.z_loss_weight = validation.non_negative_float(
            "z_loss_weight", z_loss_weight
        )
        self.kernel_initializer = validation.initializer(
            "kernel_initializer", kernel_initializer
        )
        self.bias_initializer = validation.initializer(
            "bias_initializer", bias_initializer
        )
        self.router_initializer = validation.initializer(
            "router_initializer", router_initializer
        )
        self.noise_initializer = validation.initializer(
            "noise_initializer", noise_initializer
        )
        self.seed = validation.seed("seed", seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def build(self, input_shape: Any) -> None:
        self.input_dim = self._feature_dim(input_shape)
        out_dim = self.output_dim or self.input_dim
        dims = [self.input_dim, *self.expert_hidden_units, out_dim]
        self.router_kernel = self.add_weight(
            name="router_kernel",
            shape=(self.input_dim, self.num_experts),
            initializer=self.router_initializer,
        )
        if self.gate_type == "noise_topk":
            self.noise_kernel = self.add_weight(
                name="noise_kernel",
                shape=(self.input_dim, self.num_experts),
                initializer=self.noise_initializer,
            )
        self.expert_kernels = []
        self.expert_biases = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            self.expert_kernels.append(
                self.add_weight(
                    name=f"expert_kernel_{i}",
                    shape=(self.num_experts, d_in, d_out),
                    initializer=self.kernel_initializer,
                )
            )
            if self.use_bias:
                self.expert_biases.append(
                    self.add_weight(
                        name=f"expert_bias_{i}",
                        shape=(self.num_experts, d_out),
                        initializer=self.bias_initializer,
                    )
                )
        self.expert_load = self.add_weight(
            name="expert_load",
            shape=(self.num_experts,),
            initializer="zeros",
            trainable=False,
            dtype="float32",
            # Under a mixed policy torch's autocast would hand `assign` a
            # cast copy and drop the write (as for BatchNorm statistics).
            autocast=False,
        )
        self.dropped_fraction = self.add_weight(
            name="dropped_fraction",
            shape=(),
            initializer="zeros",
            trainable=False,
            dtype="float32",
            # Under a mixed policy torch's autocast would hand `assign` a
            # cast copy and drop the write (as for BatchNorm statistics).
            autocast=False,
        )

    # -- sizes -------------------------------------------------------------------

    def capacity(self, group_size: int, training: bool = False) -> int:
        """Expert capacity per group for a group of `group_size` tokens (the
        whole group when the factor is `None`: nothing can be dropped)."""
        cf = self.capacity_factor if training else self.eval_capacity_factor
        if cf is None:
            return group_size
        return routing.expert_capacity(
            group_size, self.num_experts, self.top_k, cf, self.min_capacity
        )

    def dropless(self, training: bool = False) -> bool:
        """Whether every assignment is kept (capacity factor `None`)."""
        cf = self.capacity_factor if training else self.eval_capacity_factor
        return cf is None

    def resolve_dispatcher(self, x: Any, training: bool = False) -> str:
        """The dispatcher a call on tokens `x` uses (see `dispatcher`)."""
        if self.dispatcher != "auto":
            return self.dispatcher
        fast = all(
            grouped.native_is_fast(x, tuple(kernel.shape))
            for kernel in self.expert_kernels
        )
        return "grouped" if fast or self.dropless(training) else "index"

    def _group_layout(
        self, num_tokens: int | None, one_group: bool
    ) -> tuple[int | None, int | None, int]:
        """`(group_size, num_groups, pad)` for `num_tokens` tokens.

        `None` stands for a size known only at run time; `pad = -1` asks for
        padding computed at run time.
        """
        if one_group or self.group_size is None:
            if num_tokens is None and not one_group:
                raise ValueError(
                    "`SparseMoE` with `group_size=None` routes all tokens as one "
                    "group and needs a static token count to size the expert "
                    "capacity. Set `group_size` for inputs with an unknown batch "
                    "size. Received: a token count of None"
                )
            return num_tokens, 1, 0
        size = self.group_size
        if num_tokens is None:
            return size, None, -1
        pad = -num_tokens % size
        if pad and not self.pad_to_group:
            raise ValueError(
                "`group_size` must divide the token count when "
                f"`pad_to_group=False`. Received: group_size={size} with "
                f"{num_tokens} tokens"
            )
        return size, (num_tokens + pad) // size, pad

    # -- call: route -> dispatch -> experts -> combine -> losses -----------------

    def call(
        self,
        inputs: Any,
        mask: Any | None = None,
        training: bool | None = None,
        router_noise: Any | None = None,
    ) -> Any:
        training = bool(training)
        d = self.input_dim
        self._check_inputs(inputs, mask, router_noise)
        inputs = validation.float_tensor(inputs, self.compute_dtype)
        lead_shape = ops.shape(inputs)[:-1]
        static_tokens = _static_product(inputs.shape[:-1])
        out_dim = self.output_dim or d
        x = ops.reshape(inputs, (-1, d))
        if static_tokens == 0:
            return self._empty_call(x, lead_shape, out_dim)
        if mask is None:
            valid = ops.ones_like(x[:, 0], dtype="bool")
        else:
            # Real where `>= 1` (`numerics.real_mask`). Padded values are
            # selected away, not multiplied by 0: a NaN there must reach
            # neither the output nor the losses.
            valid = numerics.real_mask(ops.reshape(mask, (-1,)))
            x = ops.where(ops.expand_dims(valid, -1), x, ops.zeros_like(x))
        noise = None
        if router_noise is not None:
            noise = ops.reshape(router_noise, (-1, self.num_experts))
        dispatcher = self.resolve_dispatcher(x, training)
        # Without a capacity the grouped dispatcher needs no groups at all.
        one_group = dispatcher == "grouped" and self.dropless(training)
        group_size, num_groups, pad = self._group_layout(static_tokens, one_group)
        if pad == -1:  # unknown token count (TF graph): pad at run time.
            pad = (-ops.shape(x)[0]) % group_size
        num_tokens = ops.shape(x)[0]
        if not isinstance(pad, int) or pad:
            x, valid, noise = _pad_tokens(pad, x, valid, noise)

        router = self._route(x, valid, training, noise)
        route = self._assign(router, valid, group_size, num_groups, training, x.dtype)
        self._update_statistics(router["onehot"], route, valid)
        self._add_losses(router, valid)
        y = routing.DISPATCHERS[dispatcher](x, route, self._experts)
        y = y[:num_tokens]
        return ops.reshape(y, (*lead_shape, y.shape[-1]))

    def _check_inputs(self, inputs: Any, mask: Any, router_noise: Any) -> None:
        validation.last_dim(self, "inputs", inputs.shape, self.input_dim)
        lead = tuple(inputs.shape[:-1])
        if mask is not None:
            validation.same_shape(self, "mask", mask.shape, lead)
        if router_noise is not None:
            validation.same_shape(
                self, "router_noise", router_noise.shape, (*lead, self.num_experts)
            )

    def _route(
        self, x: Any, valid: Any, training: bool, noise: Any | None
    ) -> dict[str, Any]:
        """Router logits, probabilities and the top-k choice, in float32."""
        xr = ops.cast(x, "float32")
        if training and self.jitter_eps > 0:
            xr = xr * keras.random.uniform(
                ops.shape(xr),
                minval=1.0 - self.jitter_eps,
                maxval=1.0 + self.jitter_eps,
                seed=self.seed_generator,
            )
        logits = ops.matmul(xr, ops.cast(self.router_kernel, "float32"))
        route = logits
        stddev = None
        noisy = self.gate_type == "noise_topk" and training
        if noisy:
            stddev = (
                ops.softplus(ops.matmul(xr, ops.cast(self.noise_kernel, "float32")))
                + 1e-2
            )
            if noise is None:
                noise = keras.random.normal(
                    ops.shape(logits), dtype="float32", seed=self.seed_generator
                )
            route = logits + ops.cast(noise, "float32") * stddev
        probs = ops.softmax(route, axis=-1)
        gates, chosen = routing.top_k_gates(probs, self.top_k, self.normalize_gates)
        return {
            # [T, k, E], for the statistics and the losses.
            "onehot": routing.one_hot(chosen, self.num_experts, "float32"),
            "logits": logits,
            "route": route,
            "stddev": stddev,
            "noisy": noisy,
            "probs": probs,
            "gates": gates,
            "chosen": chosen,
        }

    def _assign(
        self,
        router: dict[str, Any],
        valid: Any,
        group_size: int | None,
        num_groups: int | None,
        training: bool,
        compute_dtype: str,
    ) -> routing.Route:
        """Queue positions per group and capacity: which assignments stay."""
        k, num_experts = self.top_k, self.num_experts
        groups = -1 if num_groups is None else num_groups
        shape = (groups, -1 if group_size is None else group_size)
        experts_g = ops.reshape(router["chosen"], (*shape, k))
        positions, totals = routing.choice_major_positions(
            experts_g, ops.reshape(valid, shape), num_experts, with_totals=True
        )
        keep = positions >= 0
        if self.dropless(training):
            # Room for the whole group (`None`: one group of unknown size).
            capacity = group_size
        else:
            capacity = self.capacity(group_size, training)
            keep = ops.logical_and(keep, positions < capacity)
        keep_flat = ops.reshape(keep, (-1, k))
        weights = ops.where(keep_flat, router["gates"], ops.zeros_like(router["gates"]))
        return routing.Route(
            experts=experts_g,
            positions=positions,
            keep=keep,
            weights=ops.cast(weights, compute_dtype),
            totals=totals,
            num_experts=num_experts,
            capacity=capacity,
            groups=ops.shape(positions)[0] if num_groups is None else num_groups,
        )

    def _experts(self, h: Any, rows: Any | None) -> Any:
        """The stacked expert MLPs on dispatched rows (`experts.mlp`)."""
        return experts.mlp(
            h,
            self.expert_kernels,
            self.expert_biases if self.use_bias else None,
            experts.hidden_activations(self.activation, len(self.expert_kernels)),
            rows,
        )

    def run_experts(self, buffer: Any) -> Any:
        """Runs the stacked expert MLPs on `[E, M, d]` rows."""
        return self._experts(buffer, None)

    def _empty_call(self, x: Any, lead_shape: Any, out_dim: int) -> Any:
        """No tokens: an empty output, zero statistics and a zero loss."""
        self.expert_load.assign(ops.zeros((self.num_experts,), dtype="float32"))
        self.dropped_fraction.assign(ops.zeros((), dtype="float32"))
        if self._loss_weights_positive():
            self.add_loss(ops.zeros((), dtype="float32"))
        y = ops.zeros((0, out_dim), dtype=x.dtype)
        return ops.reshape(y, (*lead_shape, out_dim))

    def _loss_weights_positive(self) -> bool:
        return (
            self.switch_loss_weight > 0
            or self.importance_loss_weight > 0
            or self.z_loss_weight > 0
        )

    def _update_statistics(self, onehot: Any, route: routing.Route, valid: Any) -> None:
        valid = ops.cast(valid, "float32")
        total = routing.at_least_one(ops.sum(valid) * self.top_k)
        kept = ops.cast(ops.reshape(route.keep, (-1, self.top_k)), "float32")
        per_expert = ops.sum(onehot * kept[..., None], axis=(0, 1))
        self.expert_load.assign(per_expert / total)
        dropped = ops.sum(ops.expand_dims(valid, -1) * (1.0 - kept))
        self.dropped_fraction.assign(dropped / total)

    def _add_losses(self, router: dict[str, Any], valid: Any) -> None:
        if not self._loss_weights_positive():
            return
        valid = ops.cast(valid, "float32")
        onehot = router["onehot"]
        probs = router["probs"]
        terms = []
        chosen = ops.sum(onehot, axis=1)  # [T, E]
        if self.switch_loss_weight > 0:
            terms.append(
                self.switch_loss_weight
                * routing.switch_balance_loss(probs, chosen, valid)
            )
        if self.importance_loss_weight > 0:
            importance = ops.sum(
                ops.sum(onehot * router["gates"][..., None], axis=1) * valid[:, None],
                axis=0,
            )
            if router["noisy"]:
                load_t = routing.prob_in_top_k(
                    router["logits"], router["route"], router["stddev"], self.top_k
                )
            else:
                load_t = chosen
            load = ops.sum(load_t * valid[:, None], axis=0)
            terms.append(
                self.importance_loss_weight
                * (numerics.cv_squared(importance) + numerics.cv_squared(load))
            )
        if self.z_loss_weight > 0:
            terms.append(self.z_loss_weight * routing.z_loss(router["route"], valid))
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        self.add_loss(total)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "expert_hidden_units": list(self.expert_hidden_units),
                "output_dim": self.output_dim,
                "top_k": self.top_k,
                "gate_type": self.gate_type,
                "normalize_gates": self.normalize_gates,
                "capacity_factor": self.capacity_factor,
                "eval_capacity_factor": self.eval_capacity_factor,
                "min_capacity": self.min_capacity,
                "group_size": self.group_size,
                "pad_to_group": self.pad_to_group,
                "dispatcher": self.dispatcher,
                "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "jitter_eps": self.jitter_eps,
                "switch_loss_weight": self.switch_loss_weight,
                "importance_loss_weight": self.importance_loss_weight,
                "z_loss_weight": self.z_loss_weight,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "router_initializer": keras.initializers.serialize(
                    self.router_initializer
                ),
                "noise_initializer": keras.initializers.serialize(
                    self.noise_initializer
                ),
                "seed": self.seed,
            }
        )
        return config


def _pad_tokens(
    pad: Any, x: Any, valid: Any, noise: Any | None
) -> tuple[Any, Any, Any | None]:
    """Appends `pad` masked zero tokens (and zero router noise)."""
    x = ops.concatenate([x, ops.zeros((pad, x.shape[-1]), dtype=x.dtype)], axis=0)
    valid = ops.concatenate([valid, ops.zeros((pad,), dtype="bool")], axis=0)
    if noise is not None:
        noise = ops.concatenate(
            [noise, ops.zeros((pad, noise.shape[-1]), dtype=noise.dtype)], axis=0
        )
    return x, valid, noise


def _capacity_factor(name: str, value: Any) -> float | None:
    """A finite factor > 0, or `None` (dropless)."""
    return None if value is None else validation.positive_float(name, value)


def _static_product(shape: Sequence[int | None]) -> int | None:
    if any(s is None for s in shape):
        return None
    return int(math.prod(shape))
