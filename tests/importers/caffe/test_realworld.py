"""The realworld prototxts that load in BVLC Caffe convert (random weights) and run in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from rnnrt.importers.caffe.convert import convert_caffe
from tests.conftest import REALWORLD, realworld_loadable, realworld_results


def _dummy_layers(name):
    from rnnrt.importers.caffe.reader import load_net

    return [layer.tops for layer in load_net(REALWORLD / name).layers if layer.type == "DummyData"]


def test_seven_realworld_nets_are_loadable():
    assert len(realworld_loadable()) == 7, realworld_loadable()


@pytest.mark.slow
@pytest.mark.parametrize("name", realworld_loadable())
def test_realworld_converts_and_runs(name):
    expected = realworld_results()[name]
    step = convert_caffe(REALWORLD / name)
    # DummyData tops are placeholders the caller fills: rnnrt makes them inputs (Caffe lists none).
    dummy = {t for layer in _dummy_layers(name) for t in layer}
    assert {i.name: list(i.shape) for i in step.inputs if i.name not in dummy} == expected["inputs"]
    assert all(any(t in note for note in step.notes) for t in dummy)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(step.model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in step.inputs:
        if "sentence" in spec.name and "cont" not in spec.name:  # word indices into an Embed
            feeds[spec.name] = rng.integers(0, 100, spec.shape).astype(np.float32)
        elif "cont" in spec.name or "marker" in spec.name:
            feeds[spec.name] = np.ones(spec.shape, np.float32)
        else:
            feeds[spec.name] = rng.uniform(-1, 1, spec.shape).astype(np.float32)
    state = {s.input: np.zeros(s.shape, np.float32) for s in step.states}
    names = [o.name for o in sess.get_outputs()]
    for _ in range(2):  # two calls, state carried, as in load_results.json
        out = dict(zip(names, sess.run(None, {**feeds, **state})))
        state = {s.input: out[s.output] for s in step.states}
        for oname, shape in expected["outputs"].items():
            assert list(out[oname].shape) == shape, oname
            assert np.all(np.isfinite(out[oname])), oname
