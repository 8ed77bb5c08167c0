"""Full float32 matmuls on GPUs, for every check that compares numbers.

On Ampere and newer NVIDIA GPUs a float32 matmul may run in TF32 (a 10-bit
mantissa): JAX's default matmul precision does, and so do torch and
TensorFlow where TF32 is allowed. Two numeric paths (two dispatchers, a layer
and a float64 reference) then differ in the fourth digit (on an H200,
-1.63503 against -1.63477 in a test comparing dispatchers). Both the
conformance runner and the unit tests pin full float32 before any check; on a
CPU the settings change nothing.
"""

from __future__ import annotations


def pin_float32_matmuls(backend: str) -> None:
    """Turns TF32 off for `backend` ("jax", "torch" or "tensorflow")."""
    if backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "float32")
    elif backend == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
