"""Shared, numerically careful building blocks used by several layers.

Everything here uses `keras.ops` only, so it runs on every backend, and is
written to stay finite on the edge cases the layers meet: zero-norm kernel
columns, fully masked rows, large logits.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

# Floor on the *squared* column norm in weight normalization (the reference
# library's `l2_normalize` convention, i.e. a 1e-3 floor on the norm).
WEIGHT_NORM_EPSILON = 1e-6


def column_norms(kernel: Any) -> Any:
    """L2 norm of each column (output unit) of a `[..., in, out]` kernel."""
    return ops.sqrt(ops.sum(ops.square(kernel), axis=-2))


def column_norm_initializer(kernel: Any) -> Any:
    """A Keras initializer giving the column norms of `kernel`'s current value.

    Weight-norm scales start here, so a freshly built layer computes what it
    would without normalization.
    """

    def initializer(shape: Any, dtype: Any = None) -> Any:
        return ops.cast(column_norms(kernel.value), dtype)

    return initializer


def weight_norm(
    kernel: Any, scale: Any | None = None, epsilon: float = WEIGHT_NORM_EPSILON
) -> Any:
    """Weight normalization (Salimans & Kingma, 2016) over the input axis.

    `K[:, j] = W[:, j] / sqrt(max(sum_i W[i, j]^2, epsilon)) * g[j]`

    Args:
        kernel: `[..., in, out]` tensor `W`.
        scale: optional `[..., out]` tensor `g`; unit columns when `None`.
        epsilon: floor on the squared column norm, so zero columns stay finite.

    Under mixed precision (a float16 or bfloat16 `kernel`) the normalization
    runs in float32 and the result is rounded once: a float16 sum of squares
    overflows for columns of norm above 256, and every intermediate rounding
    shows up in the outputs.
    """
    dtype = keras.backend.standardize_dtype(kernel.dtype)
    if dtype in ("float16", "bfloat16"):
        if scale is not None:
            scale = ops.cast(scale, "float32")
        normalized = weight_norm(ops.cast(kernel, "float32"), scale, epsilon)
        return ops.cast(normalized, dtype)
    squared = ops.sum(ops.square(kernel), axis=-2, keepdims=True)
    # One `[..., 1, out]` factor, then a single product with the kernel: the
    # backward then reduces over the kernel once (for the factor), not twice
    # (for the norm and for `g`). MMoE's stacked step on JAX: 194 -> 187 ms.
    factor = ops.rsqrt(ops.maximum(squared, epsilon))
    if scale is not None:
        factor = factor * ops.expand_dims(scale, axis=-2)
    return kernel * factor


def log_sigmoid(x: Any) -> Any:
    """Stable `log(sigmoid(x))` with the right gradient everywhere.

    Delegates to each backend's native log-sigmoid. The textbook split
    `-(relu(-x) + log1p(exp(-|x|)))` is stable in value but its gradient at
    `x = 0` depends on each backend's subgradient convention for `relu` and
    `abs` (TensorFlow returns 0 instead of 0.5); a spec case pins this.
    """
    return ops.log_sigmoid(x)


def real_mask(mask: Any) -> Any:
    """The library's one reading of a mask, as a bool tensor.

    A bool mask is used as it is. A numeric mask marks a real step or token
    where it is `>= 1` (the reference library's DIN rule), so a value such as
    `0.5` is padding, never a weight; every masked layer reads masks so.
    """
    mask = ops.convert_to_tensor(mask)
    if keras.backend.standardize_dtype(mask.dtype) == "bool":
        return mask
    return ops.greater_equal(ops.cast(mask, "float32"), 1.0)


def masked_softmax(logits: Any, mask: Any | None = None, axis: int = -1) -> Any:
    """Softmax over `axis` that ignores masked positions.

    Masked positions get probability 0; a row whose positions are all masked
    gives all zeros (not NaN).
    """
    if mask is None:
        return _softmax(logits, axis)
    mask = ops.cast(mask, "bool")
    dtype = keras.backend.standardize_dtype(logits.dtype)
    # -1e9 overflows float16; -3e4 is still exp-negligible there.
    very_negative = ops.cast(-3e4 if dtype == "float16" else -1e9, dtype)
    masked_logits = ops.where(mask, logits, very_negative)
    probs = _softmax(masked_logits, axis)
    return ops.where(mask, probs, ops.zeros_like(probs))


def _softmax(x: Any, axis: int) -> Any:
    """`ops.softmax`, except over an axis of static size 1 (a length-one
    sequence), where Keras warns on every call (under torch.compile the
    warning is a graph break). There the softmax is `exp(x - x)`: 1, and NaN
    where `x` is NaN or infinite, as `ops.softmax` gives."""
    if x.shape[axis] == 1:
        return ops.exp(ops.subtract(x, x))
    return ops.softmax(x, axis=axis)


def fill_like(x: Any, value: float) -> Any:
    """A tensor like `x` filled with the Python number `value`.

    `ops.zeros_like(x) + value`: a Python number enters only through the
    operator, as a scalar argument of one kernel. `ops.full_like`, and every
    `keras.ops` function given a Python number (`ops.where(c, x, -1)`,
    `ops.maximum(x, 1.0)`, `ops.less(x, 3)`), copies it to the device first on
    torch, which on a GPU waits for the whole stream to finish (a host sync).
    """
    return ops.zeros_like(x) + value


def one_hot(indices: Any, depth: int, dtype: str, axis: int = -1) -> Any:
    """Indicator of `indices` with a new class axis of size `depth` at `axis`
    (last by default); out-of-range indices (`-1` included) give zeros.

    One comparison against `arange(depth)` and a cast. `ops.one_hot` raises
    on torch for an index `>= depth`, and on torch it is five kernels (clamp,
    an int64 one-hot, `where`, a cast): 2.4 ms against 0.7 ms for `[8192]`
    indices and depth 64. XLA lowers both to the same comparison.
    `arange` gets an explicit start: jax2onnx (0.17) fails on
    `jnp.arange(depth)`, whose `stop` is `None`.
    """
    indices = ops.expand_dims(ops.cast(indices, "int32"), axis)
    shape = [1] * len(indices.shape)
    shape[axis] = depth
    classes = ops.reshape(ops.arange(0, depth, dtype="int32"), shape)
    return ops.cast(ops.equal(indices, classes), dtype)


def first_max_one_hot(x: Any, dtype: str) -> Any:
    """`one_hot(argmax(x, axis=-1))`: an indicator of the first maximum of
    the last axis (ties go to the lower index, as in `argmax`).

    Built from a maximum, a comparison and a cumulative sum so that every
    exporter can express it: ONNX `OneHot` rejects the rank-0 index that
    `argmax` of a vector gives, and Keras's JAX `argmax` tests the sign bit
    of zeros with a `BitCast`, which onnxruntime cannot run. A row holding
    NaN gives zeros.
    """
    # `amax`, not `max`: Keras's torch `max` tests for a `.values` field,
    # which breaks a torch.compile graph.
    is_max = ops.greater_equal(x, ops.amax(x, axis=-1, keepdims=True))
    count = ops.cumsum(ops.cast(is_max, "int32"), axis=-1)
    return ops.cast(ops.logical_and(is_max, ops.equal(count, 1)), dtype)


def cv_squared(x: Any, axis: int = -1, epsilon: float = 1e-10) -> Any:
    """Squared coefficient of variation `var(x) / (mean(x)^2 + epsilon)`.

    Uses the population variance; the balance loss of Shazeer et al. (2017).
    Written out as `mean((x - mean)^2)`: torch's `var` over a whole CPU
    tensor reads a value back to the host.
    """
    mean = ops.mean(x, axis=axis, keepdims=True)
    variance = ops.mean(ops.square(x - mean), axis=axis)
    return variance / (ops.square(ops.squeeze(mean, axis)) + epsilon)
