"""`keras-mtl-conformance`: the conformance suite as a command.

    keras-mtl-conformance goldens --spec-dir my_specs            # write goldens
    keras-mtl-conformance goldens --spec-dir my_specs --check    # verify them
    KERAS_BACKEND=jax keras-mtl-conformance run --spec-dir my_specs [-n 2 ...]
    KERAS_BACKEND=jax keras-mtl-conformance save --spec-dir my_specs --out xb
    KERAS_BACKEND=torch keras-mtl-conformance load --spec-dir my_specs --cross-dir xb

`run` and `load` are pytest runs of the suite: arguments they do not know go
to pytest (`-k dense`, `-n 2`, `--device gpu`). The modules a spec names
(`layer:`, `reference:`) are imported from the current folder or from the
installed packages, as `python -m` would.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent


def _importable_cwd() -> None:
    # pytest-xdist workers are new processes: PYTHONPATH reaches them.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    paths = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = cwd + (os.pathsep + paths if paths else "")


def _spec_dir_args(spec_dirs: list[str] | None) -> list[str]:
    return [f"--spec-dir={d}" for d in spec_dirs or []]


def _pytest(args: list[str]) -> int:
    import pytest

    return int(
        pytest.main(
            [
                str(HERE / "test_conformance.py"),
                f"--rootdir={HERE}",
                "-p",
                "no:cacheprovider",
                *args,
            ]
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="keras-mtl-conformance", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    spec_help = "directory of <layer>/spec.yaml (repeatable; default specs/)"
    goldens_p = sub.add_parser("goldens", help="write (or --check) the goldens")
    goldens_p.add_argument("--check", action="store_true")
    goldens_p.add_argument("--layer", action="append", default=[])
    goldens_p.add_argument(
        "--jobs", type=int, help="processes computing the cases (default: one per CPU)"
    )
    run_p = sub.add_parser(
        "run", help="the checks on KERAS_BACKEND (other arguments go to pytest)"
    )
    save_p = sub.add_parser(
        "save", help="save every cross_backend case as .keras files under --out"
    )
    save_p.add_argument("--out", required=True)
    load_p = sub.add_parser(
        "load",
        help="load the files other backends saved under --cross-dir "
        "(other arguments go to pytest)",
    )
    load_p.add_argument("--cross-dir", required=True)
    for p in (goldens_p, run_p, save_p, load_p):
        p.add_argument("--spec-dir", action="append", default=None, help=spec_help)
    args, rest = parser.parse_known_args(argv)
    if rest and args.command in ("goldens", "save"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    _importable_cwd()
    spec_dirs = _spec_dir_args(args.spec_dir)
    if args.command == "goldens":
        from keras_mtl_conformance import goldens

        layers = [f"--layer={name}" for name in args.layer]
        jobs = [] if args.jobs is None else [f"--jobs={args.jobs}"]
        check = ["--check"] if args.check else []
        return goldens.main([*spec_dirs, *layers, *jobs, *check])
    if args.command == "save":
        from keras_mtl_conformance import xbackend

        return xbackend.main(["save", f"--out={args.out}", *spec_dirs])
    if args.command == "load":
        return _pytest(
            [*spec_dirs, f"--cross-dir={args.cross_dir}", "-k", "cross_backend", *rest]
        )
    return _pytest([*spec_dirs, *rest])


if __name__ == "__main__":
    sys.exit(main())
