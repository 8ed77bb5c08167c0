"""The options of an MLP's layers, shared by `MLP` and the expert layers.

`MLP`, `MMoE`, `CGC` and `PLE` take the same constructor arguments for the
dense layers of their MLPs (regularizers, weight norm, bias) and, for `MLP`
and `MMoE`, for batch normalization. One `MLPOptions` object checks them,
builds the sub-layers' arguments from them and serializes them, and the
layers expose its fields as read-only attributes (`layer.use_bias`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras

from keras_mtl import validation
from keras_mtl.layers.core.batch_norm import BatchNormalization

# The options of the dense layers (every layer that builds MLPs takes these).
DENSE_OPTIONS = (
    "kernel_regularizer",
    "use_weight_norm",
    "use_learnable_weight_norm",
    "use_bias",
    "bias_regularizer",
)
# Batch normalization between the layers (`MLP` and `MMoE` take these too).
BATCH_NORM_OPTIONS = (
    "enable_batch_normalization",
    "batch_normalization_momentum",
    "batch_normalization_renorm",
    "batch_normalization_renorm_clipping",
    "batch_normalization_renorm_momentum",
)


@dataclasses.dataclass(frozen=True, eq=False)
class MLPOptions:
    """Checked MLP options; see `MLP`'s `Args:` for each field's meaning."""

    kernel_regularizer: keras.regularizers.Regularizer | None = None
    use_weight_norm: bool = True
    use_learnable_weight_norm: bool = True
    use_bias: bool = True
    bias_regularizer: keras.regularizers.Regularizer | None = None
    enable_batch_normalization: bool = False
    batch_normalization_momentum: float = 0.99
    batch_normalization_renorm: bool = False
    batch_normalization_renorm_clipping: dict[str, float] | None = None
    batch_normalization_renorm_momentum: float = 0.99

    @classmethod
    def checked(cls, **options: Any) -> MLPOptions:
        """Validates the given options (`ValueError` naming the argument);
        the ones not given keep their defaults."""
        unknown = set(options) - set(DENSE_OPTIONS + BATCH_NORM_OPTIONS)
        if unknown:
            raise TypeError(f"Unknown MLP options: {sorted(unknown)}")
        checked: dict[str, Any] = {}
        for name, value in options.items():
            if name.endswith("_regularizer"):
                checked[name] = validation.regularizer(name, value)
            elif name.endswith("_momentum"):
                checked[name] = validation.in_range(name, value, 0.0, 1.0)
            elif name == "batch_normalization_renorm_clipping":
                checked[name] = _renorm_clipping(value)
            else:
                checked[name] = validation.boolean(name, value)
        return cls(**checked)

    def dense_kwargs(self) -> dict[str, Any]:
        """Arguments of each `Dense` (or `StackedDense`) layer of the MLP."""
        return {
            "use_bias": self.use_bias,
            "kernel_regularizer": self.kernel_regularizer,
            "bias_regularizer": self.bias_regularizer,
            "allow_kernel_norm": self.use_weight_norm,
            "kernel_norm_trainable": self.use_learnable_weight_norm,
        }

    def batch_norm(self, name: str, dtype: Any) -> BatchNormalization | None:
        """A batch-normalization layer, or None when it is disabled."""
        if not self.enable_batch_normalization:
            return None
        return BatchNormalization(
            momentum=self.batch_normalization_momentum,
            renorm=self.batch_normalization_renorm,
            renorm_clipping=self.batch_normalization_renorm_clipping,
            renorm_momentum=self.batch_normalization_renorm_momentum,
            dtype=dtype,
            name=name,
        )

    def kwargs(self, names: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The options as `MLP.__init__` takes them (all, or `names`)."""
        names = DENSE_OPTIONS + BATCH_NORM_OPTIONS if names is None else names
        return {name: getattr(self, name) for name in names}

    def config(self, names: tuple[str, ...] | None = None) -> dict[str, Any]:
        """`kwargs(names)` with the regularizers serialized, for `get_config`."""
        config = self.kwargs(names)
        for name in ("kernel_regularizer", "bias_regularizer"):
            if name in config:
                config[name] = keras.regularizers.serialize(config[name])
        return config


class _Option:
    """Read-only attribute reading a field of the layer's `mlp_options`."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, layer: Any, owner: type | None = None) -> Any:
        if layer is None:
            return self
        return getattr(layer.mlp_options, self.name)


class DenseOptionAttributes:
    """Mixin exposing `mlp_options`' dense-layer options as attributes."""

    kernel_regularizer = _Option()
    use_weight_norm = _Option()
    use_learnable_weight_norm = _Option()
    use_bias = _Option()
    bias_regularizer = _Option()


class MLPOptionAttributes(DenseOptionAttributes):
    """Mixin exposing all of `mlp_options` as attributes."""

    enable_batch_normalization = _Option()
    batch_normalization_momentum = _Option()
    batch_normalization_renorm = _Option()
    batch_normalization_renorm_clipping = _Option()
    batch_normalization_renorm_momentum = _Option()


def _renorm_clipping(value: Any) -> dict[str, float] | None:
    name = "batch_normalization_renorm_clipping"
    if value is None:
        return None
    expected = (
        f"`{name}` must be None or a dict with keys among 'rmax', 'rmin', "
        "'dmax' and values None or numbers >= 0 (not NaN), with rmin <= rmax."
    )
    if not isinstance(value, dict) or set(value) - {"rmax", "rmin", "dmax"}:
        raise ValueError(f"{expected} Received: {name}={value!r}")
    for v in value.values():
        if v is not None and (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or math.isnan(v)
            or v < 0
        ):
            raise ValueError(f"{expected} Received: {name}={value!r}")
    rmin, rmax = value.get("rmin"), value.get("rmax")
    if rmin is not None and rmax is not None and rmin > rmax:
        raise ValueError(f"{expected} Received: {name}={value!r}")
    return dict(value)
