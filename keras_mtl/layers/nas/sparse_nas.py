"""Sparse-NAS layers: learned embedding-size choices and feature gates.

The reference library's source is not public; the behaviour follows the
manual (`sparse_nas` section, whose mask tables are reproduced exactly by
`nas_masks`) and the decisions recorded in the layer docstrings and in
`specs/{nas_selection,mixed_nas,nas_gating,simple_nas}/spec.yaml`.

Every layer takes one tensor `(batch, total_width)`, the concatenation of the
features' embeddings in `segment_names` order (a list of per-feature tensors
`(batch, width_f)` is accepted and concatenated), and returns
`inputs * mask_weights` of the same shape: the layers only re-weight
embedding dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_mtl import gating
from keras_mtl import numerics
from keras_mtl import validation

EMBEDDING_SHARE_MODES = ("left", "diff", "random", "none")
WEIGHT_GRAD_MODES = ("discrete", "gumbel", "none")
STE_TYPES = ("softplus", "clip", "none")


def _check_sizes(name: str, sizes: Any, zero_choice: bool) -> list[int]:
    """Strictly ascending positive ints (a leading 0 allowed with zero_choice)."""
    expected = "a non-empty, strictly ascending list of positive integers"
    if zero_choice:
        expected += " (a leading 0 is allowed)"
    ok = isinstance(sizes, (list, tuple)) and len(sizes) > 0
    if ok:
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
                ok = False
    if ok:
        values = [int(s) for s in sizes]
        first_positive = 1 if (zero_choice and values[0] == 0) else 0
        positive = values[first_positive:]
        ok = len(positive) > 0 and all(s > 0 for s in positive)
        ok = ok and all(a < b for a, b in zip(values, values[1:], strict=False))
    if not ok:
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={sizes!r}")
    return values


def nas_masks(
    sizes: Sequence[int],
    mode: str,
    seed: int | None = None,
    zero_choice: bool = False,
) -> np.ndarray:
    """Binary choice masks `[C, W]` of one feature (NumPy, float32).

    For choices `sizes = [s_1, ..., s_C]` (strictly ascending, positive):

    - `"left"`: `W = s_C`; row `c` has ones on `[0, s_c)`.
    - `"diff"`: `W = s_C`; row `c` has ones on `[s_{c-1}, s_c)` (`s_0 = 0`).
    - `"none"`: no sharing, `W = sum(sizes)`; row `c` has ones on
      `[sum_{i<c} s_i, sum_{i<=c} s_i)`.
    - `"random"`: `W = s_C`; the last row is all ones; every other row `c` has
      ones at `s_c` positions drawn uniformly *with replacement* from
      `[0, W)` by `np.random.RandomState(seed).randint(0, W, size=s_c)`, rows
      in order, so a row may have fewer than `s_c` distinct ones (as in the
      manual's table). `seed=None` draws from fresh entropy.

    With `zero_choice=True` (MixedNASLayer) a row of zeros is prepended when
    `sizes[0] != 0` (a leading `0` in `sizes` is that row already); `W` is
    unchanged. For `sizes=[2, 4, 6]` this reproduces the manual's tables, e.g.
    `"left"`: `[[1,1,0,0,0,0], [1,1,1,1,0,0], [1,1,1,1,1,1]]`.

    Args:
        sizes: non-empty, strictly ascending list of positive int (a leading
            `0` is allowed with `zero_choice`). The embedding-size choices of
            the feature.
        mode: `"left"`, `"diff"`, `"random"` or `"none"`.
        seed: int >= 0 or `None`. Seed of the `"random"` masks. Defaults to
            `None`.
        zero_choice: bool. Prepend the all-zero choice. Defaults to `False`.

    Returns:
        float32 array `[C, W]` (`C` counts the zero choice).

    Raises:
        ValueError: naming the argument, for any other value.
    """
    validation.one_of("mode", mode, EMBEDDING_SHARE_MODES)
    zero_choice = validation.boolean("zero_choice", zero_choice)
    seed = validation.seed("seed", seed)
    values = _check_sizes("sizes", sizes, zero_choice)
    positive = [s for s in values if s > 0]
    width = sum(positive) if mode == "none" else positive[-1]
    rows = np.zeros((len(positive), width), dtype=np.float32)
    start = 0
    if mode == "random":
        rng = np.random.RandomState(seed)
        for c, s in enumerate(positive[:-1]):
            rows[c, rng.randint(0, width, size=s)] = 1.0
        rows[-1] = 1.0
    else:
        for c, s in enumerate(positive):
            if mode == "left":
                rows[c, :s] = 1.0
            elif mode == "diff":
                rows[c, (positive[c - 1] if c else 0) : s] = 1.0
            else:  # none
                rows[c, start : start + s] = 1.0
                start += s
    if zero_choice:
        rows = np.concatenate([np.zeros((1, width), np.float32), rows], axis=0)
    return rows


def _flat_sizes(segment_sizes: Any) -> list[int]:
    """One positive int width per segment (NumPy ints accepted)."""
    if not isinstance(segment_sizes, (list, tuple)):  # not a bare int either
        raise ValueError(
            "`segment_sizes` must be a non-empty list of positive integers. "
            f"Received: segment_sizes={segment_sizes!r}"
        )
    return validation.positive_int_list(
        "segment_sizes",
        [int(s) if isinstance(s, np.integer) else s for s in segment_sizes],
    )


def _check_names(names: Any, count: int) -> list[str]:
    if (
        not isinstance(names, (list, tuple))
        or len(names) != count
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != len(names)
    ):
        got = len(names) if isinstance(names, (list, tuple)) else names
        raise ValueError(
            "`segment_names` must be a list of distinct non-empty strings, one per "
            f"feature: expected {count} names. Received: segment_names={names!r} "
            f"({got} names)"
        )
    return [str(n) for n in names]


def _concat(parts: list[Any], axis: int) -> Any:
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=axis)


def _check_input_shape(layer: Any, input_shape: Any, widths: list[int]) -> tuple:
    """Validates a tensor or list input shape; returns `(batch, total)`."""
    total = sum(widths)
    who = f"`{type(layer).__name__}` (layer '{layer.name}')"
    is_list = isinstance(input_shape, (list, tuple)) and (
        len(input_shape) > 0 and isinstance(input_shape[0], (list, tuple))
    )
    if is_list:
        shapes = [tuple(s) for s in input_shape]
        got = [s[-1] if len(s) == 2 else s for s in shapes]
        if len(shapes) != len(widths) or got != widths:
            raise ValueError(
                f"{who} list `inputs` must be {len(widths)} rank-2 tensors "
                f"(batch, width_f) with widths {widths}. Received: input shapes "
                f"{shapes}"
            )
        return (shapes[0][0], total)
    shape = tuple(input_shape)
    if len(shape) != 2 or shape[-1] != total:
        raise ValueError(
            f"{who} expects `inputs` of shape (batch, {total}) (the concatenated "
            f"feature widths {widths}). Received: input_shape={shape}"
        )
    return (shape[0], total)


def _prepare_inputs(layer: Any, inputs: Any, widths: list[int]) -> Any:
    """The concatenated input in the compute dtype, after a shape check.

    `build` checks shapes once; a later call with other widths would
    broadcast silently (a width of 1) or fail inside the product.
    """
    # Integer embeddings are cast: the mask weights are fractional.
    if isinstance(inputs, (list, tuple)):
        _check_input_shape(layer, [tuple(x.shape) for x in inputs], widths)
        return _concat([ops.cast(x, layer.compute_dtype) for x in inputs], axis=-1)
    _check_input_shape(layer, tuple(inputs.shape), widths)
    return ops.cast(inputs, layer.compute_dtype)


def _gumbel(shape: tuple[int, ...], seed: Any) -> Any:
    """Gumbel(0, 1) noise `-log(-log(u))` in float32."""
    u = keras.random.uniform(
        shape, minval=1e-20, maxval=1.0, dtype="float32", seed=seed
    )
    return -ops.log(-ops.log(u))


class _SegmentMask(keras.layers.Layer):
    """Base of the NAS layers: `inputs * mask` over the features' segments."""

    @property
    def widths(self) -> list[int]:
        """The input width of each feature, in feature order."""
        return self.segment_sizes

    def _add_logits(self, prefix: str, sizes: list[int]) -> list[Any]:
        """Per feature `f`, float32 zero logits `{prefix}_{f}` (no autocast)."""
        return [
            self.add_weight(
                name=f"{prefix}_{f}",
                shape=(n,),
                initializer="zeros",
                trainable=True,
                autocast=False,
            )
            for f, n in enumerate(sizes)
        ]

    def mask_weights(self, training: bool | None = None) -> Any:
        """The float32 mask `[total_width]`."""
        raise NotImplementedError

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = _prepare_inputs(self, inputs, self.widths)
        return x * ops.cast(self.mask_weights(training), x.dtype)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return _check_input_shape(self, input_shape, self.widths)


@keras.saving.register_keras_serializable(package="keras_mtl")
class NASSelectionLayer(_SegmentMask):
    """Learned choice of an embedding size per feature (differentiable NAS).

    Feature `f` offers `C_f` embedding sizes `segment_sizes[f]`; their binary
    masks `M_f` `[C_f, W_f]` come from `nas_masks(segment_sizes[f],
    embedding_share_mode, seed)` (the manual's tables) or from `masks`. With
    trainable logits `a_f` `[C_f]` and `p = softmax(a_f / temperature)`, the
    choice weights `w` `[C_f]` are, by `weight_grad_mode`:

    - `"none"`: `w = p`, a soft mixture (same in training and inference);
    - `"discrete"`: training: `w = h + (p - stop_gradient(p))` with `h` the
      one-hot of a sample of Categorical(p) (straight-through estimator, the
      forward value is exactly `h`); inference: `w = one_hot(argmax p)`;
    - `"gumbel"`: training: `y = softmax((a_f + g) / temperature)`,
      `g ~ Gumbel(0, 1)`, `w = one_hot(argmax y) + (y - stop_gradient(y))`
      (hard straight-through Gumbel-softmax); inference: `one_hot(argmax p)`.

    A feature with a single choice always takes it (`w = [1]`, its logit gets
    no gradient). The mask weight of feature `f` is `m_f = sum_c w_c M_f[c]`
    `[W_f]`, and
    `outputs = inputs * concat_f(m_f)`. One architecture is sampled per call
    and feature (shared by the batch). Ties in `argmax` go to the first index.
    At inference the one-hot weights pass no gradient to the logits. The
    logits are float32 (no autocast under mixed precision); the mask is cast
    to the input dtype.

    Inputs: one tensor `(batch, sum_f W_f)`, the features' embeddings
    concatenated in `segment_names` order (a list of `(batch, W_f)` tensors is
    concatenated). `W_f = max(sizes)` for `"left"`, `"diff"` and `"random"`
    and `sum(sizes)` for `"none"` (the manual's note that `"none"` takes a
    different input). Output: same shape as the concatenated input.

    Integer inputs are cast to the compute dtype. Every call checks the
    input widths again (`ValueError` naming the layer).

    Args:
        segment_sizes: non-empty list of lists of int. Per feature, the
            strictly ascending positive embedding sizes of its choices.
        segment_names: list of str. Distinct non-empty feature names, one
            per feature.
        temperature: finite float > 0. Softmax temperature. Defaults to
            `1.0`.
        embedding_share_mode: `"left"`, `"diff"`, `"random"` or `"none"`.
            Defaults to `"none"`.
        weight_grad_mode: `"discrete"`, `"gumbel"` or `"none"`. Defaults to
            `"discrete"`.
        masks: `None` or, per feature, a list of `C_f` rows of 0/1 of width
            `W_f`; overrides the generated masks for any mode (the manual's
            random table cannot be regenerated: its RNG is unknown). With
            `"random"` and `seed=None` the masks drawn at construction are
            returned here by `get_config`, so a reloaded layer keeps them.
            Defaults to `None`.
        seed: int >= 0 or `None`. Seed of the `"random"` masks and of the
            sampling in training. Defaults to `None`.
        **kwargs: Args to pass to the base class.

    Weights: `arch_logits_{f}` `[C_f]` for `f = 0, 1, ...` in feature order
    (indices, not names, so any feature name is allowed), zeros-initialized.

    Example:

    ```python
    nas = keras_mtl.layers.NASSelectionLayer(
        [[2, 4, 6], [4, 8]], ["user", "item"], embedding_share_mode="left")
    y = nas(np.random.rand(8, 14))  # (8, 14): 6 dims of user, 8 of item
    ```

    References:
        - [Liu et al., 2019 (DARTS)](https://arxiv.org/abs/1806.09055)
        - [Zhao et al., 2021 (AutoEmb / embedding dimension search)](https://arxiv.org/abs/2002.11252)
        - [Jang et al., 2017 (Gumbel-softmax)](https://arxiv.org/abs/1611.01144)
        - [Bengio et al., 2013 (straight-through estimator)](https://arxiv.org/abs/1308.3432)
    """

    zero_choice = False

    def __init__(
        self,
        segment_sizes: Sequence[Sequence[int]],
        segment_names: Sequence[str],
        temperature: float = 1.0,
        embedding_share_mode: str = "none",
        weight_grad_mode: str = "discrete",
        masks: Sequence[Sequence[Sequence[float]]] | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(segment_sizes, (list, tuple)) or not segment_sizes:
            raise ValueError(
                "`segment_sizes` must be a non-empty list of lists of embedding "
                "sizes (one list per feature). "
                f"Received: segment_sizes={segment_sizes!r}"
            )
        self.segment_sizes = [
            _check_sizes(f"segment_sizes[{i}]", s, self.zero_choice)
            for i, s in enumerate(segment_sizes)
        ]
        self.segment_names = _check_names(segment_names, len(self.segment_sizes))
        self.temperature = validation.positive_float("temperature", temperature)
        self.embedding_share_mode = validation.one_of(
            "embedding_share_mode", embedding_share_mode, EMBEDDING_SHARE_MODES
        )
        self.weight_grad_mode = validation.one_of(
            "weight_grad_mode", weight_grad_mode, WEIGHT_GRAD_MODES
        )
        self.seed = validation.seed("seed", seed)
        seed = self.seed
        # Masks are config-derived constants (NumPy), not weights.
        generated = [
            nas_masks(s, self.embedding_share_mode, seed, self.zero_choice)
            for s in self.segment_sizes
        ]
        if masks is None:
            self.mask_arrays = generated
            if self.embedding_share_mode == "random" and seed is None:
                masks = [m.astype(int).tolist() for m in generated]
        else:
            self.mask_arrays = self._check_masks(masks, generated)
            masks = [m.astype(int).tolist() for m in self.mask_arrays]
        self.masks = masks
        # The masks again as nested tuples, which `mask_weights` converts:
        # Keras's torch conversion of a NumPy array reads its dtype, which
        # breaks a torch.compile graph; Python numbers do not.
        self._mask_values = tuple(
            tuple(tuple(row) for row in m.astype("float32").tolist())
            for m in self.mask_arrays
        )
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def widths(self) -> list[int]:
        """The input width of each feature: its masks' width."""
        return [int(m.shape[1]) for m in self.mask_arrays]

    @staticmethod
    def _check_masks(masks: Any, generated: list[np.ndarray]) -> list[np.ndarray]:
        expected = [tuple(m.shape) for m in generated]
        try:
            arrays = [np.asarray(m, dtype=np.float32) for m in masks]
        except (TypeError, ValueError):
            arrays = None
        if (
            arrays is None
            or len(arrays) != len(generated)
            or [a.shape for a in arrays] != expected
            or not all(np.all((a == 0) | (a == 1)) for a in arrays)
        ):
            got = [a.shape for a in arrays] if arrays is not None else masks
            raise ValueError(
                "`masks` must hold, per feature, 0/1 rows of shapes (choices, "
                f"width) {expected}. Received: masks={masks!r} (shapes {got})"
            )
        return arrays

    def build(self, input_shape: Any) -> None:
        _check_input_shape(self, input_shape, self.widths)
        self.arch_logits = self._add_logits(
            "arch_logits", [int(m.shape[0]) for m in self.mask_arrays]
        )

    def choice_weights(self, training: bool | None = None) -> list[Any]:
        """Per feature, the float32 choice weights `w` `[C_f]`."""
        out = []
        for logits_var in self.arch_logits:
            logits = ops.cast(logits_var, "float32")
            num = int(logits.shape[0])
            if num == 1:  # a single choice is always taken
                out.append(ops.ones((1,), dtype="float32"))
                continue
            p = ops.softmax(logits / self.temperature)
            if self.weight_grad_mode == "none":
                out.append(p)
            elif not training:
                out.append(numerics.first_max_one_hot(p, "float32"))
            elif self.weight_grad_mode == "discrete":
                idx = keras.random.categorical(
                    ops.expand_dims(logits / self.temperature, 0),
                    1,
                    seed=self.seed_generator,
                )
                hard = numerics.one_hot(ops.reshape(idx, ()), num, "float32")
                out.append(gating.straight_through(hard, p))
            else:  # gumbel
                g = _gumbel((num,), self.seed_generator)
                y = ops.softmax((logits + g) / self.temperature)
                hard = numerics.first_max_one_hot(y, "float32")
                out.append(gating.straight_through(hard, y))
        return out

    def mask_weights(self, training: bool | None = None) -> Any:
        """The float32 mask `concat_f(sum_c w_c M_f[c])` `[total_width]`."""
        parts = []
        for w, m in zip(self.choice_weights(training), self._mask_values, strict=True):
            mask = ops.convert_to_tensor(m, dtype="float32")
            parts.append(ops.sum(ops.expand_dims(w, -1) * mask, axis=0))
        return _concat(parts, axis=0)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "segment_sizes": [list(s) for s in self.segment_sizes],
                "segment_names": list(self.segment_names),
                "temperature": self.temperature,
                "embedding_share_mode": self.embedding_share_mode,
                "weight_grad_mode": self.weight_grad_mode,
                "masks": self.masks,
                "seed": self.seed,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_mtl")
class MixedNASLayer(NASSelectionLayer):
    """NAS selection with a zero choice per feature (feature importance).

    Identical to `NASSelectionLayer` (same arguments, weights, maths and
    inputs), except that the masks come from `nas_masks(..., zero_choice=True)`:
    when a feature's first size is not 0, an all-zero choice is prepended
    (row 0 of the mask table), so the search can switch the feature off. The
    width is unchanged (`sum(sizes)` for `"none"`, `max(sizes)` otherwise)
    and `arch_logits_{f}` has `C_f + 1` entries; a leading `0` in `sizes` is
    the zero choice already. For `sizes=[2, 4, 6]` and `"left"` the masks are
    the manual's `[[0,0,0,0,0,0], [1,1,0,0,0,0], [1,1,1,1,0,0],
    [1,1,1,1,1,1]]`. Explicit `masks` include the zero row.

    Args:
        segment_sizes: non-empty list of lists of int. Per feature, the
            strictly ascending embedding sizes of its choices (positive, or
            a leading 0 for the explicit zero choice).
        segment_names: list of str. Distinct non-empty feature names, one
            per feature.
        temperature: finite float > 0. Softmax temperature. Defaults to
            `1.0`.
        embedding_share_mode: `"left"`, `"diff"`, `"random"` or `"none"`.
            Defaults to `"none"`.
        weight_grad_mode: `"discrete"`, `"gumbel"` or `"none"`. Defaults to
            `"discrete"`.
        masks: `None` or, per feature, the `C_f + 1` rows (zero row first) of
            0/1 of width `W_f`. Defaults to `None`.
        seed: int >= 0 or `None`. Seed of the `"random"` masks and of the
            sampling in training. Defaults to `None`.
        **kwargs: Args to pass to the base class.

    Example:

    ```python
    mixed = keras_mtl.layers.MixedNASLayer([[2, 4, 6]], ["user"],
                                           embedding_share_mode="diff")
    y = mixed(np.random.rand(8, 6))  # (8, 6); arch_logits_0 has 4 entries
    ```

    References:
        - [Liu et al., 2019 (DARTS)](https://arxiv.org/abs/1806.09055)
        - [Jang et al., 2017 (Gumbel-softmax)](https://arxiv.org/abs/1611.01144)
    """

    zero_choice = True


@keras.saving.register_keras_serializable(package="keras_mtl")
class NASGatingLayer(_SegmentMask):
    """One learned gate per feature segment (feature selection).

    Segment `i` of width `s_i` gets a trainable logit `a_i` and a gate:

    - `ste_type="none"`: `g = sigmoid(a)` (soft gate, no estimator);
    - `"clip"`: forward `g = step(a) = 1[a > 0]`, gradient of
      `s = clip(a, -1, 1)` (hard-tanh straight-through: 1 inside `(-1, 1)`,
      0 outside), computed as `g = step(a) + (s - stop_gradient(s))`;
    - `"softplus"`: forward `step(a)`, gradient of `s = softplus(a)`, i.e.
      `sigmoid(a)`.

    `outputs = inputs * repeat(g, segment_sizes)`. Deterministic (nothing is
    sampled; no `training` argument). Gates start open: `gate_logits` is
    initialized to `+1.0` (step 1, sigmoid 0.73, inside the clip window).
    The logits are float32 (no autocast); the gate is cast to the input dtype.

    Args:
        segment_sizes: non-empty list of int. Positive width of each
            segment (a bare int is refused: widths go with names).
        segment_names: list of str. Distinct non-empty names, one per
            segment.
        ste_type: `"softplus"`, `"clip"` or `"none"`. Defaults to `"none"`.
        **kwargs: Args to pass to the base class.

    Inputs: `(batch, sum(segment_sizes))` or a list of `(batch, s_i)`;
    integer inputs are cast to the compute dtype and every call checks the
    widths again.
    Output: same shape as the concatenated input. Weight: `gate_logits` `[n]`.

    Example:

    ```python
    gate = keras_mtl.layers.NASGatingLayer([4, 8], ["user", "item"],
                                           ste_type="clip")
    y = gate(np.random.rand(8, 12))  # (8, 12)
    ```

    References:
        - [Bengio et al., 2013 (straight-through estimator)](https://arxiv.org/abs/1308.3432)
        - [Yin et al., 2019 (STE analysis)](https://arxiv.org/abs/1903.05662)
    """

    def __init__(
        self,
        segment_sizes: Sequence[int],
        segment_names: Sequence[str],
        ste_type: str = "none",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.segment_sizes = _flat_sizes(segment_sizes)
        self.segment_names = _check_names(segment_names, len(self.segment_sizes))
        self.ste_type = validation.one_of("ste_type", ste_type, STE_TYPES)

    def build(self, input_shape: Any) -> None:
        _check_input_shape(self, input_shape, self.segment_sizes)
        self.gate_logits = self.add_weight(
            name="gate_logits",
            shape=(len(self.segment_sizes),),
            initializer=keras.initializers.Constant(1.0),
            trainable=True,
            autocast=False,
        )

    def gates(self) -> Any:
        """The float32 gates `[n]`."""
        a = ops.cast(self.gate_logits, "float32")
        if self.ste_type == "none":
            return ops.sigmoid(a)
        step = ops.cast(ops.greater(a, 0.0), "float32")
        s = ops.clip(a, -1.0, 1.0) if self.ste_type == "clip" else ops.softplus(a)
        return gating.straight_through(step, s)

    def mask_weights(self, training: bool | None = None) -> Any:
        """The float32 mask `repeat(g, segment_sizes)` `[sum s_i]`; `training`
        is ignored (nothing is sampled)."""
        g = self.gates()
        return ops.concatenate(
            [
                ops.repeat(g[i : i + 1], s, axis=0)
                for i, s in enumerate(self.segment_sizes)
            ],
            axis=0,
        )

    def call(self, inputs: Any) -> Any:
        # No `training` argument: the gates are deterministic.
        return super().call(inputs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "segment_sizes": list(self.segment_sizes),
                "segment_names": list(self.segment_names),
                "ste_type": self.ste_type,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_mtl")
class SimpleNasLayer(_SegmentMask):
    """Learned truncation length of each feature's embedding.

    Feature `f` of width `D_f` has trainable logits `a_f` `[D_f]` over the
    truncation lengths `L = 1, ..., D_f` and `p = softmax(a_f / temperature)`
    (in training with `use_gumbel`: `softmax((a_f + g) / temperature)`,
    `g ~ Gumbel(0, 1)`, one draw per call shared by the batch).

    - Training: soft mask `m_j = sum_{L > j} p_L` for `j = 0, ..., D_f - 1`,
      the probability that dimension `j` is kept (`m_0 = 1`).
    - Inference ("find the knee"): `L* = min{L : sum_{l <= L} p_l >=
      threshold}` from the noise-free `p` (clamped to `D_f` when rounding
      keeps the cumulative sum below a threshold of 1), hard mask
      `m_j = 1[j < L*]` (no gradient to the logits).

    `outputs = inputs * concat_f(m_f)`. The logits are float32 (no
    autocast); the mask is cast to the input dtype.

    Args:
        segment_sizes: non-empty list of int. Positive embedding width of
            each feature (a bare int is refused: widths go with names).
        segment_names: list of str. Distinct non-empty names, one per
            feature.
        threshold: finite float in `(0, 1]`. Cumulative probability of the
            knee. Defaults to `0.9`.
        temperature: finite float > 0. Softmax temperature. Defaults to
            `1.5`.
        use_gumbel: bool. Add Gumbel noise to the logits in training.
            Defaults to `True`.
        seed: int >= 0 or `None`. Seed of the Gumbel noise. Defaults to
            `None`.
        **kwargs: Args to pass to the base class.

    Inputs: `(batch, sum(segment_sizes))` or a list of `(batch, D_f)`;
    integer inputs are cast to the compute dtype and every call checks the
    widths again.
    Output: same shape. Weights: `length_logits_{f}` `[D_f]`, zeros-initialized,
    indexed by feature position.

    Example:

    ```python
    nas = keras_mtl.layers.SimpleNasLayer([4, 8], ["user", "item"])
    y = nas(np.random.rand(8, 12), training=True)  # (8, 12), soft masks
    ```

    References:
        - [Jang et al., 2017 (Gumbel-softmax)](https://arxiv.org/abs/1611.01144)
        - [Zhao et al., 2021 (AutoDim)](https://arxiv.org/abs/2006.14827)
    """

    def __init__(
        self,
        segment_sizes: Sequence[int],
        segment_names: Sequence[str],
        threshold: float = 0.9,
        temperature: float = 1.5,
        use_gumbel: bool = True,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.segment_sizes = _flat_sizes(segment_sizes)
        self.segment_names = _check_names(segment_names, len(self.segment_sizes))
        self.threshold = validation.in_range(
            "threshold", threshold, 0.0, 1.0, low_inclusive=False
        )
        self.temperature = validation.positive_float("temperature", temperature)
        self.use_gumbel = validation.boolean("use_gumbel", use_gumbel)
        self.seed = validation.seed("seed", seed)
        seed = self.seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape: Any) -> None:
        _check_input_shape(self, input_shape, self.segment_sizes)
        self.length_logits = self._add_logits("length_logits", self.segment_sizes)

    def mask_weights(self, training: bool | None = None) -> Any:
        """The float32 mask `concat_f(m_f)` `[sum D_f]`."""
        parts = []
        for logits_var, d in zip(self.length_logits, self.segment_sizes, strict=True):
            logits = ops.cast(logits_var, "float32")
            if training:
                if self.use_gumbel:
                    logits = logits + _gumbel((d,), self.seed_generator)
                p = ops.softmax(logits / self.temperature)
                # m_j = sum_{k >= j} p_k (reverse cumulative sum).
                parts.append(ops.flip(ops.cumsum(ops.flip(p, 0), axis=0), 0))
            else:
                p = ops.softmax(logits / self.temperature)
                below = ops.sum(
                    ops.cast(ops.less(ops.cumsum(p, axis=0), self.threshold), "int32")
                )
                length = ops.minimum(below + 1, d)
                positions = ops.arange(0, d, dtype="int32")
                parts.append(ops.cast(ops.less(positions, length), "float32"))
        return _concat(parts, axis=0)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "segment_sizes": list(self.segment_sizes),
                "segment_names": list(self.segment_names),
                "threshold": self.threshold,
                "temperature": self.temperature,
                "use_gumbel": self.use_gumbel,
                "seed": self.seed,
            }
        )
        return config
