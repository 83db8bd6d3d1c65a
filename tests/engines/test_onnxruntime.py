"""Tests of the ONNX Runtime engine and the BaseEngine template methods."""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

from rnnrt.engines import BaseEngine, Binding, OnnxRuntimeEngine
from rnnrt.errors import BindingError, ModelImportError, RnnrtError, StateError
from tests.models import MODELS


def _feeds(batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "data": rng.uniform(-1, 1, (1, batch, 5)).astype(np.float32),
        "cont": np.ones((1, batch), np.float32),
        "lstm1.h0": rng.uniform(-1, 1, (batch, 7)).astype(np.float32),
        "lstm1.c0": rng.uniform(-1, 1, (batch, 7)).astype(np.float32),
    }


@pytest.fixture
def model():
    return MODELS["lstm_t1"](batch=2)


def test_bindings_and_execute_match_reference(model, tmp_path) -> None:
    yaml_path = model.save(tmp_path)
    feeds = _feeds(2)
    with OnnxRuntimeEngine(yaml_path.parent / "model.onnx", threads=1) as engine:
        assert isinstance(engine, BaseEngine) and engine.memory == "host"
        assert engine.input_bindings() == [
            Binding("data", np.dtype(np.float32), (1, 2, 5)),
            Binding("cont", np.dtype(np.float32), (1, 2)),
            Binding("lstm1.h0", np.dtype(np.float32), (2, 7)),
            Binding("lstm1.c0", np.dtype(np.float32), (2, 7)),
        ]
        assert [b.name for b in engine.output_bindings()] == ["lstm1", "lstm1.hT", "lstm1.cT"]
        outs = engine.execute(feeds)
    ref, st = model.reference(feeds, {"lstm1.h0": feeds["lstm1.h0"], "lstm1.c0": feeds["lstm1.c0"]})
    np.testing.assert_allclose(outs["lstm1"], ref["lstm1"], atol=1e-5)
    np.testing.assert_allclose(outs["lstm1.cT"], st["lstm1.c0"], atol=1e-5)


def test_execute_writes_into_destinations(model) -> None:
    feeds = _feeds(2)
    dest = np.full((2, 7), np.nan, np.float32)
    with OnnxRuntimeEngine(model.step.model.SerializeToString()) as engine:
        outs = engine.execute(feeds, {"lstm1.hT": dest})
    assert outs["lstm1.hT"] is dest
    np.testing.assert_array_equal(dest, outs["lstm1"][0])
    with OnnxRuntimeEngine(model.step.model.SerializeToString()) as engine:
        with pytest.raises(BindingError, match=r"Output 'lstm1.hT' \| Has shape \(2, 7\), its destination has shape"):
            engine.execute(feeds, {"lstm1.hT": np.zeros((1, 7), np.float32)})


def test_several_steps_feed_state_back_and_match_reference(model) -> None:
    """Six steps with new frames, the state outputs fed back as the next state inputs (into the same
    destination arrays every step, as a Session does): every step's outputs equal the reference's."""
    rng = np.random.default_rng(3)
    state = {"lstm1.h0": np.zeros((2, 7), np.float32), "lstm1.c0": np.zeros((2, 7), np.float32)}
    ref_state = dict(state)
    dest = {"lstm1.hT": np.full((2, 7), np.nan, np.float32), "lstm1.cT": np.full((2, 7), np.nan, np.float32)}
    with OnnxRuntimeEngine(model.step.model.SerializeToString(), threads=1) as engine:
        for k in range(6):
            frame = {"data": rng.uniform(-1, 1, (1, 2, 5)).astype(np.float32),
                     "cont": np.array([[1.0, 0.0 if k == 3 else 1.0]], np.float32)}
            outs = engine.execute({**frame, **state}, dest if k % 2 else None)
            ref, ref_state = model.reference(frame, ref_state)
            np.testing.assert_allclose(outs["lstm1"], ref["lstm1"], atol=1e-5, err_msg=f"step {k}")
            np.testing.assert_allclose(outs["lstm1.hT"], ref_state["lstm1.h0"], atol=1e-5, err_msg=f"step {k}")
            np.testing.assert_allclose(outs["lstm1.cT"], ref_state["lstm1.c0"], atol=1e-5, err_msg=f"step {k}")
            state = {"lstm1.h0": outs["lstm1.hT"].copy(), "lstm1.c0": outs["lstm1.cT"].copy()}


def test_dynamic_batch_binding_shape() -> None:
    m = MODELS["lstm_dynamic_batch"]()
    with OnnxRuntimeEngine(m.step.model.SerializeToString()) as engine:
        assert engine.input_bindings()[0].shape == (1, "batch", 5)
        out = engine.execute(_feeds(4))
    assert out["lstm1"].shape == (1, 4, 7)


def test_inactive_engine_raises(model) -> None:
    engine = OnnxRuntimeEngine(model.step.model.SerializeToString())
    with pytest.raises(StateError, match=r"OnnxRuntimeEngine \| execute\(\) was called on an inactive engine.\nNote: Must be activated"):
        engine.execute(_feeds(2))
    with pytest.raises(StateError, match="inactive"):
        engine.input_bindings()


def test_double_activate_and_deactivate_warn(model, caplog) -> None:
    engine = OnnxRuntimeEngine(model.step.model.SerializeToString())
    engine.activate()
    engine.activate()
    assert "Already active" in caplog.text
    engine.deactivate()
    engine.deactivate()
    assert "Not active" in caplog.text
    assert not engine.is_active


def test_del_warns_if_never_deactivated(model) -> None:
    engine = OnnxRuntimeEngine(model.step.model.SerializeToString())
    engine.activate()
    with pytest.warns(ResourceWarning, match="Was activated but never deactivated"):
        del engine
        gc.collect()


def test_bad_feeds_are_binding_errors(model) -> None:
    feeds = _feeds(2)
    with OnnxRuntimeEngine(model.step.model.SerializeToString()) as engine:
        with pytest.raises(BindingError, match=r"ONNX Runtime rejected the feeds: .*lstm1.h0"):
            engine.execute({**feeds, "lstm1.h0": np.zeros((3, 7), np.float32)})
        with pytest.raises(BindingError, match="rejected the feeds"):
            engine.execute({"data": feeds["data"]})


def test_unloadable_model_is_import_error(tmp_path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(ModelImportError, match=r"junk.onnx' \| ONNX Runtime cannot load it"):
        OnnxRuntimeEngine(tmp_path / "junk.onnx").activate()


def test_missing_onnxruntime_fails_in_activate(model, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    engine = OnnxRuntimeEngine(model.step.model.SerializeToString())  # constructing still works
    with pytest.raises(RnnrtError, match=r"Cannot import onnxruntime.*\nNote: Install it"):
        engine.activate()
    assert not engine.is_active
