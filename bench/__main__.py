"""`python -m bench [--out FILE]`: run the benchmarks on the current backend."""

from __future__ import annotations

import argparse
import os
import pathlib

import keras

from bench import core_layers
from bench import dcn
from bench import mmoe
from bench import moe
from bench import seq

SUITES = {
    "core": core_layers.run,
    "dcn": dcn.run,
    "mmoe": mmoe.run,
    "moe": moe.run,
    "seq": seq.run,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", choices=sorted(SUITES), action="append")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args()
    backend = keras.backend.backend()
    # Printed because it moves the results: see BENCH_MALLOC in noxfile.py.
    malloc = os.environ.get("GLIBC_TUNABLES") or "C library defaults"
    lines = [
        f"## {backend}",
        "",
        f"Allocator (`GLIBC_TUNABLES`): {malloc}",
        "",
        "| benchmark | baseline | baseline ms | keras_mtl ms | ratio |",
        "|---|---|---|---|---|",
    ]
    for name in args.suite or sorted(SUITES):
        for row in SUITES[name]():
            lines.append(
                f"| {row['benchmark']} | {row['baseline']} | "
                f"{row['baseline_ms']:.2f} | {row['ours_ms']:.2f} | "
                f"{row['ratio']:.2f} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or pathlib.Path("reports") / f"bench-{backend}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
