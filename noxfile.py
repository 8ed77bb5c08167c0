"""nox sessions for keras_mtl.

    nox -t conformance     # TF, JAX, torch + cross-backend .keras + the matrix
    nox -s tests           # lint, golden staleness, reference independence, unit tests
    nox -s goldens         # regenerate reference outputs (`-- --check` to verify)
    nox -s lint            # ruff
    nox -s bench           # benchmarks
    nox -s random_cross    # random weights and inputs, TF against JAX and torch
    nox -s installed       # the built wheel checks a user's layer outside the checkout

Each conformance venv holds only its backend, which also catches accidental
imports of another backend. Extra arguments after `--` go to pytest, e.g.
`nox -s "conformance(jax)" -- -k dense --device gpu`.
"""

from __future__ import annotations

import glob
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import nox

nox.needs_version = ">=2025.2.9"
# uv where it is installed (`pip install nox uv`): a venv with TensorFlow, JAX
# and torch takes about 25 s instead of pip's 90 s. Without uv, pip.
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

BACKENDS = ("tensorflow", "jax", "torch")
PYPROJECT = nox.project.load_toml("pyproject.toml")
CPU_ENV = {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu", "PYTHONHASHSEED": "0"}
# JAX compiles every eager op for each new shape (tens of ms each on a small
# CPU). A disk cache shared by the pytest workers and the sessions after them
# (the cross-backend loads repeat the conformance forwards) skips most of it.
JAX_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": str(pathlib.Path(".nox/jax-cache").resolve()),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}
# XLA's optimization passes are about a third of the compile time of those
# one-op programs, and buy nothing for them: without them the JAX conformance
# run takes about a quarter less time (381 s -> 293 s with two workers, same
# machine and commit). The conformance suite's compiled and grad checks still
# compile the jitted layer with every optimization
# (keras_mtl_conformance/adapters/jax_adapter.py). CPU only.
JAX_FAST_COMPILE = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
# XLA's CPU fusion emitters (MLIR) take much of the rest: with the older LLVM
# IR emitters a one-op compile takes about 33 ms of CPU instead of 55 ms, and
# JAX's eager MoE unit tests (test_moe: gradients of every dispatcher, top-k
# ties, NaN padding) 22 s instead of 37 s. The jitted checks switch them back
# on per compile (keras_mtl_conformance/adapters/jax_adapter.py). Set only
# where the installed XLA knows the flag: an unknown one aborts the process.
FUSION_EMITTERS_OFF = "--xla_cpu_use_fusion_emitters=false"
_PROBE = (
    "import subprocess, sys\n"
    "r = subprocess.run([sys.executable, '-c', 'import jax; jax.devices()'],"
    " capture_output=True)\n"
    "print('flag-ok' if r.returncode == 0 else 'flag-unknown')"
)
# One pytest worker per core (pytest-xdist), at most 8: the checks are small
# and mostly wait on single-threaded compilers (XLA, dynamo/inductor).
WORKERS = ("-n", "auto", "--maxprocesses=8")
# With a worker per core, each worker gets one OpenMP thread (torch's intra-op
# pool, Inductor's C++ kernels, OpenBLAS): more threads than cores wait on
# each other, spinning. Same machine, two workers, empty caches: torch unit
# tests 234 s -> 208 s (test_training 51 -> 21 s), torch conformance of MMoE
# and DCN 68 -> 64 s; JAX and TensorFlow unchanged. A value the caller set is
# kept.
ONE_THREAD = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
REPORTS = pathlib.Path("reports")
CROSS_DIR = pathlib.Path("artifacts/keras")


# uv reads its own settings, not pip's: the sources pip is configured with
# (a mirror, a folder holding the CPU build of torch, constraints) are handed
# to uv, so that both installers see the same packages.
_PIP_TO_UV = {
    "index-url": "UV_INDEX_URL",
    "extra-index-url": "UV_EXTRA_INDEX_URL",
    "find-links": "UV_FIND_LINKS",
    "constraint": "UV_CONSTRAINT",
    "cert": "SSL_CERT_FILE",
}


def _uv_env_from_pip() -> dict[str, str]:
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[str, str] = {}
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        scope, _, name = key.rpartition(".")
        # An environment variable (`:env:`) overrides pip's config files.
        if name in _PIP_TO_UV and (scope == ":env:" or name not in found):
            found[name] = value.strip("'\"")
    env = {}
    for name, value in found.items():
        if _PIP_TO_UV[name] not in os.environ:
            # pip separates find-links with spaces; uv with commas.
            env[_PIP_TO_UV[name]] = (
                ",".join(value.split()) if name == "find-links" else value
            )
    return env


# Bytecode at install time: otherwise every pytest worker compiles the
# backends' modules on first import (TensorFlow + JAX + torch: 17 s -> 7 s).
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")
# pip takes the best version from all its indexes; uv by default only looks
# at the first index that has a package (here jax2onnx 0.17.1 needs an
# orbax-checkpoint that only the second index holds, so uv fell back to
# 0.13.0).
os.environ.setdefault("UV_INDEX_STRATEGY", "unsafe-best-match")
os.environ.update(_uv_env_from_pip())


def _install(session: nox.Session, extras: str) -> None:
    session.install(
        "-e", f".[{extras}]", *nox.project.dependency_groups(PYPROJECT, "test")
    )


# glibc hands large freed blocks back to the OS (unmapped, or trimmed off the
# heap), so a step that allocates tens of MiB of activations page-faults them
# in again on every call. Keeping them in the heap measures the layers
# rather than the kernel's page faults: SparseMoE forward+backward (T=4096,
# E=64) on TensorFlow 294 -> 219 ms; JAX and torch gain less
# (bench/moe_results.md as of commit b3ec23c).
# A caller's own GLIBC_TUNABLES wins; other C libraries ignore the variable.
BENCH_MALLOC = (
    "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"
)


# Probe results by interpreter path, for this nox run: `cross_backend` asks
# about the environment `conformance(jax)` already probed.
_EMITTERS_FLAG_OK: dict[str, bool] = {}


def _fast_compile(session: nox.Session, python: str = "python") -> dict[str, str]:
    """`JAX_FAST_COMPILE`, plus `FUSION_EMITTERS_OFF` in `XLA_FLAGS` where the
    JAX of `python` (the session's own by default) accepts it (no JAX: not
    set)."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} {FUSION_EMITTERS_OFF}".strip()
    ok = _EMITTERS_FLAG_OK.get(python)
    if ok is None:
        probe = session.run(
            python,
            "-c",
            _PROBE,
            env={"XLA_FLAGS": flags, **CPU_ENV},
            silent=True,
            external=python != "python",
        )
        ok = isinstance(probe, str) and "flag-ok" in probe
        if python != "python":  # a bare "python" is each session's own
            _EMITTERS_FLAG_OK[python] = ok
    if ok:
        return {**JAX_FAST_COMPILE, "XLA_FLAGS": flags}
    return dict(JAX_FAST_COMPILE)


def _env(backend: str, fast: dict[str, str]) -> dict[str, str]:
    """The CPU environment of a run; `fast`: `_fast_compile(session)`, or
    nothing where compiles are timed or run on a GPU."""
    return {**CPU_ENV, **JAX_CACHE, **fast, "KERAS_BACKEND": backend}


def _pytest(
    session: nox.Session, *args: str, env: dict[str, str], python: str = "python"
) -> None:
    session.run(
        python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, env=env,
        external=python != "python",
    )  # fmt: skip


def _python_record(session: nox.Session, backend: str) -> pathlib.Path:
    """Where `conformance(backend)` notes its interpreter for `cross_backend`
    (nox's cache folder, shared by the sessions)."""
    return session.cache_dir / f"conformance-{backend}-python"


@nox.session(tags=["conformance"])
@nox.parametrize("backend", BACKENDS, ids=BACKENDS)
def conformance(session: nox.Session, backend: str) -> None:
    """The conformance suite on one backend (CPU unless `-- --device gpu`)."""
    # The exporters of the `export` check come with `export-<backend>`.
    _install(session, f"{backend},export-{backend}")
    # cross_backend loads on this backend in this environment.
    try:
        python = str(pathlib.Path(session.bin) / "python")
    except ValueError:  # no virtual environment (`nox --no-venv`)
        python = shutil.which("python") or sys.executable
    _python_record(session, backend).write_text(python)
    device = "gpu" if "gpu" in session.posargs else "cpu"
    cpu_jax = device == "cpu" and backend == "jax"
    fast = _fast_compile(session, python) if cpu_jax else {}
    env = _env(backend, fast)
    workers: tuple[str, ...] = WORKERS
    keep: tuple[str, ...] = ()
    if device == "gpu":
        for name in ("CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS"):
            env.pop(name)
        workers = ()  # one process per GPU
    else:
        # The keras_file checks keep their `.keras` files for cross_backend,
        # which loads them on every backend; stale files of an earlier run go.
        shutil.rmtree(CROSS_DIR / backend, ignore_errors=True)
        keep = (f"--save-keras-dir={CROSS_DIR}",)
        env.update(ONE_THREAD)
    _pytest(
        session,
        "keras_mtl_conformance",
        *workers,
        "-rfExX",
        f"--report-dir={REPORTS}/{backend}-{device}",
        f"--junitxml={REPORTS}/{backend}-{device}/junit.xml",
        *keep,
        "-o",
        f"junit_suite_name=keras_mtl-{backend}-{device}",
        *session.posargs,
        env=env,
    )


@nox.session(
    tags=["conformance"],
    venv_backend="none",
    requires=[f"conformance({b})" for b in BACKENDS],
)
def cross_backend(session: nox.Session) -> None:
    """Load the `.keras` files each backend's run saved on every backend (3x3)."""
    # Each backend loads in its own conformance environment, which holds only
    # that backend (as a user who saved on another backend may have it), and
    # no environment with all three is installed for it (about 20 s).
    for backend in BACKENDS:
        record = _python_record(session, backend)
        if not record.exists():
            session.error(f"no {record}: run `nox -s 'conformance({backend})'` first")
        python = record.read_text()
        fast = _fast_compile(session, python) if backend == "jax" else {}
        _pytest(
            session,
            "keras_mtl_conformance",
            *WORKERS,
            "-k",
            "cross_backend",
            f"--cross-dir={CROSS_DIR}",
            f"--report-dir={REPORTS}/xload-{backend}-cpu",
            *session.posargs,
            env={**_env(backend, fast), **ONE_THREAD},
            python=python,
        )


@nox.session(
    tags=["conformance"],
    venv_backend="none",
    requires=["cross_backend"],
)
def matrix(session: nox.Session) -> None:
    """Merge every results.json into reports/conformance.md and print it."""
    results = sorted(glob.glob(str(REPORTS / "*" / "results.json")))
    if not results:
        session.error("no reports/*/results.json: run `nox -t conformance` first")
    out = REPORTS / "conformance.md"
    session.run(
        sys.executable,
        "-m",
        "keras_mtl_conformance.report",
        *results,
        f"--out={out}",
        external=True,
    )


@nox.session
def tests(session: nox.Session) -> None:
    """Lint, golden staleness, reference independence and unit tests per backend."""
    _install(session, "all")
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("python", "-m", "keras_mtl_conformance.goldens", "--check")
    fast = _fast_compile(session)
    for i, backend in enumerate(BACKENDS):
        # Tests marked `backend_independent` (argument errors, the spec
        # format, the runner, docstrings) run under the first backend only.
        once = () if i == 0 else ("-m", "not backend_independent")
        _pytest(
            session,
            "tests",
            *WORKERS,
            *once,
            f"--junitxml={REPORTS}/tests-{backend}.xml",
            *session.posargs,
            env={**_env(backend, fast), **ONE_THREAD},
        )


@nox.session(default=False)
def random_cross(session: nox.Session) -> None:
    """Random weights and inputs on spec configurations, made on TensorFlow and
    checked on JAX and torch (`-- --count=N --seed=S`; default 400 samples)."""
    _install(session, "all")
    out = pathlib.Path(session.create_tmp()) / "random_cross"
    shutil.rmtree(out, ignore_errors=True)
    args = session.posargs or ["--count=400"]
    fast = _fast_compile(session)
    session.run(
        "python",
        "-m",
        "keras_mtl_conformance.random_cross",
        "make",
        f"--out={out}",
        *args,
        env=_env("tensorflow", fast),
    )
    for backend in ("jax", "torch"):
        session.run(
            "python",
            "-m",
            "keras_mtl_conformance.random_cross",
            "check",
            f"--out={out}",
            env=_env(backend, fast),
        )


@nox.session(venv_backend="none")
def installed(session: nox.Session) -> None:
    """The wheel, installed outside the checkout, checks a user's own layer."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="keras-mtl-installed-"))
    try:
        session.run(
            sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
            f"--wheel-dir={tmp / 'dist'}", ".", external=True,
        )  # fmt: skip
        wheel = next((tmp / "dist").glob("keras_mtl-*.whl"))
        session.run(sys.executable, "-m", "venv", str(tmp / "env"), external=True)
        python = str(tmp / "env" / "bin" / "python")
        session.run(
            python, "-m", "pip", "install", "-q", f"{wheel}[conformance,jax,torch]",
            external=True,
        )  # fmt: skip
        check = shutil.copy(pathlib.Path("tests/installed/check_user_flow.py"), tmp)
        # From a folder outside the checkout, so nothing of it is importable.
        with session.chdir(tmp):
            session.run(
                python, "-m", "pytest", "-q", "-p", "no:cacheprovider", check,
                env={**CPU_ENV, "PATH": f"{tmp / 'env' / 'bin'}:{os.environ['PATH']}"},
                external=True,
            )  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@nox.session
def goldens(session: nox.Session) -> None:
    """Regenerate the reference outputs (`nox -s goldens -- --check` to verify)."""
    # Only numpy, scipy and the YAML/schema readers: no deep-learning backend.
    session.install(*nox.project.dependency_groups(PYPROJECT, "goldens"))
    session.run("python", "-m", "keras_mtl_conformance.goldens", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS, ids=BACKENDS)
def bench(session: nox.Session, backend: str) -> None:
    """Benchmarks, reported as ratios against baselines measured in the same run."""
    _install(session, backend)
    session.install(*nox.project.dependency_groups(PYPROJECT, "bench"))
    os.makedirs(REPORTS, exist_ok=True)
    env = {
        # Timed code is compiled as users get it: no `_fast_compile`.
        **_env(backend, {}),
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", BENCH_MALLOC),
    }
    if "gpu" in session.posargs:  # `-- --suite moe --device gpu`
        env.pop("CUDA_VISIBLE_DEVICES")
        env.pop("JAX_PLATFORMS")
    session.run("python", "-m", "bench", *session.posargs, env=env)
