"""Spec loading: schema validation and errors that name file, case and field."""

from __future__ import annotations

import pathlib
import textwrap

import pytest
import yaml

from keras_mtl_conformance import goldens
from keras_mtl_conformance import spec as spec_lib

# Spec loading and golden checks: no backend involved.
pytestmark = pytest.mark.backend_independent

GOOD = """\
schema_version: 1
layer: keras_mtl.layers.LayerNorm
reference: keras_mtl_conformance.reference.core:layer_norm
description: test spec
outputs: [y]
cases:
  - id: small
    config: {}
    inputs:
      x: {shape: [2, 3], generator: {kind: normal, seed: 1}}
    weights:
      gamma: {shape: [3], data: [1.0, 1.0, 1.0]}
      beta: {shape: [3], data: [0.0, 0.0, 0.0]}
"""


def _write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "my_layer" / "spec.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_good_spec_loads(tmp_path):
    spec = spec_lib.load_spec(_write(tmp_path, GOOD))
    assert spec.name == "my_layer"
    assert spec.cases[0].input_arrays()["x"].shape == (2, 3)


def test_every_repo_spec_is_valid():
    specs = spec_lib.discover()
    assert len(specs) >= 10
    for spec in specs:
        assert len(spec.cases) >= 3, f"{spec.name} needs at least 3 cases"
        assert any(
            any(t["shape"][0] == 1 for t in c.inputs.values()) for c in spec.cases
        ), f"{spec.name} has no batch-size-1 case"


@pytest.mark.parametrize(
    ("old", "new", "case", "field"),
    [
        ("seed: 1}", "seed: -1}", "small", "inputs.x.generator.seed"),
        (
            "shape: [3], data: [1.0, 1.0, 1.0]",
            "shape: [3], data: [1.0]",
            "small",
            "weights.gamma",
        ),
        (
            "config: {}",
            "config: {}\n    checks: [forward, telepathy]",
            "small",
            "checks.1",
        ),
        (
            "config: {}",
            "config: {}\n    tolerance: [{rtol: 1.0e-3}]",
            "small",
            "tolerance.0",
        ),
        ("id: small", "id: Small Case", "Small Case", "id"),
    ],
)
def test_errors_name_file_case_and_field(tmp_path, old, new, case, field):
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(spec_lib.SpecError) as err:
        spec_lib.load_spec(path)
    message = str(err.value)
    assert str(path) in message
    assert f"case '{case}'" in message
    assert f"field '{field}'" in message


def test_exponent_without_dot_gets_a_hint(tmp_path):
    path = _write(
        tmp_path,
        GOOD.replace(
            "config: {}",
            "config: {}\n    tolerance: [{rtol: 1e-3, reason: a long enough reason}]",
        ),
    )
    with pytest.raises(spec_lib.SpecError, match="write 1.0e-3"):
        spec_lib.load_spec(path)


def test_duplicate_case_ids(tmp_path):
    case = GOOD[GOOD.index("  - id: small") :]
    path = _write(tmp_path, GOOD + case)
    with pytest.raises(spec_lib.SpecError, match="duplicate case id"):
        spec_lib.load_spec(path)


def test_unknown_layer_path_is_a_clear_error(tmp_path):
    path = _write(tmp_path, GOOD.replace("layers.LayerNorm", "layers.NoSuchLayer"))
    spec = spec_lib.load_spec(path)
    with pytest.raises(
        spec_lib.SpecError, match="field 'layer'.*has no attribute 'NoSuchLayer'"
    ):
        spec_lib.resolve(spec.layer, spec.path, "layer")


def test_unknown_reference_module(tmp_path):
    path = _write(tmp_path, GOOD.replace("reference.core:", "reference.nope:"))
    spec = spec_lib.load_spec(path)
    with pytest.raises(spec_lib.SpecError, match="cannot import module.*reference"):
        spec.reference_fn()


def test_invalid_yaml(tmp_path):
    path = _write(tmp_path, "cases: [unclosed")
    with pytest.raises(spec_lib.SpecError, match="invalid YAML"):
        spec_lib.load_spec(path)


def test_generators_are_stable():
    # Legacy RandomState streams are frozen across NumPy versions.
    x = spec_lib.materialize({"shape": [3], "generator": {"kind": "normal", "seed": 0}})
    assert x.tolist() == pytest.approx([1.7640524, 0.4001572, 0.9787380], abs=1e-6)


def test_bfloat16_rounding_is_round_to_nearest_even():
    import numpy as np

    x = np.array([1.0, 1.00390625, 1.01171875, 3.14159265, -2.5e-3])
    np.testing.assert_array_equal(
        spec_lib.round_to(x, "bfloat16"),
        [1.0, 1.0, 1.015625, 3.140625, -0.00250244140625],
    )


def test_golden_check_detects_a_stale_spec(tmp_path):
    path = _write(tmp_path, GOOD)
    spec = spec_lib.load_spec(path)
    goldens.write(spec, goldens.generate(spec))
    assert goldens.check(spec) is None
    path.write_text(GOOD.replace("seed: 1}", "seed: 2}"))
    reason = goldens.check(spec_lib.load_spec(path))
    assert reason is not None and "changed" in reason
    assert goldens.main(["--check", f"--spec-dir={tmp_path}"]) == 1


