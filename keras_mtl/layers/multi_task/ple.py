"""Customized Gate Control (CGC) and Progressive Layered Extraction (PLE)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import validation
from keras_mtl.layers.core.dense import InitializerLike
from keras_mtl.layers.core.dense import RegularizerLike
from keras_mtl.layers.core.mlp_options import DENSE_OPTIONS
from keras_mtl.layers.core.mlp_options import DenseOptionAttributes
from keras_mtl.layers.core.mlp_options import MLPOptions
from keras_mtl.layers.core.stacked_mlp import StackedMLP
from keras_mtl.layers.core.stacked_mlp import check_expert_input
from keras_mtl.layers.core.stacked_mlp import per_expert_initializers


def _task_expert_counts(value: Any, num_tasks: int) -> list[int]:
    if isinstance(value, (list, tuple)):
        counts = validation.positive_int_list("num_task_experts", list(value))
        if len(counts) != num_tasks:
            raise ValueError(
                "`num_task_experts` given as a list needs one entry per task. "
                f"Received: num_task_experts={list(value)!r} with "
                f"num_tasks={num_tasks}"
            )
        return counts
    return [validation.positive_int("num_task_experts", value)] * num_tasks


@keras.saving.register_keras_serializable(package="keras_mtl")
class CGC(DenseOptionAttributes, keras.layers.Layer):
    """Customized Gate Control (Tang et al., RecSys 2020): one extraction level.

    Each task `t` owns `m_t` experts and all tasks share `m_s` shared experts
    (all experts are MLPs of one shape, `expert_output_dims`). Task `t`
    mixes only its own and the shared experts, with a softmax gate computed
    from its gate input `x_t`:

    `g_t = softmax(x_t @ W_t / temperature)` over the `m_t + m_s` experts
    `y_t = sum_k g_t[k] * S_t[k]`, `S_t = [E_t,1..E_t,m_t, E_s,1..E_s,m_s]`

    With `shared_output=True` a shared gate over *all* experts produces a
    shared output as well, `y_s = sum_k softmax(x_s @ W_s)[k] * E[k]` (the
    non-final levels of `PLE`). Gates have no bias and start at zero
    (uniform mixing); they are computed in float32.

    Input: one tensor `x` used by every expert and gate, or a list of
    `num_tasks + 1` tensors `[x_0, ..., x_{T-1}, x_s]`: task `t`'s experts and
    gate read `x_t`, the shared experts and gate read `x_s` (all inputs must
    have the same last dimension). Experts are weight-normalized `MLP`s
    (same rules as `MLP`: a single activation leaves the last layer
    linear; a list gives one activation per layer), stacked as
    `experts/dense_{i}/kernel` `[E, in, out]` in the order task 0's experts,
    ..., task `T-1`'s experts, shared experts, and run in one `einsum`.

    Args:
        num_tasks: positive int. Number of tasks `T`.
        expert_output_dims: positive int or list of positive ints. Units of
            each expert layer (an int means one layer).
        num_task_experts: positive int (the same for every task), or a list
            of `T` positive ints. Experts per task. Defaults to `1`.
        num_shared_experts: positive int. Shared experts. Defaults to `1`.
        expert_activations: activation (a name, serialized dict, Keras layer
            or callable), or a list with one per expert layer (see `MLP`).
            Unknown names raise a `ValueError`. Defaults to `"relu"`.
        expert_initializers: kernel initializer of every expert (a Keras
            initializer, its name or its config; a seeded one gets seed
            `seed + e` for expert `e`). Defaults to `"glorot_uniform"`.
        kernel_regularizer: regularizer for expert kernels (a Keras
            regularizer, its name, its config or `None`). Defaults to `None`.
        use_weight_norm: bool. Defaults to `True`.
        use_learnable_weight_norm: bool. Defaults to `True`.
        use_bias: bool. Defaults to `True`.
        bias_regularizer: regularizer for expert biases. Defaults to `None`.
        temperature: finite float > 0. Gate logits are divided by it.
            Defaults to `1.0`.
        shared_output: bool. Also return the shared-gate output. Defaults to
            `False`.
        return_gates: bool. Also return the gates `[B, T (+1), E]` (zeros at
            the experts a gate does not see) as the last output. Defaults to
            `False`.
        **kwargs: Args to pass to the base class.

    Every argument is checked at construction: a wrong type or value raises a
    `ValueError` naming the argument. At call time, inputs of another rank,
    feature size (than the layer was built with) or number raise a
    `ValueError` naming the layer; integer inputs are cast to the compute
    dtype first.

    Output: a list of `T` tensors `(batch, D)`, then the shared output
    `(batch, D)` with `shared_output`, then the gates with `return_gates`.

    Weights (all created by `build`): `experts/dense_{i}/{kernel,kernel_norm,
    bias}`, `task_gate_{t}` `[in, m_t + m_s]`, `shared_gate` `[in, E]` (with
    `shared_output`).

    Example:

    ```python
    cgc = keras_mtl.layers.CGC(num_tasks=2, expert_output_dims=[16, 8],
                               num_task_experts=2, num_shared_experts=1)
    y0, y1 = cgc(np.random.rand(32, 10))  # two (32, 8) tensors
    ```

    References:
        - [Tang et al., 2020](https://dl.acm.org/doi/10.1145/3383313.3412236)
    """

    def __init__(
        self,
        num_tasks: int,
        expert_output_dims: int | Sequence[int],
        num_task_experts: int | Sequence[int] = 1,
        num_shared_experts: int = 1,
        expert_activations: activations.ActivationLike
        | Sequence[activations.ActivationLike] = "relu",
        expert_initializers: InitializerLike = "glorot_uniform",
        kernel_regularizer: RegularizerLike = None,
        use_weight_norm: bool = True,
        use_learnable_weight_norm: bool = True,
        use_bias: bool = True,
        bias_regularizer: RegularizerLike = None,
        temperature: float = 1.0,
        shared_output: bool = False,
        return_gates: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.num_tasks = validation.positive_int("num_tasks", num_tasks)
        self.expert_output_dims = validation.positive_int_or_list(
            "expert_output_dims", expert_output_dims
        )
        self.num_task_experts = _task_expert_counts(num_task_experts, self.num_tasks)
        self.num_shared_experts = validation.positive_int(
            "num_shared_experts", num_shared_experts
        )
        if isinstance(expert_activations, (list, tuple)):
            if len(expert_activations) != len(self.expert_output_dims):
                raise ValueError(
                    "`expert_activations` given as a list needs one entry per "
                    f"expert layer. Received: {len(expert_activations)} "
                    f"expert_activations for expert_output_dims="
                    f"{self.expert_output_dims}"
                )
            acts = list(expert_activations)
        else:
            acts = expert_activations
        for act in acts if isinstance(acts, list) else [acts]:
            activations.get_named("expert_activations", act)  # Fails early.
        self.expert_activations = (
            [_serialize_activation(a) for a in acts]
            if isinstance(acts, list)
            else _serialize_activation(acts)
        )
        self.expert_initializers = validation.initializer(
            "expert_initializers",
            "glorot_uniform" if expert_initializers is None else expert_initializers,
        )
        self.mlp_options = MLPOptions.checked(
            kernel_regularizer=kernel_regularizer,
            use_weight_norm=use_weight_norm,
            use_learnable_weight_norm=use_learnable_weight_norm,
            use_bias=use_bias,
            bias_regularizer=bias_regularizer,
        )
        self.temperature = validation.positive_float("temperature", temperature)
        self.shared_output = validation.boolean("shared_output", shared_output)
        self.return_gates = validation.boolean("return_gates", return_gates)
        # Other args.
        self._input_dim: int | None = None  # Set by `build`.
        self.num_experts = sum(self.num_task_experts) + self.num_shared_experts
        self.offsets = [sum(self.num_task_experts[:t]) for t in range(self.num_tasks)]
        self.shared_offset = sum(self.num_task_experts)
        # Sub-layers are created here so their names (weight paths) are stable.
        self.experts = StackedMLP(
            self.num_experts,
            self.expert_output_dims,
            activations=(
                [activations.get(a) for a in self.expert_activations]
                if isinstance(self.expert_activations, list)
                else activations.get(self.expert_activations)
            ),
            initializers=per_expert_initializers(
                self.expert_initializers, self.num_experts
            ),
            options=self.mlp_options,
            shared_input=False,
            dtype=self.dtype_policy,
            name="experts",
        )

    @property
    def output_dim(self) -> int:
        return self.expert_output_dims[-1]

    def _input_shapes(self, input_shape: Any) -> list[tuple[Any, ...]]:
        """The `T + 1` per-group input shapes (tasks..., shared)."""
        if (
            isinstance(input_shape, (list, tuple))
            and input_shape
            and isinstance(input_shape[0], (list, tuple))
        ):
            shapes = [tuple(s) for s in input_shape]
            if len(shapes) != self.num_tasks + 1:
                raise ValueError(
                    "`CGC` takes one input or a list of `num_tasks + 1` inputs "
                    "[task_0, ..., task_{T-1}, shared]. Received: "
                    f"{len(shapes)} inputs with num_tasks={self.num_tasks}"
                )
        else:
            shapes = [tuple(input_shape)] * (self.num_tasks + 1)
        dims = [s[-1] for s in shapes]
        if any(len(s) != 2 for s in shapes) or dims[0] is None:
            raise ValueError(
                "`CGC` expects rank-2 inputs with a static last dimension. "
                f"Received: input_shape={input_shape}"
            )
        if any(d != dims[0] for d in dims):
            raise ValueError(
                "All CGC inputs must have the same last dimension. "
                f"Received: input last dims={dims}"
            )
        return shapes

    def build(self, input_shape: Any) -> None:
        shapes = self._input_shapes(input_shape)
        input_dim = shapes[0][-1]
        self._input_dim = input_dim
        self.task_gates = [
            self.add_weight(
                name=f"task_gate_{t}",
                shape=(input_dim, self.num_task_experts[t] + self.num_shared_experts),
                initializer="zeros",
            )
            for t in range(self.num_tasks)
        ]
        self.shared_gate = None
        if self.shared_output:
            self.shared_gate = self.add_weight(
                name="shared_gate",
                shape=(input_dim, self.num_experts),
                initializer="zeros",
            )
        self.experts.build((shapes[0][0], self.num_experts, input_dim))

    def _gate(self, x: Any, kernel: Any) -> Any:
        logits = ops.matmul(ops.cast(x, "float32"), ops.cast(kernel, "float32"))
        if self.temperature != 1.0:
            logits = logits / self.temperature
        return ops.softmax(logits, axis=-1)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        groups = _check_groups(self, inputs, self.num_tasks, self._input_dim)
        groups = [ops.cast(x, self.compute_dtype) for x in groups]
        counts = self.num_task_experts + [self.num_shared_experts]
        # [B, E, in]: each expert reads its group's input.
        expert_inputs = ops.concatenate(
            [
                ops.repeat(ops.expand_dims(x, 1), n, axis=1)
                for x, n in zip(groups, counts, strict=True)
            ],
            axis=1,
        )
        expert_outputs = self.experts(expert_inputs, training=training)  # [B,E,D]
        dtype = expert_outputs.dtype
        shared = expert_outputs[:, self.shared_offset :, :]
        outputs, full_gates = [], []
        for t in range(self.num_tasks):
            start, n = self.offsets[t], self.num_task_experts[t]
            selected = ops.concatenate(
                [expert_outputs[:, start : start + n, :], shared], axis=1
            )
            gate = self._gate(groups[t], self.task_gates[t])
            outputs.append(ops.einsum("be,bed->bd", ops.cast(gate, dtype), selected))
            if self.return_gates:
                full_gates.append(self._scatter_gate(gate, t))
        if self.shared_output:
            gate = self._gate(groups[-1], self.shared_gate)
            outputs.append(
                ops.einsum("be,bed->bd", ops.cast(gate, dtype), expert_outputs)
            )
            if self.return_gates:
                full_gates.append(gate)
        if self.return_gates:
            outputs.append(ops.cast(ops.stack(full_gates, axis=1), dtype))
        return outputs

    def _scatter_gate(self, gate: Any, t: int) -> Any:
        """Task `t`'s gate `[B, m_t + m_s]` placed among all `E` experts."""
        start, n = self.offsets[t], self.num_task_experts[t]
        batch = ops.shape(gate)[0]
        parts = []
        if start > 0:
            parts.append(ops.zeros((batch, start), dtype=gate.dtype))
        parts.append(gate[:, :n])
        gap = self.shared_offset - start - n
        if gap > 0:
            parts.append(ops.zeros((batch, gap), dtype=gate.dtype))
        parts.append(gate[:, n:])
        return ops.concatenate(parts, axis=1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        shapes = self._input_shapes(input_shape)
        _check_group_shapes(self, shapes, self._input_dim)  # Symbolic: no `call`.
        batch = shapes[0][0]
        n = self.num_tasks + int(self.shared_output)
        shapes = [(batch, self.output_dim) for _ in range(n)]
        if self.return_gates:
            shapes.append((batch, n, self.num_experts))
        return shapes

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                **_expert_config(self),
                "expert_output_dims": list(self.expert_output_dims),
                "shared_output": self.shared_output,
            }
        )
        return config


