"""Backend-specific helpers for what `keras.ops` cannot express (autodiff)."""
