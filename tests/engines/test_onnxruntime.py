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


def _ping_pong(engine, model, steps, rng, mutate_in_place):
    """A Session's use of the engine: the same feed and destination arrays every step (state arenas
    swapped each step), the frame written into one buffer in place or passed as a new array."""
    arenas = [{"lstm1.h0": np.zeros((2, 7), np.float32), "lstm1.c0": np.zeros((2, 7), np.float32)} for _ in range(2)]
    dests = [{"lstm1.hT": arenas[1 - k]["lstm1.h0"], "lstm1.cT": arenas[1 - k]["lstm1.c0"]} for k in range(2)]
    frame = {"data": np.zeros((1, 2, 5), np.float32), "cont": np.ones((1, 2), np.float32)}
    ref_state = {name: a.copy() for name, a in arenas[0].items()}
    kept = []
    for j in range(steps):
        data = rng.uniform(-1, 1, (1, 2, 5)).astype(np.float32)
        if mutate_in_place:
            frame["data"][...] = data
        else:
            frame["data"] = data
        k = j % 2
        outs = engine.execute({**frame, **arenas[k]}, dests[k])
        assert outs["lstm1.hT"] is dests[k]["lstm1.hT"]
        ref, ref_state = model.reference({"data": data, "cont": frame["cont"]}, ref_state)
        np.testing.assert_allclose(outs["lstm1"], ref["lstm1"], atol=1e-5, err_msg=f"step {j}")
        np.testing.assert_allclose(arenas[1 - k]["lstm1.c0"], ref_state["lstm1.c0"], atol=1e-5, err_msg=f"step {j}")
        kept.append((outs["lstm1"], outs["lstm1"].copy()))
    for j, (returned, copy) in enumerate(kept):  # returned outputs are the caller's: never overwritten later
        np.testing.assert_array_equal(returned, copy, err_msg=f"step {j}'s output changed afterwards")


@pytest.mark.parametrize("mutate_in_place", [True, False], ids=["frame-buffer-reused", "new-frame-arrays"])
def test_execute_with_the_same_buffers_every_step_reads_their_current_contents(model, mutate_in_place) -> None:
    """The engine keeps arrays bound from call to call (an IO binding): a frame buffer rewritten in place
    must be read anew, state arenas swapped each step must be followed, and the outputs it allocates must
    not be reused under the caller's feet."""
    with OnnxRuntimeEngine(model.step.model.SerializeToString(), threads=1) as engine:
        assert engine._run_bound is not None  # the bound run is what this test is about
        _ping_pong(engine, model, 8, np.random.default_rng(11), mutate_in_place)


def test_onnxruntime_reads_a_contiguous_bound_array_in_place(model) -> None:
    """What the engine's kept bindings rely on (an ONNX Runtime upgrade that copied at bind time would
    make them stale): a C-contiguous array of the input's dtype, rewritten after binding, is read anew."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.step.model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = _feeds(2)
    io = sess.io_binding()
    for name, value in feeds.items():
        io.bind_cpu_input(name, value)
    io.bind_output("lstm1", "cpu")
    sess.run_with_iobinding(io)
    first = io.copy_outputs_to_cpu()[0]
    feeds["data"][...] *= -2
    sess.run_with_iobinding(io)
    second = io.copy_outputs_to_cpu()[0]
    want = sess.run(["lstm1"], feeds)[0]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(second, want)


def test_bound_run_falls_back_where_it_cannot_bind(model) -> None:
    """Destinations the binding cannot take (strided, overlapping a feed) and feeds that change from
    bound-by-reference to copied all give the plain run's results; a feed left out after a bound run is
    an error naming it, never the value bound before."""
    feeds = _feeds(2)
    with OnnxRuntimeEngine(model.step.model.SerializeToString(), threads=1) as plain:
        plain._run_bound = None
        want = plain.execute(feeds)
    with OnnxRuntimeEngine(model.step.model.SerializeToString(), threads=1) as engine:
        strided = {"lstm1.hT": np.full((2, 14), np.nan, np.float32)[:, ::2]}
        for _ in range(2):
            outs = engine.execute(feeds, strided)
            np.testing.assert_array_equal(strided["lstm1.hT"], want["lstm1.hT"])
            assert outs["lstm1.hT"] is strided["lstm1.hT"]
        dest = {"lstm1.hT": np.zeros((2, 7), np.float32)}
        engine.execute(feeds, dest)
        engine.execute(feeds, dest)
        assert id(dest) in engine._bound  # what follows runs bound
        # A strided frame (bound by copy), then the same frame rewritten in place.
        data = np.zeros((1, 2, 10), np.float32)
        view = data[:, :, ::2]
        view[...] = feeds["data"]
        np.testing.assert_array_equal(engine.execute({**feeds, "data": view}, dest)["lstm1"], want["lstm1"])
        view[...] = 0.25
        again = engine.execute({**feeds, "data": view}, dest)["lstm1"]
        np.testing.assert_array_equal(again, plain_run(model, {**feeds, "data": np.ascontiguousarray(view)}))
        with pytest.raises(BindingError, match="rejected the feeds"):
            engine.execute({k: v for k, v in feeds.items() if k != "cont"}, dest)
        with pytest.raises(BindingError, match=r"Output 'lstm1.hT' \| Has shape \(2, 7\), its destination has shape"):
            engine.execute(feeds, {"lstm1.hT": np.zeros((1, 7), np.float32)})


def test_destination_over_a_feed_is_not_bound_over_it() -> None:
    """A destination that is also a feed (written while read): the engine must not let ONNX Runtime write
    into it during the run. A transpose into its own input is wrong if it does."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])], "t",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    a = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    want = a.T.copy()
    dest = {"y": a}
    with OnnxRuntimeEngine(model.SerializeToString(), threads=1) as engine:
        for _ in range(3):  # the first call runs plain, the later ones would be bound
            assert engine.execute({"x": a}, dest)["y"] is a
            np.testing.assert_array_equal(a, want)
            want = want.T.copy()


def plain_run(model, feeds):
    with OnnxRuntimeEngine(model.step.model.SerializeToString(), threads=1) as plain:
        plain._run_bound = None
        return plain.execute(feeds)["lstm1"]


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
