"""One test per (layer, case, check, policy); see `keras_mtl_conformance/collect.py`.

Checks: config_roundtrip, build, symbolic, forward (per dtype policy),
compiled, grad, keras_file, cross_backend and export. Each compares against goldens
generated from the float64 NumPy references.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

import keras
import numpy as np
import pytest

from keras_mtl_conformance import adapters
from keras_mtl_conformance import compare
from keras_mtl_conformance import export
from keras_mtl_conformance import goldens
from keras_mtl_conformance import harness
from keras_mtl_conformance import spec as spec_lib
from keras_mtl_conformance import xbackend
from keras_mtl_conformance.collect import CaseCheck
from keras_mtl_conformance.run_state import STATE


@functools.cache
def _golden(spec_path: str) -> dict[str, Any]:
    return goldens.read_fresh(spec_lib.load_spec(spec_path))


def _case_golden(case: spec_lib.Case) -> dict[str, Any]:
    return _golden(str(case.spec.path))["cases"][case.id]


def _record(request, **props: Any) -> None:
    for key, value in props.items():
        request.node.user_properties.append((key, value))


def _tol(cc: CaseCheck, check: str | None = None, policy: str = "float32"):
    return compare.tolerance(
        cc.case, check or cc.check, policy, STATE["backend"], STATE["device"]
    )


_LAST_CASE: list[str] = []


@pytest.fixture(autouse=True)
def _fresh_session(request):
    # clear_session is slow (about 0.25 s on TensorFlow); layer names are
    # explicit, so one clear per case keeps tests independent enough. Its
    # `gc.collect()` is skipped: the config_roundtrip, build and symbolic
    # checks took 37 s instead of 49 s on JAX, 25 s instead of 33 s on torch
    # (2 workers).
    keras.config.set_dtype_policy("float32")
    param = getattr(request.node, "callspec", None)
    case = param.params["case_check"].case.name if param else request.node.nodeid
    if [case] != _LAST_CASE:
        keras.utils.clear_session(free_memory=False)
        _LAST_CASE[:] = [case]
    yield


def test_spec(case_check: CaseCheck, request, tmp_path: pathlib.Path) -> None:
    check = globals()[f"check_{case_check.check}"]
    max_err = check(case_check, request, tmp_path)
    if max_err is not None:
        _record(request, max_err=max_err)


def _compare_outputs(
    cc: CaseCheck,
    outputs: Any,
    expected: dict[str, Any],
    tol: spec_lib.Tolerance,
    what: str,
) -> float:
    flat = harness.flatten(outputs)
    names = cc.case.spec.outputs
    want = expected["outputs"]
    if len(flat) != len(want):
        raise AssertionError(
            f"{what}: layer returned {len(flat)} outputs, the golden has {len(want)}"
        )
    worst = 0.0
    for i, (got, ref) in enumerate(zip(flat, want, strict=True)):
        name = names[i] if i < len(names) else f"output_{i}"
        worst = max(
            worst,
            compare.assert_close(f"{what} {name}", harness.to_numpy(got), ref, tol),
        )
    return worst


# --- checks ------------------------------------------------------------------


def check_config_roundtrip(cc: CaseCheck, request, tmp_path) -> None:
    case = cc.case
    layer = harness.make_layer(case)
    config = layer.get_config()
    for key in case.config:
        assert key in config, f"get_config() lost the argument '{key}'"
    cls = harness.layer_class(case.spec)
    clone = cls.from_config(config)
    dumped = json.dumps(config, sort_keys=True, default=str)
    assert json.dumps(clone.get_config(), sort_keys=True, default=str) == dumped, (
        "from_config(get_config()) does not reproduce the config"
    )
    serialized = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is cls
    assert json.dumps(restored.get_config(), sort_keys=True, default=str) == dumped


def check_build(cc: CaseCheck, request, tmp_path) -> None:
    case = cc.case
    layer = harness.make_layer(case)
    harness.build(layer, case)
    assert layer.built
    variables = harness.variables_by_path(layer)
    assert sorted(variables) == sorted(case.weights), (
        f"weight paths {sorted(variables)} != spec {sorted(case.weights)}"
    )
    for path, tensor in case.weights.items():
        var = variables[path]
        assert list(var.shape) == tensor["shape"], (
            f"weight '{path}': shape {tuple(var.shape)} != spec {tensor['shape']}"
        )
        want_trainable = tensor.get("trainable", True)
        assert var.trainable == want_trainable, (
            f"weight '{path}': trainable={var.trainable}, spec {want_trainable}"
        )


def check_symbolic(cc: CaseCheck, request, tmp_path) -> None:
    case = cc.case
    expected = _case_golden(case)["forward"]["float32"]
    layer = harness.make_layer(case)
    outputs = harness.flatten(harness.build(layer, case))
    shapes = expected["shapes"]
    assert len(outputs) == len(shapes), (
        f"symbolic call gave {len(outputs)} outputs, golden has {len(shapes)}"
    )
    for out, shape in zip(outputs, shapes, strict=True):
        got = tuple(out.shape)
        # The leading (batch) axis may be unknown; scalars have no axes.
        assert len(got) == len(shape) and got[1:] == tuple(shape[1:]), (
            f"symbolic output shape {got} does not match {tuple(shape)}"
        )
        assert not got or got[0] in (None, shape[0]), (
            f"symbolic output shape {got} does not match {tuple(shape)}"
        )
    if type(layer).compute_output_shape is not keras.layers.Layer.compute_output_shape:
        concrete = [tuple(t["shape"]) for t in case.inputs.values() if "kwarg" not in t]
        arg = concrete[0] if case.spec.call_format == "single" else concrete
        computed = layer.compute_output_shape(arg)
        flat_shapes = (
            [tuple(computed)]
            if all(isinstance(d, (int, type(None))) for d in computed)
            else [tuple(s) for s in computed]
        )
        assert flat_shapes == [tuple(s) for s in shapes], (
            f"compute_output_shape gave {flat_shapes}, expected {shapes}"
        )


def check_forward(cc: CaseCheck, request, tmp_path) -> float:
    case, policy = cc.case, cc.policy
    expected = _case_golden(case)["forward"][policy]
    tol = _tol(cc, policy=policy)
    _record(request, tolerance=[tol.rtol, tol.atol], override=tol.reason)
    layer = harness.ready_layer(case, policy)
    outputs = harness.call(layer, case, harness.concrete_inputs(case))
    worst = _compare_outputs(cc, outputs, expected, tol, f"[{policy}]")

    compute = spec_lib.COMPUTE_DTYPE[policy]
    for i, out in enumerate(harness.flatten(outputs)):
        dtype = keras.backend.standardize_dtype(out.dtype)
        if "float" in dtype:
            assert dtype == compute, f"output {i} has dtype {dtype}, policy {policy}"
    for var in layer.weights:
        if "float" in var.dtype:
            assert var.dtype == "float32", f"variable {var.path} is {var.dtype}"

    losses = [harness.to_numpy(v) for v in layer.losses]
    assert len(losses) == len(expected["losses"]), (
        f"layer added {len(losses)} losses, golden has {len(expected['losses'])}"
    )
    for name, got, want in zip(
        case.spec.losses, losses, expected["losses"], strict=True
    ):
        worst = max(worst, compare.assert_close(f"loss {name}", got, want, tol))
    variables = harness.variables_by_path(layer)
    for path, want in expected["updates"].items():
        got = harness.to_numpy(variables[path].value)
        worst = max(worst, compare.assert_close(f"updated {path}", got, want, tol))
    return worst


def check_compiled(cc: CaseCheck, request, tmp_path) -> float:
    case = cc.case
    expected = _case_golden(case)["forward"]["float32"]
    adapter = adapters.get(STATE["backend"])
    layer = harness.ready_layer(case)
    inputs = harness.concrete_inputs(case)
    compiled = adapter.compiled_call(layer, case, inputs)
    tol = _tol(cc)
    _record(request, tolerance=[tol.rtol, tol.atol], override=tol.reason)
    worst = _compare_outputs(cc, compiled, expected, tol, "[compiled]")
    # Compiled and eager on one backend must agree tightly.
    fresh = harness.ready_layer(case)
    eager = harness.call(fresh, case, inputs)
    same = compare.same_backend_tolerance()
    for i, (a, b) in enumerate(
        zip(harness.flatten(compiled), harness.flatten(eager), strict=True)
    ):
        compare.assert_close(
            f"compiled vs eager output {i}",
            harness.to_numpy(a),
            harness.to_numpy(b),
            same,
        )
    return worst


def check_grad(cc: CaseCheck, request, tmp_path) -> float:
    case = cc.case
    expected = _case_golden(case)["grad"]
    adapter = adapters.get(STATE["backend"])
    layer = harness.ready_layer(case)
    inputs = harness.concrete_inputs(case)
    names = list(case.inputs)
    float_names = case.float_inputs()
    float_idx = [names.index(n) for n in float_names]
    cots = [np.asarray(c, dtype=np.float32) for c in expected["cotangents"]]
    g_inputs, g_vars = adapter.vjp(layer, case, inputs, float_idx, cots)
    tol = _tol(cc)
    _record(request, tolerance=[tol.rtol, tol.atol], override=tol.reason)
    worst = 0.0
    for name, got in zip(float_names, g_inputs, strict=True):
        worst = max(
            worst,
            compare.assert_close(
                f"d/d input {name}", got, expected["inputs"][name], tol
            ),
        )
    paths = [harness.relative_path(layer, v) for v in layer.trainable_variables]
    assert sorted(paths) == sorted(expected["weights"]), (
        f"trainable weights {sorted(paths)} != golden {sorted(expected['weights'])}"
    )
    for path, got in zip(paths, g_vars, strict=True):
        worst = max(
            worst,
            compare.assert_close(
                f"d/d weight {path}", got, expected["weights"][path], tol
            ),
        )
    return worst


def check_keras_file(cc: CaseCheck, request, tmp_path) -> float:
    case = cc.case
    expected = _case_golden(case)["forward"]["float32"]
    # With --save-keras-dir the file is kept for the cross_backend loads.
    save_dir = STATE["save_keras_dir"]
    backend = STATE["backend"]
    keep = save_dir is not None and "cross_backend" in case.checks
    if keep:
        path = xbackend.model_file(save_dir, backend, case)
    else:
        path = tmp_path / "model.keras"
    model = harness.save_model(case, path)
    loaded = keras.saving.load_model(path)
    before = harness.weights_of(model)
    harness.assert_same_weights(harness.weights_of(loaded), before, "reloaded")
    inputs = harness.concrete_inputs(case)
    y0 = harness.run_model(model, case, inputs)
    if keep:
        xbackend.write_data(save_dir, backend, case, before, y0)
    y1 = harness.run_model(loaded, case, inputs)
    same = compare.same_backend_tolerance()
    for i, (a, b) in enumerate(
        zip(harness.flatten(y0), harness.flatten(y1), strict=True)
    ):
        compare.assert_close(
            f"reloaded output {i}", harness.to_numpy(b), harness.to_numpy(a), same
        )
    return _compare_outputs(cc, y1, expected, _tol(cc), "[reloaded]")


def check_cross_backend(cc: CaseCheck, request, tmp_path) -> float:
    saver = cc.policy.removeprefix("from_")
    root = pathlib.Path(STATE["cross_dir"])
    if not (root / saver).is_dir():
        # That backend saved nothing here (not installed, say); a missing
        # file of a backend that did save still fails.
        pytest.skip(
            f"no files saved on {saver} under {root}: run `KERAS_BACKEND={saver} "
            f"keras-mtl-conformance save --out {root}"
            f"{cc.case.spec.spec_dir_option}` first"
        )
    return xbackend.check_load(
        cc.case,
        saver,
        STATE["cross_dir"],
        _case_golden(cc.case)["forward"]["float32"],
        _tol(cc),
    )


def _call_with(layer, case: spec_lib.Case, inputs: list[Any], training: bool) -> list:
    first, kwargs = harness.call_args(layer, case, inputs)
    kwargs["training"] = training
    return [harness.to_numpy(o) for o in harness.flatten(layer(first, **kwargs))]


def check_stochastic(cc: CaseCheck, request, tmp_path) -> None:
    """Properties of random behaviour; no cross-backend goldens exist for it.

    Seeds give different streams on each backend, so values are not compared
    across backends: inference must be deterministic (and match the golden),
    training calls must vary, two layers built with the same seed must agree,
    and the fraction of exact zeros (dropout) must match its rate.
    """
    case = cc.case
    block = case.stochastic
    props = set(block.get("properties", []))
    samples = block.get("samples", 20)
    inputs = harness.concrete_inputs(case)
    layer = harness.ready_layer(case)
    if "inference_deterministic" in props:
        first = _call_with(layer, case, inputs, training=False)
        again = _call_with(layer, case, inputs, training=False)
        for a, b in zip(first, again, strict=True):
            np.testing.assert_array_equal(
                a, b, err_msg="inference is not deterministic"
            )
        if not case.training:
            expected = _case_golden(case)["forward"]["float32"]
            _compare_outputs(cc, first, expected, _tol(cc, "forward"), "[inference]")
    draws = [_call_with(layer, case, inputs, training=True) for _ in range(samples)]
    if "varies_in_training" in props:
        assert any(
            not np.array_equal(a, b) for a, b in zip(draws[0], draws[1], strict=True)
        ), "two training calls gave identical outputs: the noise does not advance"
    if "reproducible_with_seed" in props:
        twin = harness.ready_layer(case)
        fresh = harness.ready_layer(case)
        a = _call_with(twin, case, inputs, training=True)
        b = _call_with(fresh, case, inputs, training=True)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y, err_msg="same seed, different output")
    if "bounds" in block:
        low, high = block["bounds"]
        for draw in draws:
            for out in draw:
                assert np.all((out >= low) & (out <= high)), (
                    f"outputs leave [{low}, {high}]: {out.min()}..{out.max()}"
                )
    if "zero_fraction" in block:
        rate = block["zero_fraction"]
        values = np.concatenate([o.ravel() for draw in draws for o in draw])
        n = values.size
        observed = float(np.mean(values == 0.0))
        bound = 5.0 * np.sqrt(rate * (1.0 - rate) / n) + 1.0 / n
        _record(request, max_err=abs(observed - rate))
        assert abs(observed - rate) <= bound, (
            f"zero fraction {observed:.4f} over {n} values, expected {rate} "
            f"+- {bound:.4f}"
        )


def check_export(cc: CaseCheck, request, tmp_path) -> float:
    """The layer in a functional model, exported in the format `cc.policy`,
    run outside Keras against the golden (see `keras_mtl_conformance.export`)."""
    backend = STATE["backend"]
    missing = export.missing_modules(backend, cc.policy)
    if missing:
        pytest.skip(
            f"{cc.policy} export on {backend} needs {', '.join(missing)}: "
            "pip install 'keras-mtl[export]'"
        )
    entry = next(e for e in cc.case.spec.export if e.case.id == cc.case.id)
    _record(request, static_batch=entry.static_batch)
    expected = _case_golden(cc.case)["forward"]["float32"]
    tol = _tol(cc, "forward")
    _record(request, tolerance=[tol.rtol, tol.atol], override=tol.reason)
    model = export.model_for_export(entry)
    arrays = [harness.to_numpy(x) for x in harness.concrete_inputs(cc.case)]
    outputs = export.run_exported(cc.policy, model, entry, arrays, tmp_path)
    return _compare_outputs(cc, outputs, expected, tol, f"[{cc.policy}]")
