"""StreamPool over a model with an input that has no batch axis (Silero's ``sr``: an int64 scalar):
the pool holds its value (``shared={...}``) and feeds it with every step."""

from __future__ import annotations

import numpy as np
import pytest

import rnnrt
from rnnrt.ir.config import load_config, save_step_graph
from rnnrt.errors import BindingError, ConfigError
from rnnrt.importers.onnx.importer import convert_onnx
from rnnrt.runtime.pool import StreamPool
from tests.models.onnx_sources import shared_sr_onnx


@pytest.fixture(scope="module", params=["dynamic", "fixed"])
def model_yaml(request, tmp_path_factory):
    # dynamic: the engine runs the stepped rows only; fixed (batch 4): the whole batch runs, rows scattered.
    step = convert_onnx(shared_sr_onnx("N" if request.param == "dynamic" else 4))
    path = save_step_graph(step, tmp_path_factory.mktemp(request.param))
    assert [t.batch_axis for t in load_config(path).inputs if t.name == "sr"] == [None]
    return path


def _load(path, batch=4):
    return rnnrt.load(path, backend="onnxruntime", batch_size=batch, threads=1)


def test_pool_with_shared_value_equals_solo_sessions(model_yaml):
    rng = np.random.default_rng(1)
    ids = ["a", "b", "c"]
    with _load(model_yaml) as session:
        pool = StreamPool(session, shared={"sr": np.int64(16000)})
        solo = {sid: _load(model_yaml) for sid in ids}
        for sid in ids:
            pool.open(sid)
        for tick in range(12):
            # Idle streams: each stream skips some ticks; bare frames and mappings both work.
            frames = {sid: rng.standard_normal((1, 4)).astype(np.float32) for sid in ids if rng.random() < 0.7}
            if tick % 2:
                frames = {sid: {"x": f} for sid, f in frames.items()}
            outs = pool.step(frames)
            for sid, frame in frames.items():
                x = frame["x"] if isinstance(frame, dict) else frame
                s = solo[sid]
                # A solo Session of the same model steps slot 0 with the same constant.
                want = s.step({"x": x, "sr": np.int64(16000)}, slots=[0])["y"]
                np.testing.assert_array_equal(outs[sid]["y"], want)
        # Snapshot/restore are unaffected: a restored stream continues bit-exactly.
        state = pool.snapshot("b")
        pool.close("b")
        pool.restore("b2", state)
        x = rng.standard_normal((1, 4)).astype(np.float32)
        want = solo["b"].step({"x": x, "sr": np.int64(16000)}, slots=[0])["y"]
        np.testing.assert_array_equal(pool.step({"b2": x})["b2"]["y"], want)
        assert pool.shared["sr"].dtype == np.int64 and not pool.shared["sr"].flags.writeable
        for s in solo.values():
            s.close()


def test_missing_shared_value_is_a_config_error(model_yaml):
    with _load(model_yaml) as session:
        with pytest.raises(ConfigError, match=r"(?s)Input 'sr' \| Has no batch axis.*shared=\{'sr': value\}.*--set sr="):
            StreamPool(session)
        with pytest.raises(ConfigError, match=r"shared=\{'x': \.\.\.\}\) \| Has a batch axis"):
            StreamPool(session, shared={"sr": 16000, "x": np.zeros((1, 4), np.float32)})
        with pytest.raises(ConfigError, match=r"shared=\{'nope': \.\.\.\}\) \| Is not an input"):
            StreamPool(session, shared={"sr": 16000, "nope": 1})
        with pytest.raises(ConfigError, match="not a mapping"):
            StreamPool(session, shared=16000)


def test_bad_shared_values_are_binding_errors(model_yaml):
    with _load(model_yaml) as session:
        with pytest.raises(BindingError, match=r"(?s)Input 'sr' \| Received dtype float32.*Expected dtype int64"):
            StreamPool(session, shared={"sr": np.array(16000, np.float32)})
        with pytest.raises(BindingError, match=r"(?s)Input 'sr' \| Received shape \(1,\).*Expected shape \[\]"):
            StreamPool(session, shared={"sr": np.array([16000])})
        with pytest.raises(BindingError, match="Input 'sr' \\| Cannot be converted to int64"):
            StreamPool(session, shared={"sr": "fast"})


