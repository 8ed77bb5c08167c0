"""The keras_mtl conformance suite: specs, float64 references, goldens, runner."""
