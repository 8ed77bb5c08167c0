"""Float64 NumPy references for every spec'd layer.

Written from the source documents and papers, never from keras_mtl's code.
Modules here may import only the standard library, numpy, scipy and each
other; `tests/test_reference_independence.py` enforces it.

A reference is `fn(inputs, weights, config, training, **call_kwargs)` where
`inputs` is a list of float64/int arrays in the spec's input order, `weights`
maps weight paths (relative to the layer) to arrays, and `config` is the
spec case's constructor config. It returns a dict with `outputs` (a list of
arrays, in the order of the layer's flattened outputs), and optionally
`losses` (a list of scalars, in `layer.losses` order) and `updates`
(weight path -> new value of a non-trainable weight after the call).

Every call also gets the keyword `anchor` (the generator passes it to any
reference with `anchor` or `**kwargs`; those here all take `**_`): `None` for
forward outputs, and `(inputs, weights)` at the unperturbed point while the
golden generator takes finite differences. `stop_gradient(expr)` is `expr`
evaluated at the anchor (the current point when it is `None`).
"""
