"""Every public layer refuses bad constructor arguments with a `ValueError`
naming the argument, walked from the `__init__` annotations, and takes an
empty batch.

A valid configuration of each layer comes from its conformance spec (the
first case whose layer is that class); each annotated argument is then given
values of the wrong type, out of range or non-finite, one at a time:

- `bool`: `2`, `"yes"` (and `None` unless the annotation allows it);
- `float`: NaN, infinity and the string `"1.0"`;
- `int`: `2.5`, `"3"` and `True`;
- `str` (a choice among names): a name no layer knows;
- initializers, regularizers and activations: an unknown name;
- lists of positive ints: `"3"` and `[-1]`.

Arguments with other annotations (nested lists, dicts, `Any`) are covered by
each layer's own tests.
"""

from __future__ import annotations

import inspect
import math

import pytest

import keras_mtl.layers
from keras_mtl_conformance import spec as spec_lib

NAN, INF = float("nan"), float("inf")
UNKNOWN = "no-such-name"
# Annotation (as written in the source) -> bad values.
BAD_VALUES = {
    "bool": [2, "yes", None],
    "float": [NAN, INF, "1.0"],
    "float | None": [NAN, INF, "1.0"],
    "int": [2.5, "3", True],
    "int | None": [2.5, "3", True],
    "str": [UNKNOWN],
    "str | None": [UNKNOWN],
    "list[int]": ["3", [-1]],
    "list[int] | None": ["3", [-1]],
    "int | list[int]": ["3", [-1]],
    "int | Sequence[int]": ["3", [-1]],
}
# Substrings of annotations that take a Keras object or its name.
BY_KIND = (("Initializer", [UNKNOWN]), ("Regularizer", [UNKNOWN]))


# Public classes without a spec of their own, with a valid configuration.
EXTRA_CONFIGS = {"AGRUCell": {"units": 3}}  # DIEN's spec runs the cell


def _public_layers() -> dict[str, type]:
    """Public layer classes by class name (aliases such as `FFM` once)."""
    classes = [getattr(keras_mtl.layers, name) for name in keras_mtl.layers.__all__]
    return {cls.__name__: cls for cls in classes if inspect.isclass(cls)}


def _valid_configs() -> dict[str, dict]:
    configs: dict[str, dict] = dict(EXTRA_CONFIGS)
    for spec in spec_lib.discover():
        name = spec.layer.rsplit(".", 1)[-1]
        if name not in configs and spec.cases:
            configs[name] = dict(spec.cases[0].config)
    return configs


def _bad_values(name: str, annotation: str) -> list:
    if annotation in BAD_VALUES:
        return BAD_VALUES[annotation]
    for kind, values in BY_KIND:
        if kind in annotation:
            return values
    if "ActivationLike" in annotation or name.startswith("activation"):
        return [UNKNOWN]
    return []


def _cases() -> list:
    configs = _valid_configs()
    cases = []
    for layer_name, cls in sorted(_public_layers().items()):
        params = inspect.signature(cls.__init__).parameters.values()
        for param in params:
            if param.name in ("self", "kwargs", "args"):
                continue
            annotation = str(param.annotation)
            for value in _bad_values(param.name, annotation):
                if value is None and "None" in annotation:
                    continue
                cases.append(
                    pytest.param(
                        cls,
                        configs.get(layer_name),
                        param.name,
                        value,
                        id=f"{layer_name}-{param.name}={value!r}",
                    )
                )
    return cases


@pytest.mark.backend_independent
def test_every_public_layer_has_a_spec_config():
    """The walk below needs one valid configuration per layer."""
    missing = sorted(set(_public_layers()) - set(_valid_configs()))
    assert not missing, f"no conformance spec for {missing}"


@pytest.mark.backend_independent  # constructor checks only
@pytest.mark.parametrize("cls, config, name, value", _cases())
def test_bad_constructor_argument_names_itself(cls, config, name, value):
    cls(**config)  # the base configuration is valid
    with pytest.raises(ValueError, match=f"`{name}`") as info:
        cls(**{**config, name: value})
    shown = "nan" if isinstance(value, float) and math.isnan(value) else repr(value)
    assert shown in str(info.value) or str(value) in str(info.value), info.value


# --- an empty batch ---------------------------------------------------------------


# Layers whose inputs have no batch axis.
NO_BATCH = {"grad_norm": "its inputs are one loss and one gradient norm per task"}


def _first_cases() -> list:
    seen, cases = set(), []
    for spec in spec_lib.discover():
        if spec.layer not in seen and spec.cases and spec.name not in NO_BATCH:
            seen.add(spec.layer)
            cases.append(pytest.param(spec.cases[0], id=spec.name))
    return cases


@pytest.mark.parametrize("case", _first_cases())
def test_an_empty_batch_gives_an_empty_output(case):
    """Every layer, with its spec's first configuration and batch size 0:
    outputs with batch size 0 and finite (empty) losses, on every backend."""
    import keras
    import numpy as np

    from keras_mtl_conformance import harness

    layer = harness.make_layer(case)
    harness.build(layer, case)
    arrays = {
        name: np.zeros((0, *value.shape[1:]), value.dtype)
        for name, value in case.input_arrays().items()
    }
    inputs = harness.concrete_inputs(case, arrays)
    outputs = harness.flatten(harness.call(layer, case, inputs))
    for output in outputs:
        assert tuple(output.shape)[0] == 0, (case.name, output.shape)
    for loss in layer.losses:
        assert np.isfinite(keras.ops.convert_to_numpy(loss)).all(), case.name
