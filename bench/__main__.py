"""`python -m bench [--suite NAME] [--device {cpu,gpu}] [--out FILE]`: run the
benchmarks on the current backend.

`--device gpu` runs the GPU benchmark of the sparse mixture of experts
(`bench/moe_gpu.py`, JAX and torch; `--suite moe` is the only suite it has)
and writes `reports/bench-<backend>-gpu.md` (`-gpu-small.md` with `--small`).
"""

from __future__ import annotations

import argparse
import os
import pathlib

import keras

from bench import core_layers
from bench import dcn
from bench import mmoe
from bench import moe
from bench import moe_gpu
from bench import seq

SUITES = {
    "core": core_layers.run,
    "dcn": dcn.run,
    "mmoe": mmoe.run,
    "moe": moe.run,
    "seq": seq.run,
}
GPU_SUITES = ("moe",)
DTYPE_CHOICES = {"bfloat16": ("bfloat16",), "float32": ("float32",), "both": None}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--suite", choices=sorted(SUITES), action="append")
    p.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default="cpu",
        help="cpu: the CPU suites (default); gpu: the GPU MoE benchmark",
    )
    p.add_argument("--out", type=pathlib.Path, default=None)
    gpu = p.add_argument_group("with --device gpu")
    gpu.add_argument(
        "--small",
        action="store_true",
        help="a tiny size on whatever device there is, to check the code path",
    )
    gpu.add_argument(
        "--dtype", choices=sorted(DTYPE_CHOICES), help="default: both, one table each"
    )
    gpu.add_argument(
        "--with-dense",
        action="store_true",
        help="also time dispatcher='dense' (every expert on every token)",
    )
    gpu.add_argument(
        "--no-compile", action="store_true", help="leave out the torch.compile rows"
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked: `--device gpu` has the moe suite only, and
    the GPU options need `--device gpu`."""
    p = parser()
    args = p.parse_args(argv)
    if args.device == "gpu":
        others = sorted(set(args.suite or GPU_SUITES) - set(GPU_SUITES))
        if others:
            p.error(
                f"--device gpu runs only the moe suite (--suite moe); "
                f"not available on the GPU: {', '.join(others)}"
            )
        args.suite = list(GPU_SUITES)
    else:
        flags = {
            "--small": args.small,
            "--dtype": args.dtype is not None,
            "--with-dense": args.with_dense,
            "--no-compile": args.no_compile,
        }
        if any(flags.values()):
            given = ", ".join(flag for flag, on in flags.items() if on)
            p.error(f"{given}: only with --device gpu")
    args.dtype = args.dtype or "both"
    return args


def _gpu_rows(args: argparse.Namespace) -> list[dict]:
    try:
        return moe_gpu.run(
            device="gpu",
            small=args.small,
            dtypes=DTYPE_CHOICES[args.dtype] or moe_gpu.DTYPES,
            with_dense=args.with_dense,
            compiled=not args.no_compile,
        )
    except moe_gpu.UnavailableError as error:
        p = parser()
        p.exit(1, f"{p.prog}: error: {error}\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    backend = keras.backend.backend()
    # Printed because it moves the results: see BENCH_MALLOC in noxfile.py.
    malloc = os.environ.get("GLIBC_TUNABLES") or "C library defaults"
    title = backend
    if args.device == "gpu":
        title += ", --device gpu" + (" --small" if args.small else "")
    lines = [
        f"## {title}",
        "",
        f"Allocator (`GLIBC_TUNABLES`): {malloc}",
        "",
        "| benchmark | baseline | baseline ms | keras_mtl ms | ratio |",
        "|---|---|---|---|---|",
    ]
    if args.device == "gpu":
        rows = _gpu_rows(args)
    else:
        rows = [row for name in args.suite or sorted(SUITES) for row in SUITES[name]()]
    for row in rows:
        lines.append(
            f"| {row['benchmark']} | {row['baseline']} | "
            f"{row['baseline_ms']:.2f} | {row['ours_ms']:.2f} | "
            f"{row['ratio']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    # A `--small` run must not overwrite a real GPU report.
    suffix = {"cpu": "", "gpu": "-gpu-small" if args.small else "-gpu"}[args.device]
    out = args.out or pathlib.Path("reports") / f"bench-{backend}{suffix}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