def test_golden_check_detects_an_edited_value(tmp_path):
    path = _write(tmp_path, GOOD)
    spec = spec_lib.load_spec(path)
    goldens.write(spec, goldens.generate(spec))
    golden = spec.golden_path.read_text()
    first = golden.index("outputs:")
    number_at = golden.index("[", golden.index("- -", first)) + 1
    end = golden.index(",", number_at)
    spec.golden_path.write_text(golden[:number_at] + "0.125" + golden[end:])
    assert "differ" in goldens.check(spec)


TWO_CASES = (
    GOOD
    + """\
  - id: one_row
    config: {epsilon: 0.01}
    inputs:
      x: {shape: [1, 3], generator: {kind: normal, seed: 7}}
    weights:
      gamma: {shape: [3], data: [0.5, 1.0, 2.0]}
      beta: {shape: [3], data: [0.0, 0.1, 0.0]}
"""
)


def test_goldens_computed_in_worker_processes_equal_the_serial_ones(tmp_path):
    # Each case's entry (outputs and finite-difference gradients) must come
    # back under its own id, bit for bit.
    spec = spec_lib.load_spec(_write(tmp_path, TWO_CASES))
    serial = goldens.generate(spec)
    assert serial["cases"]["small"] != serial["cases"]["one_row"]
    assert goldens.generate_many([spec], jobs=2) == [serial]


A_LOSS_NOT_IN_THE_SPEC = """\
def with_loss(inputs, weights, config, training, **_):
    return {"outputs": [inputs[0]], "losses": [1.0]}
"""


def test_a_spec_error_in_a_worker_process_is_reported(tmp_path, monkeypatch, capsys):
    (tmp_path / "with_loss_ref.py").write_text(A_LOSS_NOT_IN_THE_SPEC)
    monkeypatch.syspath_prepend(str(tmp_path))  # the workers get this path
    text = TWO_CASES.replace(
        "keras_mtl_conformance.reference.core:layer_norm", "with_loss_ref:with_loss"
    )
    _write(tmp_path, text)
    assert goldens.main([f"--spec-dir={tmp_path}", "--jobs=2"]) == 2
    err = capsys.readouterr().err
    assert "reference returned 1 losses, spec names 0" in err
    assert "case 'small', field 'losses'" in err


def test_goldens_jobs_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        goldens.main(["--check", "--jobs=0"])
    assert "Received: --jobs=0" in capsys.readouterr().err


def test_golden_check_allows_finite_difference_noise_in_gradients_only():
    # Another CPU's BLAS moves a central difference by ~1e-9; outputs repeat.
    def case(output, grad):
        return {
            "c": {"forward": {"outputs": [output]}, "grad": {"weights": {"k": grad}}}
        }

    stored = case([1.0, 2.0], [3.0])
    excess = goldens._max_diff(case([1.0, 2.0], [3.0 + 2e-8]), stored)[0]
    assert excess < 1
    excess, _, where = goldens._max_diff(case([1.0, 2.0], [3.0 + 4e-6]), stored)
    assert excess > 1 and where == "/c/grad/weights/k"
    excess, _, where = goldens._max_diff(case([1.0, 2.0 + 2e-8], [3.0]), stored)
    assert excess > 1 and where == "/c/forward/outputs"


def test_a_tolerance_override_may_give_only_rtol(tmp_path):
    text = GOOD.replace(
        "config: {}",
        "config: {}\n    tolerance: [{rtol: 1.0e-3, reason: a long enough reason}]",
    )
    case = spec_lib.load_spec(_write(tmp_path, text)).cases[0]
    tol = case.tolerance("forward", "float32", "jax", "cpu")
    assert (tol.rtol, tol.atol) == (1.0e-3, None)


def test_export_defaults_to_the_first_inference_case(tmp_path):
    train = GOOD.replace("  - id: small", "  - id: train\n    call: {training: true}")
    spec = spec_lib.load_spec(_write(tmp_path, train + GOOD[GOOD.index("  - id") :]))
    assert [(e.case.id, e.static_batch) for e in spec.export] == [("small", None)]


@pytest.mark.parametrize(
    "entry, match",
    [
        ("- case: missing", "no case 'missing'"),
        ("- case: train", "must have a `forward` check and not train"),
        ("- {case: small, static_batch: why}", "too short"),
    ],
)
def test_bad_export_entries_name_the_field(tmp_path, entry, match):
    case = GOOD[GOOD.index("  - id: small") :].replace(
        "id: small", "id: train\n    call: {training: true}"
    )
    text = GOOD.replace("cases:\n", f"export:\n  {entry}\ncases:\n") + case
    with pytest.raises(spec_lib.SpecError, match=f"field 'export'.*{match}|{match}"):
        spec_lib.load_spec(_write(tmp_path, text))


def test_the_fast_loader_reads_what_yaml_safe_load_reads_and_nothing_unsafe():
    # libyaml's parser where PyYAML has it: the same values, the same refusal
    # of Python object tags.
    spec = spec_lib.find("sparse_moe")
    for path in (spec.path, spec.golden_path):
        text = path.read_text()
        assert spec_lib.safe_load(text) == yaml.safe_load(text)
    with pytest.raises(yaml.YAMLError, match="python/object"):
        spec_lib.safe_load("!!python/object/apply:os.system ['true']")
    with pytest.raises(yaml.YAMLError):
        spec_lib.safe_load("a: [1, 2")
