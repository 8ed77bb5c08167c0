"""Renders conformance results as a layer x check x backend Markdown matrix."""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys
from typing import Any

ICON = {
    "passed": "✅",
    "failed": "❌",
    "xfail": "⚠️",
    "xpass-strict": "❌",
    "skipped": "⏭",
}


def _column(env: dict[str, Any]) -> str:
    return f"{env['backend']}-{env['device']}"


def _fmt_err(err: float | None) -> str:
    return "" if err is None else f" {err:.1e}"


def render(runs: list[dict[str, Any]]) -> str:
    """Markdown: a per-layer summary, then layer x check cells per backend."""
    columns = list(dict.fromkeys(_column(r["env"]) for r in runs))
    cells: dict[tuple[str, str], dict[str, list[dict]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for run in runs:
        col = _column(run["env"])
        for res in run["results"]:
            cells[(res["layer"], _check_label(res))][col].append(res)
    layers = sorted({k[0] for k in cells})
    lines = ["# keras_mtl conformance", ""]
    lines.append("| environment | keras | backend version | device | time (s) |")
    lines.append("|---|---|---|---|---|")
    for run in runs:
        env = run["env"]
        lines.append(
            f"| {env.get('label', _column(env))} | {env['keras']} | "
            f"{env['backend_version']} | {env['device_name']} | {env['seconds']} |"
        )
    # Per environment, the export checks get a column of their own.
    layer_columns = [
        (col, exported)
        for col in columns
        for exported in (False, True)
        if not exported
        or any(r["check"] == "export" for c in cells.values() for r in c.get(col, []))
    ]
    lines += [
        "",
        "## Layers",
        "",
        "| layer | "
        + " | ".join(f"{col} export" if ex else col for col, ex in layer_columns)
        + " |",
        "|---|" + "---|" * len(layer_columns),
    ]
    for layer in layers:
        row = [layer]
        for col, exported in layer_columns:
            results = [
                r
                for (lay, _), c in cells.items()
                if lay == layer
                for r in c.get(col, [])
                if (r["check"] == "export") == exported
            ]
            row.append(_cell(results))
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "## Layer x check (max abs error against the goldens)",
        "",
        "| layer | check | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for layer, check in sorted(cells):
        row = [layer, check]
        for col in columns:
            row.append(_cell(cells[(layer, check)].get(col, [])))
        lines.append("| " + " | ".join(row) + " |")
    failures = [
        (_column(run["env"]), r)
        for run in runs
        for r in run["results"]
        if r["status"] in ("failed", "xpass-strict")
    ]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- `{col}` `{r['id']}`: {r['message']}" for col, r in failures]
    overrides = sorted(
        {
            (r["id"].split("/")[0], r["override"])
            for run in runs
            for r in run["results"]
            if r.get("override")
        }
    )
    if overrides:
        lines += ["", "## Tolerance overrides", ""]
        lines += [f"- {layer}: {reason}" for layer, reason in overrides]
    return "\n".join(lines) + "\n"


def _check_label(res: dict[str, Any]) -> str:
    policy = res["policy"]
    if policy == "float32":
        return res["check"]
    if policy.startswith("from_"):
        return f"{res['check']} ({policy.replace('_', ' ')})"
    return f"{res['check']} ({policy})"


def _cell(results: list[dict[str, Any]]) -> str:
    """Pass counts, with the worst error among float32 (or only) results."""
    if not results:
        return "—"
    counts = collections.Counter(r["status"] for r in results)
    f32 = [r for r in results if r["policy"] == "float32"] or results
    errs = [r["max_err"] for r in f32 if r.get("max_err") is not None]
    worst = max(errs) if errs else None
    bad = counts["failed"] + counts["xpass-strict"]
    if bad:
        return f"❌ {bad}/{len(results)} failed"
    text = f"✅ {counts['passed']}/{len(results)}{_fmt_err(worst)}"
    if counts["xfail"]:
        text += f" ⚠️ {counts['xfail']} xfail"
    if counts["skipped"]:
        text += f" ⏭ {counts['skipped']}"
    return text


def summary_lines(env: dict[str, Any], results: list[dict[str, Any]]) -> list[str]:
    """A compact terminal matrix: one row per layer for one backend."""
    col = _column(env)
    by_layer: dict[str, list[dict]] = collections.defaultdict(list)
    for r in results:
        by_layer[r["layer"]].append(r)
    width = max(len(k) for k in [*by_layer, "layer"]) + 2
    lines = [f"{'layer':<{width}}{col}"]
    for layer in sorted(by_layer):
        lines.append(f"{layer:<{width}}{_cell(by_layer[layer])}")
    errs = [
        r["max_err"]
        for r in results
        if r.get("max_err") is not None
        and r["policy"] == "float32"
        and r["check"] == "forward"
    ]
    counts = collections.Counter(r["status"] for r in results)
    lines.append(
        f"{len(results)} checks: "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    )
    if errs:
        lines.append(f"largest float32 forward error vs goldens: {max(errs):.2e}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m keras_mtl_conformance.report reports/*/results.json [--out FILE]`.

    Prints the merged matrix and exits 1 if any check failed.
    """
    parser = argparse.ArgumentParser(description="merge conformance results")
    parser.add_argument("results", nargs="+", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    runs = [json.loads(p.read_text()) for p in args.results]
    runs.sort(key=lambda r: _column(r["env"]))
    text = render(runs)
    if args.out:
        args.out.write_text(text)
    sys.stdout.write(text)
    bad = sum(
        r["status"] in ("failed", "xpass-strict")
        for run in runs
        for r in run["results"]
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
