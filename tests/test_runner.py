"""The conformance runner itself: a wrong golden or a stale xfail fails the run."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "conformance",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--report-dir={tmp_path / 'report'}",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _copy_spec(tmp_path: pathlib.Path, name: str = "add_bias") -> pathlib.Path:
    specs = tmp_path / "specs"
    shutil.copytree(ROOT / "specs" / name, specs / name)
    return specs


def test_runner_passes_on_intact_goldens(tmp_path):
    specs = _copy_spec(tmp_path)
    proc = _run(f"--spec-dir={specs}", "-k", "rank2 and forward", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout
    assert (tmp_path / "report" / "results.json").exists()
    assert "add_bias" in (tmp_path / "report" / "matrix.md").read_text()


def test_a_corrupted_golden_number_fails_the_suite(tmp_path):
    specs = _copy_spec(tmp_path)
    golden_path = specs / "add_bias" / "golden.yaml"
    golden = yaml.safe_load(golden_path.read_text())
    outputs = golden["cases"]["rank2"]["forward"]["float32"]["outputs"]
    outputs[0][1][2] += 1e-3  # one number, well above the float32 tolerance
    golden_path.write_text(yaml.safe_dump(golden))
    proc = _run(f"--spec-dir={specs}", "-k", "rank2 and forward", tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stdout
    assert "add_bias/rank2/forward/float32" in proc.stdout
    assert "exceeds" in proc.stdout


def test_a_stale_spec_fails_with_the_command_to_run(tmp_path):
    specs = _copy_spec(tmp_path)
    spec_path = specs / "add_bias" / "spec.yaml"
    spec_path.write_text(spec_path.read_text().replace("seed: 201", "seed: 299"))
    proc = _run(f"--spec-dir={specs}", "-k", "rank2 and forward", tmp_path=tmp_path)
    assert proc.returncode == 1
    assert "nox -s goldens" in proc.stdout


def test_expected_failures_are_strict(tmp_path):
    specs = _copy_spec(tmp_path)
    expectations = tmp_path / "exp.yaml"
    expectations.write_text(
        yaml.safe_dump(
            [
                {
                    "match": "add_bias/rank2/forward/float32$",
                    "status": "xfail",
                    "reason": "deliberately wrong: this check passes",
                },
                {
                    "match": "no_such_layer/",
                    "status": "xfail",
                    "reason": "matches nothing",
                },
            ]
        )
    )
    proc = _run(
        f"--spec-dir={specs}",
        f"--expectations={expectations}",
        "-k",
        "rank2 and forward",
        tmp_path=tmp_path,
    )
    assert proc.returncode == 1
    assert "XPASS(strict)" in proc.stdout
    assert "'no_such_layer/'" in proc.stdout and "matched no test" in proc.stdout


def test_expectations_need_a_reason(tmp_path):
    expectations = tmp_path / "exp.yaml"
    expectations.write_text(yaml.safe_dump([{"match": "x", "status": "xfail"}]))
    proc = _run(f"--expectations={expectations}", "-k", "nothing", tmp_path=tmp_path)
    assert proc.returncode != 0
    assert "reason is required" in proc.stdout + proc.stderr
