"""The README's example runs as written on the current backend."""

from __future__ import annotations

import pathlib
import re

import keras

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_trains_and_saves(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    loaded = keras.saving.load_model(tmp_path / "tower.keras")
    assert len(loaded.weights) == len(namespace["model"].weights)
