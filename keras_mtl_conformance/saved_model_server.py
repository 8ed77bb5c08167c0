"""Loads SavedModels and runs their `serve` endpoint, as a serving process.

Started by the `export` check (`keras_mtl_conformance.export`). Reads JSON
lines `{"model": DIR, "inputs": NPZ, "outputs": NPZ}` on stdin and answers
each with `{"error": null}` or `{"error": "..."}` on stdout. It never
imports keras_mtl, and a SavedModel whose loading does is an error.
"""

from __future__ import annotations

import json
import sys


def _serve(request: dict[str, str]) -> None:
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(request["model"])
    with np.load(request["inputs"]) as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    result = loaded.serve(arrays if len(arrays) > 1 else arrays[0])
    flat = tf.nest.flatten(result)
    np.savez(request["outputs"], *[np.asarray(t) for t in flat])
    if "keras_mtl" in sys.modules:
        raise RuntimeError("loading the SavedModel imported keras_mtl")


def main() -> None:
    for line in sys.stdin:
        try:
            _serve(json.loads(line))
            answer = {"error": None}
        except Exception as err:  # reported to the check, which fails
            answer = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