def _check_groups(
    layer: Any, inputs: Any, num_tasks: int, input_dim: int | None
) -> list[Any]:
    """The `num_tasks + 1` group inputs, checked (count, rank, feature size)."""
    if isinstance(inputs, (list, tuple)):
        groups = validation.input_count(layer, inputs, num_tasks + 1)
        names = [f"inputs[{i}]" for i in range(num_tasks + 1)]
    else:
        groups = [inputs] * (num_tasks + 1)
        names = ["inputs"] * (num_tasks + 1)
    _check_group_shapes(layer, [x.shape for x in groups], input_dim, names)
    return groups


def _check_group_shapes(
    layer: Any,
    shapes: list[Any],
    input_dim: int | None,
    names: list[str] | None = None,
) -> None:
    names = names or [f"inputs[{i}]" for i in range(len(shapes))]
    for name, shape in zip(names, shapes, strict=True):
        check_expert_input(layer, name, shape, input_dim)


def _serialize_activation(act: Any) -> Any:
    return (
        act
        if act is None or isinstance(act, (str, dict))
        else (activations.serialize(act))
    )


@keras.saving.register_keras_serializable(package="keras_mtl")
class PLE(DenseOptionAttributes, keras.layers.Layer):
    """Progressive Layered Extraction (Tang et al., RecSys 2020).

    `num_levels` stacked `CGC` extraction networks `level_{j}`. Level 0 reads
    the input; level `j > 0` reads the previous level's outputs
    `[y_0, ..., y_{T-1}, y_s]`: task `t`'s experts and gate read `y_t`, the
    shared experts and gate read `y_s`. Every level but the last also
    computes the shared output `y_s` with a gate over all of its experts;
    the last level returns the `T` task outputs only.

    Args:
        num_tasks: positive int. Number of tasks `T`.
        expert_output_dims: positive int or list of positive ints (the same
            experts at every level), or a list of `num_levels` such lists
            (one per level).
        num_levels: positive int. Number of extraction levels. Defaults to
            `2`.
        num_task_experts: positive int, or list of `T` positive ints. Experts
            per task and level. Defaults to `1`.
        num_shared_experts: positive int. Shared experts per level. Defaults
            to `1`.
        expert_activations: activation, or a list with one per expert layer
            (see `MLP`). Defaults to `"relu"`.
        expert_initializers: kernel initializer of every expert. Defaults to
            `"glorot_uniform"`.
        kernel_regularizer: regularizer for expert kernels. Defaults to `None`.
        use_weight_norm: bool. Defaults to `True`.
        use_learnable_weight_norm: bool. Defaults to `True`.
        use_bias: bool. Defaults to `True`.
        bias_regularizer: regularizer for expert biases. Defaults to `None`.
        temperature: finite float > 0. Gate temperature at every level.
            Defaults to `1.0`.
        return_gates: bool. Also return every level's gates, after the task
            outputs. Level `j`'s are `[B, T + 1, E_j]` (the task gates, then
            the shared gate; zeros at the experts a gate does not see, see
            `CGC`), the last level's `[B, T, E]`. Defaults to `False`.
        **kwargs: Args to pass to the base class.

    Every argument is checked at construction (`ValueError` naming it); call
    inputs as in `CGC`, with errors naming this layer.

    Input shape: `(batch, in)`, or a list of `T + 1` tensors (see `CGC`).
    Output shape: a list of `T` tensors `(batch, D)`, `D` the last level's
    expert output dim; with `return_gates`, followed by `num_levels` gate
    tensors.

    Weights: those of each level under `level_{j}/` (see `CGC`).

    Example:

    ```python
    ple = keras_mtl.layers.PLE(num_tasks=2, num_levels=2,
                               expert_output_dims=[16, 8])
    y0, y1 = ple(np.random.rand(32, 10))  # two (32, 8) tensors
    ```

    References:
        - [Tang et al., 2020](https://dl.acm.org/doi/10.1145/3383313.3412236)
    """

    def __init__(
        self,
        num_tasks: int,
        expert_output_dims: int | Sequence[int] | Sequence[Sequence[int]],
        num_levels: int = 2,
        num_task_experts: int | Sequence[int] = 1,
        num_shared_experts: int = 1,
        expert_activations: activations.ActivationLike
        | Sequence[activations.ActivationLike] = "relu",
        expert_initializers: InitializerLike = "glorot_uniform",
        kernel_regularizer: RegularizerLike = None,
        use_weight_norm: bool = True,
        use_learnable_weight_norm: bool = True,
        use_bias: bool = True,
        bias_regularizer: RegularizerLike = None,
        temperature: float = 1.0,
        return_gates: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_tasks = validation.positive_int("num_tasks", num_tasks)
        self.return_gates = validation.boolean("return_gates", return_gates)
        self.num_levels = validation.positive_int("num_levels", num_levels)
        if (
            isinstance(expert_output_dims, (list, tuple))
            and expert_output_dims
            and all(isinstance(d, (list, tuple)) for d in expert_output_dims)
        ):
            if len(expert_output_dims) != self.num_levels:
                raise ValueError(
                    "`expert_output_dims` given per level needs one entry per "
                    f"level. Received: {len(expert_output_dims)} "
                    f"expert_output_dims with num_levels={self.num_levels}"
                )
            dims = [
                validation.positive_int_or_list("expert_output_dims", d)
                for d in expert_output_dims
            ]
        else:
            dims = [
                validation.positive_int_or_list(
                    "expert_output_dims", expert_output_dims
                )
            ] * self.num_levels
        self.expert_output_dims = dims
        self.levels = [
            CGC(
                self.num_tasks,
                dims[j],
                num_task_experts=num_task_experts,
                num_shared_experts=num_shared_experts,
                expert_activations=expert_activations,
                expert_initializers=expert_initializers,
                kernel_regularizer=kernel_regularizer,
                use_weight_norm=use_weight_norm,
                use_learnable_weight_norm=use_learnable_weight_norm,
                use_bias=use_bias,
                bias_regularizer=bias_regularizer,
                temperature=temperature,
                shared_output=j < self.num_levels - 1,
                return_gates=self.return_gates,
                dtype=self.dtype_policy,
                name=f"level_{j}",
            )
            for j in range(self.num_levels)
        ]
        self._input_dim: int | None = None  # Set by `build`.
        first = self.levels[0]
        self.num_task_experts = first.num_task_experts
        self.num_shared_experts = first.num_shared_experts
        self.expert_activations = first.expert_activations
        self.expert_initializers = first.expert_initializers
        self.mlp_options = first.mlp_options
        self.temperature = first.temperature

    def build(self, input_shape: Any) -> None:
        shape = input_shape
        self._input_dim = self.levels[0]._input_shapes(input_shape)[0][-1]
        for j, level in enumerate(self.levels):
            level.build(shape)
            batch = level._input_shapes(shape)[0][0]
            shape = [(batch, self.expert_output_dims[j][-1])] * (self.num_tasks + 1)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        # Checked here too, so that errors name this layer, not `level_0`.
        _check_groups(self, inputs, self.num_tasks, self._input_dim)
        x, gates = inputs, []
        for level in self.levels:
            x = level(x, training=training)
            if self.return_gates:
                *x, level_gates = x
                gates.append(level_gates)
        return list(x) + gates

    def compute_output_shape(self, input_shape: Any) -> Any:
        in_shapes = self.levels[0]._input_shapes(input_shape)
        _check_group_shapes(self, in_shapes, self._input_dim)  # Symbolic: no `call`.
        batch = in_shapes[0][0]
        shapes = [
            (batch, self.expert_output_dims[-1][-1]) for _ in range(self.num_tasks)
        ]
        if self.return_gates:
            for j, level in enumerate(self.levels):
                rows = self.num_tasks + int(j < self.num_levels - 1)
                shapes.append((batch, rows, level.num_experts))
        return shapes

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                **_expert_config(self),
                "num_levels": self.num_levels,
                "expert_output_dims": [list(d) for d in self.expert_output_dims],
            }
        )
        return config


def _expert_config(layer: CGC | PLE) -> dict[str, Any]:
    """The config entries `CGC` and `PLE` share (a PLE's are its levels')."""
    return {
        "num_tasks": layer.num_tasks,
        "num_task_experts": list(layer.num_task_experts),
        "num_shared_experts": layer.num_shared_experts,
        "expert_activations": layer.expert_activations,
        "expert_initializers": keras.initializers.serialize(layer.expert_initializers),
        **layer.mlp_options.config(DENSE_OPTIONS),
        "temperature": layer.temperature,
        "return_gates": layer.return_gates,
    }
