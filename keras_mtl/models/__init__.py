"""Models wiring keras_mtl layers into `model.fit`."""

from keras_mtl.models.grad_norm_model import GradNormModel

__all__ = ["GradNormModel"]
