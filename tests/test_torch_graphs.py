"""Layers that `torch.compile` traces as one graph, with no graph break.

A break splits a compiled call into several graphs, each compiled, cached
and launched on its own with Python in between: slower to compile and to run.
Some Keras torch ops break a graph where an equivalent does not: `ops.max`
(it tests its result for a `.values` field; `ops.amax` does not),
`ops.convert_to_tensor` of a NumPy array (it reads the array's dtype; nested
Python numbers trace) and `ops.softmax` over an axis of size 1 (it warns).
Keras's `BatchNormalization` broke in training (its reduction axes are a
tracked list; `keras_mtl.layers.core.batch_norm` holds them in a tuple), and
Keras's torch `GRU` on a masked sequence (DIEN's extractor runs the same
recurrence as one scan there: `keras_mtl.backend.gru`).
`test_training_loops` holds the same check for MMoE inside a
`torch.nn.Module`.
"""

from __future__ import annotations

import numpy as np
import pytest

from keras_mtl_conformance import harness
from keras_mtl_conformance import spec as spec_lib
from tests._helpers import only
from tests._helpers import to_numpy

# Spec cases (`spec/case`), one per layer that once broke a graph.
ONE_GRAPH = [
    "max_pooling/three_rank2",
    # Inference: the first-maximum one-hot, then the masks.
    "nas_selection/manual_left",
    "mixed_nas/leading_zero_soft",
    # A length-one sequence: Keras's softmax warns over an axis of size 1.
    "dmr_u2i/paper_tanh_batch_one_length_one",
    # Per-expert batch norm in training: batch statistics, moving averages.
    "mmoe/stacked_batch_norm_training",
    # A padded sequence: Keras's torch GRU loops over a masked one in Python.
    "dien/agru_padded",
    "dien/augru_tanh_extractor_states",
]


@only("torch")
@pytest.mark.parametrize("name", ONE_GRAPH)
def test_torch_compile_traces_the_layer_in_one_graph(name):
    import torch

    spec_name, case_id = name.split("/")
    case = next(c for c in spec_lib.find(spec_name).cases if c.id == case_id)
    layer = harness.ready_layer(case)
    inputs = harness.concrete_inputs(case)

    def run(*args):
        return harness.call(layer, case, list(args))

    # `fullgraph=True` raises on the first break; tracing alone shows it
    # (the "eager" backend runs the traced graph without Inductor).
    compiled = torch.compile(run, backend="eager", fullgraph=True)
    with torch.no_grad():
        got = harness.flatten(compiled(*inputs))
        want = harness.flatten(run(*inputs))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(to_numpy(g), to_numpy(w))
