"""Helpers shared by the unit tests: NumPy views, config round trips,
gradients on the current backend, and the learnable-task fit check."""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np
import pytest

from keras_mtl_conformance import adapters

BACKEND = keras.backend.backend()


def only(backend: str) -> pytest.MarkDecorator:
    """Skips the test unless Keras runs on `backend`."""
    return pytest.mark.skipif(backend != BACKEND, reason=f"{backend}-only test")


def to_numpy(x: Any) -> np.ndarray:
    """A backend tensor (or variable, or NumPy value) as a NumPy array."""
    return np.asarray(keras.ops.convert_to_numpy(x))


def bad_arguments(table: Iterable[tuple[type, dict, str, list]]) -> list[Any]:
    """pytest params `(cls, config, name, value)`, one per bad value of each
    `(cls, valid base config, argument name, bad values)` row of `table`."""
    return [
        pytest.param(cls, config, name, value, id=f"{cls.__name__}-{name}={value!r}")
        for cls, config, name, values in table
        for value in values
    ]


def assert_bad_argument_named(
    cls: type, config: dict, name: str, value: Any, received: str = "{name}="
) -> None:
    """`cls(**config)` is valid; with `name=value` it raises a `ValueError`
    naming the argument and showing what it received: `received` (a regex,
    `{name}` filled in) follows "Received: "."""
    cls(**config)
    shown = received.format(name=name)
    with pytest.raises(ValueError, match=rf"(?s)`{name}`.*Received: {shown}"):
        cls(**{**config, name: value})


def _dumped(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def config_round_trip(
    layer: keras.layers.Layer, expected: Iterable[str] = ()
) -> keras.layers.Layer:
    """`from_config(get_config())` and `deserialize(serialize(layer))` both
    reproduce `layer`'s config (equal, and equal once dumped to JSON, where
    `1` and `1.0` differ); every name in `expected` is in it. Returns the
    `from_config` clone."""
    config = layer.get_config()
    for key in expected:
        assert key in config, key
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    assert _dumped(clone.get_config()) == _dumped(config)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(restored) is type(layer)
    assert _dumped(restored.get_config()) == _dumped(config)
    return clone


def value_and_gradients(
    fn: Callable[..., Any], *args: Any, compiled: bool = False
) -> tuple[float, list[np.ndarray]]:
    """The scalar `fn(*args)` and its gradients with respect to each of `args`
    (NumPy arrays or backend tensors), as NumPy, by the backend's autodiff
    (`keras_mtl_conformance.adapters`); under its compiler (`jax.jit`, XLA
    `tf.function`, `torch.compile`) when `compiled`. A gradient that does not
    reach an argument is zeros. Differentiate a layer's weights by passing
    their values and calling `layer.stateless_call` inside `fn`."""
    backend = adapters.get(keras.backend.backend())
    return backend.value_and_gradients(fn, list(args), compiled=compiled)


def gradients(fn: Callable[..., Any], *args: Any) -> list[np.ndarray]:
    """`value_and_gradients(fn, *args)` without the value, eagerly."""
    return value_and_gradients(fn, *args)[1]


class _StepLosses(keras.callbacks.Callback):
    """Each training step's loss, from the batch logs (which hold the
    epoch's running mean of the loss)."""

    def on_train_begin(self, logs=None):
        self.means = []

    def on_train_batch_end(self, batch, logs=None):
        self.means.append(float(logs["loss"]))

    def losses(self) -> np.ndarray:
        sums = np.arange(1, len(self.means) + 1) * np.asarray(self.means, "float64")
        return np.diff(sums, prepend=0.0)


def assert_loss_falls(
    make: Callable[[], tuple[keras.Model, keras.layers.Layer]],
    data: list[np.ndarray],
    *,
    steps: int = 100,
    learning_rate: float = 0.02,
    loss: Any = "mse",
    weights_move: str = "all",
    ratio: float = 0.5,
    tail: int = 10,
) -> None:
    """Trains `make()`'s model with Adam in `model.fit` on a learnable task and
    asserts that its training loss falls below `ratio` times its first value.

    `make` builds `(model, layer under test)`. The targets are a teacher's
    outputs: `make()` again under another seed (every Keras layer and
    initializer draws from `keras.utils.set_random_seed`), so the student can
    represent them; `predict` gives one `(n, 1)` array per output, each
    standardized here (mean 0, variance 1). `fit` runs `steps` full-batch
    steps (the data repeated in one epoch: on TensorFlow each epoch costs
    tens of ms). The loss is fit's own (the compiled losses, `add_loss` terms
    and regularization, or the model's `compute_loss`; in training mode):
    the first step's, at the initial weights, against the mean of the last
    `tail` steps'. With `learning_rate=0` every case fails.

    `loss`: each output's compiled loss; None for a model with its own
    `compute_loss`. `weights_move`: "all" or "any" of the layer's trainable
    weights must have changed (a layer without weights checks nothing).
    """
    n = len(data[0])
    x = data if len(data) > 1 else data[0]
    keras.utils.set_random_seed(1)
    teacher, _ = make()
    targets = teacher.predict(x, batch_size=n, verbose=0)
    targets = targets if isinstance(targets, list) else [targets]
    for t in targets:
        assert t.shape == (n, 1), t.shape
        assert t.std() > 1e-3, "the teacher's output is constant"
    targets = [((t - t.mean()) / t.std()).astype("float32") for t in targets]

    keras.utils.set_random_seed(0)
    model, layer = make()
    compiled = {} if loss is None else {"loss": [loss] * len(targets)}
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), **compiled)
    before = [to_numpy(v.value).copy() for v in layer.trainable_weights]
    x, y = ([np.concatenate([a] * steps) for a in v] for v in (data, targets))
    model.fit(
        x if len(x) > 1 else x[0],
        y if len(y) > 1 else y[0],
        batch_size=n,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[record := _StepLosses()],
    )
    losses = record.losses()
    assert len(losses) == steps and np.all(np.isfinite(losses)), losses
    first, last = losses[0], losses[-tail:].mean()
    assert last < ratio * first, (first, last)
    moved = [
        not np.allclose(to_numpy(v.value), b)
        for v, b in zip(layer.trainable_weights, before, strict=True)
    ]
    if moved:
        still = [
            v.path for v, m in zip(layer.trainable_weights, moved, strict=True) if not m
        ]
        assert {"all": all, "any": any}[weights_move](moved), still
