"""keras_mtl: multi-task, mixture-of-experts and recommendation layers for Keras 3.

Pick the backend with `KERAS_BACKEND` (`tensorflow`, `jax` or `torch`) before
importing Keras.
"""

from keras_mtl import activations
from keras_mtl import distribution
from keras_mtl import layers
from keras_mtl import models
from keras_mtl.merge import merge_tensor_list
from keras_mtl.version import __version__

__all__ = [
    "__version__",
    "activations",
    "distribution",
    "layers",
    "merge_tensor_list",
    "models",
]
