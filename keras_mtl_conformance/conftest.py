"""pytest plumbing for the conformance suite.

Options: `--spec-dir DIR` (repeatable; default `specs/`), `--device cpu|gpu`,
`--report-dir DIR`, `--expectations FILE`. The backend comes from
`KERAS_BACKEND`. Nothing here imports Keras at module level: the device
environment must be set before a backend is imported.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import sys
import time
from typing import Any

import pytest

from keras_mtl_conformance import precision
from keras_mtl_conformance import report
from keras_mtl_conformance import spec as spec_lib
from keras_mtl_conformance import xdist_status
from keras_mtl_conformance.run_state import STATE as _STATE

EXPECTATIONS_DIR = pathlib.Path(__file__).resolve().parent / "expectations"
_RESULTS: dict[str, dict[str, Any]] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("keras_mtl conformance")
    group.addoption(
        "--spec-dir",
        action="append",
        default=None,
        help="directory of <layer>/spec.yaml files (repeatable)",
    )
    group.addoption(
        "--device",
        choices=("cpu", "gpu"),
        default="cpu",
        help="run on the CPU, or on the GPU (fails fast if unused)",
    )
    group.addoption(
        "--report-dir",
        default=None,
        help="where to write results.json and matrix.md "
        "(default reports/<backend>-<device>)",
    )
    group.addoption(
        "--cross-dir",
        default=None,
        help="directory of .keras files saved by `python -m "
        "keras_mtl_conformance.xbackend save`; enables cross_backend checks",
    )
    group.addoption(
        "--save-keras-dir",
        default=None,
        help="keep each keras_file check's .keras file and outputs under "
        "<dir>/<backend>/ for the cross_backend loads (what `python -m "
        "keras_mtl_conformance.xbackend save` writes)",
    )
    group.addoption(
        "--expectations",
        default=None,
        help="expected-failures file (default "
        "keras_mtl_conformance/expectations/<backend>[-gpu].yaml)",
    )


def backend_name() -> str:
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def _configure_device(device: str) -> None:
    backend = backend_name()
    if device == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        return
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    import keras

    # TF32 silently lowers float32 matmul precision on Ampere and newer.
    precision.pin_float32_matmuls(backend)
    if backend == "jax":
        import jax

        ok = jax.default_backend() == "gpu"
    elif backend == "torch":
        import torch

        ok = torch.cuda.is_available()
    else:
        import tensorflow as tf

        ok = bool(tf.config.list_physical_devices("GPU"))
    where = str(getattr(keras.ops.ones((2,)), "device", "")) if ok else ""
    if backend == "jax" and ok:
        where = str(list(keras.ops.ones((2,)).devices())[0])
    if not ok or not re.search("gpu|cuda", where, re.IGNORECASE):
        pytest.exit(
            f"--device gpu: the {backend} backend is not using a GPU "
            f"(tensor placed on '{where or 'cpu'}')",
            returncode=3,
        )
    _STATE["device_name"] = where


def pytest_configure(config: pytest.Config) -> None:
    device = config.getoption("--device")
    _configure_device(device)
    backend = backend_name()
    spec_dirs = config.getoption("--spec-dir")
    _STATE.update(
        backend=backend,
        device=device,
        started=time.time(),
        spec_dirs=spec_dirs,
        cross_dir=config.getoption("--cross-dir"),
        save_keras_dir=config.getoption("--save-keras-dir"),
    )
    report_dir = config.getoption("--report-dir") or f"reports/{backend}-{device}"
    _STATE["report_dir"] = pathlib.Path(report_dir)
    if not config.option.xmlpath and hasattr(config.option, "xmlpath"):
        config.option.xmlpath = str(_STATE["report_dir"] / "junit.xml")
    exp = config.getoption("--expectations")
    if exp is None:
        name = backend + ("-gpu" if device == "gpu" else "")
        exp = EXPECTATIONS_DIR / f"{name}.yaml"
    _STATE["expectations"] = _load_expectations(pathlib.Path(exp))


def _load_expectations(path: pathlib.Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    entries = spec_lib.safe_load(path.read_text()) or []
    if not isinstance(entries, list):
        raise pytest.UsageError(f"{path}: expected a list of entries")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) - {"match", "status", "reason"}:
            raise pytest.UsageError(f"{path}: entry {i} must have match/status/reason")
        if entry.get("status") not in ("xfail", "skip"):
            raise pytest.UsageError(f"{path}: entry {i}: status must be xfail or skip")
        if not entry.get("reason"):
            raise pytest.UsageError(f"{path}: entry {i}: a reason is required")
        entry["regex"] = re.compile(entry["match"])
        entry["path"] = str(path)
    return entries


def pytest_collection_finish(session: pytest.Session) -> None:
    # Keras and the backend are imported by now. Frozen, their hundreds of
    # thousands of long-lived objects are skipped by the collector's later
    # full passes.
    gc.freeze()


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    for item in items:
        test_id = getattr(item, "callspec", None) and item.callspec.id
        if not test_id:
            continue
        for entry in _STATE.get("expectations", []):
            if entry["regex"].search(test_id):
                if entry["status"] == "skip":
                    item.add_marker(pytest.mark.skip(reason=entry["reason"]))
                else:
                    item.add_marker(
                        pytest.mark.xfail(reason=entry["reason"], strict=True)
                    )


_RESULT_KEY = "keras_mtl_result"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    # The record rides on the report's user_properties, so that under
    # pytest-xdist it reaches the controller, which writes results.json.
    outcome = yield
    rep = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    if callspec is None or "case_check" not in callspec.params:
        return
    if rep.when == "call" or (rep.when == "setup" and rep.outcome != "passed"):
        props = dict(item.user_properties)
        status = rep.outcome
        if hasattr(rep, "wasxfail"):
            status = "xfail" if rep.outcome == "skipped" else "xpass-strict"
        if rep.outcome == "failed" and hasattr(rep, "wasxfail"):
            status = "xpass-strict"
        param = callspec.params["case_check"]
        record = {
            "id": callspec.id,
            "layer": param.layer,
            "case": param.case_id,
            "check": param.check,
            "policy": param.policy,
            "status": status,
            "max_err": props.get("max_err"),
            "tolerance": props.get("tolerance"),
            "override": props.get("override"),
            "message": (
                str(rep.longrepr).splitlines()[-1][:300]
                if rep.outcome == "failed" and rep.longrepr
                else None
            ),
        }
        rep.user_properties.append((_RESULT_KEY, record))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for key, value in report.user_properties:
        if key == _RESULT_KEY:
            _RESULTS[report.nodeid] = value


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _RESULTS or _is_xdist_worker(session.config):
        return
    # From the results, not from collection: under xdist only the workers
    # collect.
    unused = [
        e
        for e in _STATE.get("expectations", [])
        if not any(e["regex"].search(r["id"]) for r in _RESULTS.values())
    ]
    _STATE["unused_expectations"] = unused
    env = {
        "label": _STATE["report_dir"].name,
        "backend": _STATE["backend"],
        "device": _STATE["device"],
        "device_name": _STATE.get("device_name", platform.processor() or "cpu"),
        "keras": _version("keras"),
        "backend_version": _version(_STATE["backend"]),
        "python": platform.python_version(),
        "seconds": round(time.time() - _STATE["started"], 1),
        "unused_expectations": [e["match"] for e in unused],
    }
    out = _STATE["report_dir"]
    out.mkdir(parents=True, exist_ok=True)
    results = sorted(_RESULTS.values(), key=lambda r: r["id"])
    (out / "results.json").write_text(
        json.dumps({"env": env, "results": results}, indent=1)
    )
    (out / "matrix.md").write_text(report.render([{"env": env, "results": results}]))
    _STATE["summary"] = report.summary_lines(env, results)


def _version(module: str) -> str:
    """The version of an importable package, without importing it where it is
    not imported yet: under pytest-xdist the controller runs no check, and
    importing Keras and its backend there took 6 s at the end of every run."""
    if module in sys.modules:
        return str(getattr(sys.modules[module], "__version__", "unknown"))
    # The distribution may be named otherwise (`tensorflow-cpu`).
    for dist in importlib.metadata.packages_distributions().get(module, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = _STATE.get("summary")
    if not lines:
        return
    terminalreporter.section("keras_mtl conformance")
    for line in lines:
        terminalreporter.write_line(line)
    for entry in _STATE.get("unused_expectations", []):
        terminalreporter.write_line(
            f"WARNING: expectation '{entry['match']}' in {entry['path']} "
            "matched no test"
        )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case_check" not in metafunc.fixturenames:
        return
    from keras_mtl_conformance import collect

    params = collect.params(
        _STATE.get("spec_dirs"), _STATE.get("cross_dir"), _STATE.get("backend")
    )
    metafunc.parametrize("case_check", [p.param for p in params])


def pytest_sessionstart(session: pytest.Session) -> None:
    xdist_status.show_counts_when_quiet(session.config)