def test_frame_carrying_a_shared_input_is_a_binding_error(model_yaml):
    with _load(model_yaml) as session:
        value = np.array(16000)  # int64 on every platform numpy casts from safely
        pool = StreamPool(session, shared={"sr": value})
        value[...] = 8000  # the pool holds its own copy
        pool.open("a")
        pool.open("b")
        before = session.read_state([0, 1])
        x = np.ones((1, 4), np.float32)
        with pytest.raises(BindingError, match=r"Stream 'b' \| Frame carries input 'sr', which has no batch axis"):
            pool.step({"a": {"x": x}, "b": {"x": x, "sr": np.int64(16000)}})
        after = session.read_state([0, 1])
        np.testing.assert_array_equal(before["state"], after["state"])  # nothing advanced
        with _load(model_yaml) as solo:
            want = solo.step({"x": x, "sr": np.int64(16000)}, slots=[0])["y"]
        np.testing.assert_array_equal(pool.step({"a": x})["a"]["y"], want)


REF_SLOTS = {"a": 0, "b": 1, "c": 2}  # the slots streams a, b, c take in a fresh pool (for the reference Session)


def _sr_pool(session):
    """A pool feeding sr=16000 with streams a, b, c open (in slots REF_SLOTS)."""
    pool = StreamPool(session, shared={"sr": 16000})
    for sid in REF_SLOTS:
        pool.open(sid)
    assert {sid: pool.slot_of(sid) for sid in REF_SLOTS} == REF_SLOTS
    return pool


def test_step_batch_feeds_the_shared_value(model_yaml):
    """step_batch: a bare packed array or a mapping gets the shared value; feeding it is a BindingError."""
    rng = np.random.default_rng(3)
    with _load(model_yaml) as session, _load(model_yaml) as ref:
        pool = _sr_pool(session)
        for tick, ids in enumerate([("c", "a"), ("a", "b", "c"), ("b",), ("c", "a")]):
            x = rng.standard_normal((len(ids), 4)).astype(np.float32)
            y = pool.step_batch(ids, x if tick % 2 else {"x": x})["y"]
            want = ref.step({"x": x, "sr": np.int64(16000)}, slots=[REF_SLOTS[s] for s in ids])["y"]
            np.testing.assert_array_equal(y, want, err_msg=f"tick {tick}")
        with pytest.raises(BindingError, match=r"step_batch input 'sr' \| Has no batch axis and the pool feeds it"):
            pool.step_batch(["a"], {"x": x[:1], "sr": np.int64(8000)})


def test_step_chunk_feeds_the_shared_value_to_every_frame(model_yaml):
    """step_chunk: the shared value goes with each of the K frames (bare array or mapping); == K steps."""
    rng = np.random.default_rng(4)
    with _load(model_yaml) as session, _load(model_yaml) as ref:
        pool = _sr_pool(session)
        for call, ids in enumerate([("c", "a"), ("a", "b", "c"), ("b",)]):
            x = rng.standard_normal((call + 2, len(ids), 4)).astype(np.float32)
            y = pool.step_chunk(ids, x if call % 2 else {"x": x})["y"]
            want = [ref.step({"x": x[k], "sr": np.int64(16000)}, slots=[REF_SLOTS[s] for s in ids])["y"]
                    for k in range(len(x))]
            np.testing.assert_array_equal(y, np.stack(want), err_msg=f"call {call}")
        with pytest.raises(BindingError, match=r"step_chunk input 'sr' \| Has no batch axis and the pool feeds it"):
            pool.step_chunk(["a"], {"x": x[:, :1], "sr": np.full(len(x), 8000, np.int64)})
