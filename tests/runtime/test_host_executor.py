"""The host executor's smaller contracts that the stream tests do not reach (found by mutation testing of
rnnrt/runtime/host.py, docs/testing.md): the state-memory guard (RLIMIT_AS, physical memory, the arena at its
exact limit), input buffers of dynamic inputs, which frames take the fast step, the auto-filled continuation
at sequence starts (step and step_chunk), slot steps of a fixed batch (out=, step_async, outputs without a batch
axis), step_chunk's gather, its dynamic dims and its failure message."""

from __future__ import annotations

import io
import os
import types
from typing import Mapping

import numpy as np
import pytest

import rnnrt
from rnnrt.errors import BindingError, ConfigError, EngineError
from rnnrt.runtime import host
from tests.models import MODELS


def test_physical_memory_is_this_machines():
    total = host._physical_memory()
    assert total == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") and total > 2**26


def test_state_larger_than_half_the_memory_is_refused(tmp_path, monkeypatch):
    path = MODELS["lstm_dynamic_batch"]().save(tmp_path)
    # lstm1.h0 and lstm1.c0: (B, 7) float32 each, the second at a 256-byte aligned offset. Two arenas:
    # B = 36: 2 x (1024 + 1008) = 4064 bytes; B = 37: 2 x (1280 + 1036) = 4632 bytes.
    monkeypatch.setattr(host, "_physical_memory", lambda: 4096)
    with rnnrt.load(path, backend="onnxruntime", threads=1, batch_size=36) as s:
        assert s.state["lstm1.h0"].shape == (36, 7)
    with pytest.raises(ConfigError, match=r"Session \| The state needs 2 x 0\.0 GiB for this batch size, more than "
                                          r"this machine's 0\.0 GiB\.\nNote: Use a smaller batch_size\."):
        rnnrt.load(path, backend="onnxruntime", threads=1, batch_size=37)
    monkeypatch.setattr(host, "_physical_memory", lambda: None)  # unknown: no limit
    rnnrt.load(path, backend="onnxruntime", threads=1, batch_size=4096).close()


def test_input_buffers_of_a_dynamic_input_need_its_shape(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "samples"])
    h = helper.make_tensor_value_info("h_in", TensorProto.FLOAT, ["batch", 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])
    h_out = helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["batch", 1])
    graph = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["s"], axes=[1], keepdims=1),
                               helper.make_node("Add", ["s", "h_in"], ["h_out"]),
                               helper.make_node("Identity", ["h_out"], ["y"])], "g", [x, h], [y, h_out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=8)
    from rnnrt.ir.config import save_step_graph
    from rnnrt.importers.onnx.importer import convert_onnx

    src = tmp_path / "sum.onnx"
    src.write_bytes(model.SerializeToString())
    yaml = save_step_graph(convert_onnx(src), tmp_path / "out")
    with rnnrt.load(yaml, backend="onnxruntime", threads=1, batch_size=3) as s:
        assert s.io.cont is None
        with pytest.raises(BindingError, match=r"Input 'x' \| Has dynamic dims .*\nNote: Pass its full shape in "
                                               r"shapes=\{name: shape\}\."):
            s.input_buffers()
        bufs = s.input_buffers({"x": (3, 4)})
        assert bufs["x"].shape == (3, 4) and bufs["x"].dtype == np.float32
        assert s.input_buffers({"x": (3, 4)})["x"] is bufs["x"], "the same buffers for the same shapes"
        assert s.input_buffers({"x": (3, 5)})["x"].shape == (3, 5)
        bufs["x"][...] = np.arange(12, dtype=np.float32).reshape(3, 4)
        np.testing.assert_array_equal(s.step(bufs)["y"], [[6], [22], [38]])
        np.testing.assert_array_equal(s.step(bufs)["y"], [[12], [44], [76]])


# The memory guard: what RLIMIT_AS leaves, which bound is lower, and the arena at its exact boundary.

def _statm(monkeypatch, text):
    """Makes host.py read ``text`` as /proc/self/statm (other paths open as usual)."""
    import builtins

    def fake_open(path, *args, **kwargs):
        if path == "/proc/self/statm":
            return io.StringIO(text)
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(host, "open", fake_open, raising=False)


def test_address_space_left_is_the_soft_limit_less_the_mapped_size(monkeypatch):
    import resource

    page = os.sysconf("SC_PAGE_SIZE")
    _statm(monkeypatch, "1000 200 30 4 0 50 0\n")  # size (pages mapped), resident, ...: the first counts
    monkeypatch.setattr(resource, "getrlimit", lambda what: (10**9, resource.RLIM_INFINITY))
    assert host._address_space_left() == 10**9 - 1000 * page
    monkeypatch.setattr(resource, "getrlimit", lambda what: (1000 * page - 1, resource.RLIM_INFINITY))
    assert host._address_space_left() == 0, "more mapped than the limit: nothing left, never negative"
    monkeypatch.setattr(resource, "getrlimit", lambda what: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert host._address_space_left() is None
    _statm(monkeypatch, "")  # unreadable statm: unknown
    monkeypatch.setattr(resource, "getrlimit", lambda what: (10**9, resource.RLIM_INFINITY))
    assert host._address_space_left() is None


def test_address_space_left_reads_this_process(monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda what: (2**62, resource.RLIM_INFINITY))
    left = host._address_space_left()
    used = 2**62 - left
    assert used % os.sysconf("SC_PAGE_SIZE") == 0 and 2**20 < used < 2**46


def test_memory_limit_is_the_lower_bound_named(monkeypatch):
    monkeypatch.setattr(host, "_physical_memory", lambda: 3 * 2**30)
    monkeypatch.setattr(host, "_address_space_left", lambda: 3 * 2**29)
    assert host.memory_limit() == (3 * 2**29, "the 1.5 GiB this process's address-space limit (RLIMIT_AS) leaves")
    monkeypatch.setattr(host, "_address_space_left", lambda: 2**33)
    assert host.memory_limit() == (3 * 2**30, "this machine's 3.0 GiB")
    monkeypatch.setattr(host, "_physical_memory", lambda: None)
    assert host.memory_limit() == (2**33, "the 8.0 GiB this process's address-space limit (RLIMIT_AS) leaves")
    monkeypatch.setattr(host, "_address_space_left", lambda: None)
    assert host.memory_limit() is None


def test_arena_takes_the_layout_bytes_and_twice_them_may_fill_the_limit(monkeypatch):
    from rnnrt.runtime.memory import ALIGN

    layout = [("a", (3, 5), np.dtype(np.float32)), ("b", (7,), np.dtype(np.float16))]
    end = ALIGN + 14  # "b" at the first aligned offset after a's 60 bytes
    monkeypatch.setattr(host, "memory_limit", lambda: (2 * end, "a limit"))
    arena = host.HostArena(layout)  # exactly at the limit: allowed
    assert arena.buffer.dtype == np.uint8 and arena.buffer.nbytes == end and not arena.buffer.any()
    assert arena.views["a"].shape == (3, 5) and arena.views["a"].dtype == np.float32
    assert arena.views["b"].shape == (7,) and arena.views["b"].dtype == np.float16
    assert np.shares_memory(arena.views["b"], arena.buffer[ALIGN:end])
    monkeypatch.setattr(host, "memory_limit", lambda: (2 * end - 1, "a limit"))
    with pytest.raises(ConfigError, match="more than a limit"):
        host.HostArena(layout)


def test_arena_refusals_name_the_sizes(monkeypatch):
    monkeypatch.setattr(host, "memory_limit", lambda: (2**30, "this machine's 1.0 GiB"))
    with pytest.raises(ConfigError) as err:
        host.HostArena([("a", (3 * 2**27,), np.dtype(np.float32))])  # 1.5 GiB
    assert str(err.value) == ("Session | The state needs 2 x 1.5 GiB for this batch size, more than this machine's "
                              "1.0 GiB.\nNote: Use a smaller batch_size.")
    monkeypatch.setattr(host, "memory_limit", lambda: None)  # unknown: the allocation itself fails
    with pytest.raises(ConfigError) as err:
        host.HostArena([("a", (2**48,), np.dtype(np.float32))])  # 1 PiB: more than any address space
    assert str(err.value) == ("Session | Cannot allocate the 1048576.0 GiB state arena for this batch size: out of "
                              "memory.\nNote: Use a smaller batch_size.")
    assert isinstance(err.value.__cause__, MemoryError)


# The executor on small graphs whose outputs show what it fed: an accumulator with a continuation input
# (y = h' + cont, h' = h * cont + x), a constant output without a batch axis, and a folded-batch model.

def _acc_model(batch, cont_shape=None):
    """``x [B, 2]``, ``cont`` (``[B]``, or ``cont_shape``: its time axis 1 reduced by min; ``()``: no continuation
    input, c = 1), state ``h [B, 2]``; outputs ``y = h * c + x + c`` with ``c`` the continuation per row, and
    ``scale = [1, 2, 3, 4]`` (no batch axis)."""
    from onnx import TensorProto, helper, numpy_helper

    from rnnrt.ir.stepgraph import Continuation, StatePair, StepGraph, TensorSpec
    from tests.models.registry import TinyModel

    f32 = TensorProto.FLOAT
    cont_shape = (batch,) if cont_shape is None else tuple(cont_shape)
    vi = helper.make_tensor_value_info
    inits = [numpy_helper.from_array(np.arange(1, 5, dtype=np.float32), "scale_c")]
    if not cont_shape:
        inits.append(numpy_helper.from_array(np.ones((1, 1), np.float32), "c"))
    nodes = [helper.make_node("ReduceMin", ["cont"], ["c"], axes=[1], keepdims=1) if len(cont_shape) == 2 else
             helper.make_node("Unsqueeze", ["cont"], ["c"], axes=[1]),
             helper.make_node("Mul", ["h", "c"], ["hc"]),
             helper.make_node("Add", ["hc", "x"], ["h_out"]),
             helper.make_node("Add", ["h_out", "c"], ["y"]),
             helper.make_node("Identity", ["scale_c"], ["scale"])]
    cont = [vi("cont", f32, list(cont_shape))] if cont_shape else []
    graph = helper.make_graph(nodes[0 if cont else 1:], "acc",
                              [vi("x", f32, [batch, 2])] + cont + [vi("h", f32, [batch, 2])],
                              [vi("y", f32, [batch, 2]), vi("scale", f32, [4]), vi("h_out", f32, [batch, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=8)
    model.ir_version = 8
    step = StepGraph(model=model,
                     inputs=[TensorSpec("x", "float32", (batch, 2), 0)]
                     + ([TensorSpec("cont", "float32", cont_shape, 0)] if cont else []),
                     outputs=[TensorSpec("y", "float32", (batch, 2), 0), TensorSpec("scale", "float32", (4,), None)],
                     states=[StatePair("h", "h_out", (batch, 2), "float32", 0)],
                     continuation=Continuation("cont", batch_axis=0, time_axis=1 if len(cont_shape) == 2 else None)
                     if cont else None,
                     source={"format": "test", "model": "acc"})
    return TinyModel("acc", step, {}, None)


def _folded_model(batch):
    """``f [2B, 2]`` holding 2 time-major rows per stream (``batch_fold [2, 1]``), state ``s [B, 2]``:
    ``s' = s + f[t=0] + f[t=1]`` and ``yf = f + s'`` per stream and time (``yf`` folded the same way)."""
    from onnx import TensorProto, helper, numpy_helper

    from rnnrt.ir.stepgraph import StatePair, StepGraph, TensorSpec
    from tests.models.registry import TinyModel

    f32 = TensorProto.FLOAT
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Reshape", ["f", "tbx"], ["f3"]),
             helper.make_node("ReduceSum", ["f3"], ["fs"], axes=[0], keepdims=0),
             helper.make_node("Add", ["s", "fs"], ["s_out"]),
             helper.make_node("Tile", ["s_out", "reps"], ["st"]),
             helper.make_node("Add", ["f", "st"], ["yf"])]
    inits = [numpy_helper.from_array(np.array([2, batch, 2], np.int64), "tbx"),
             numpy_helper.from_array(np.array([2, 1], np.int64), "reps")]
    graph = helper.make_graph(nodes, "folded", [vi("f", f32, [2 * batch, 2]), vi("s", f32, [batch, 2])],
                              [vi("yf", f32, [2 * batch, 2]), vi("s_out", f32, [batch, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=8)
    model.ir_version = 8
    step = StepGraph(model=model, inputs=[TensorSpec("f", "float32", (2 * batch, 2), 0, (2, 1))],
                     outputs=[TensorSpec("yf", "float32", (2 * batch, 2), 0, (2, 1))],
                     states=[StatePair("s", "s_out", (batch, 2), "float32", 0)],
                     source={"format": "test", "model": "folded"})
    return TinyModel("folded", step, {}, None)


def _load(tmp_path, model, **kwargs):
    return rnnrt.load(model.save(tmp_path / model.name), backend="onnxruntime", threads=1, **kwargs)


def _x(rows, seed):
    return np.random.default_rng(seed).standard_normal((rows, 2)).astype(np.float32)


class _Calls:
    """Wraps a bound method, counting its calls (and keeping the arguments)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        self.calls.append(args)
        return self.fn(*args, **kwargs)


def test_continuation_is_zero_at_each_sequence_start(tmp_path):
    with _load(tmp_path, _acc_model("batch"), batch_size=3) as s:
        x0, x1, x2 = _x(3, 0), _x(3, 1), _x(3, 2)
        np.testing.assert_array_equal(s.step(x0)["y"], x0)  # t=0: c = 0
        np.testing.assert_array_equal(s.step(x1)["y"], x0 + x1 + 1)
        s.reset(slots=[1])
        state = x0 + x1 + x2
        state[1] = x2[1]
        want = state + 1
        want[1] = x2[1]
        np.testing.assert_array_equal(s.step(x2)["y"], want)
        s.reset(slots=[2])
        np.testing.assert_array_equal(s.step(x0[:2], slots=[2, 0])["y"], [x0[0], state[0] + x0[1] + 1])


def test_step_chunk_zeroes_the_continuation_at_frame_zero_only(tmp_path):
    frames = np.stack([_x(3, k) for k in range(3)])
    with _load(tmp_path, _acc_model("batch"), batch_size=3) as s:
        y = s.step_chunk(frames)["y"]
        np.testing.assert_array_equal(y[0], frames[0])
        np.testing.assert_allclose(y[2], frames.sum(axis=0) + 1, rtol=1e-6)
        s.reset(slots=[1])
        y = s.step_chunk(frames[:2, :1], slots=[1])["y"]
        np.testing.assert_array_equal(y[0], frames[0, :1])
        np.testing.assert_allclose(y[1], frames[0, :1] + frames[1, :1] + 1, rtol=1e-6)
        y = s.step_chunk({"x": frames, "cont": np.zeros((3, 3), np.float32)})["y"]  # a fed one is used as is
        np.testing.assert_array_equal(y, frames)


def test_step_chunk_sizes_dynamic_dims_from_the_frames(tmp_path):
    # lstm_scan with a dynamic time dim: the chunk's check records T and the continuation is made T long.
    model = MODELS["lstm_scan"](batch=3, time="T")
    frames = np.random.default_rng(0).standard_normal((2, 4, 3, 5)).astype(np.float32)
    with rnnrt.load(model.save(tmp_path), backend="onnxruntime", threads=1) as s, \
            rnnrt.load(model.save(tmp_path), backend="onnxruntime", threads=1) as ref:
        y = s.step_chunk({"data": frames})["lstm1"]
        for k in range(2):
            np.testing.assert_allclose(y[k], ref.step({"data": frames[k]})["lstm1"], rtol=1e-6)


def test_fast_step_takes_exactly_the_frames_the_checks_accept(tmp_path, monkeypatch):
    with _load(tmp_path, _acc_model("batch"), batch_size=3) as s:
        run = _Calls(s._executor.run)
        monkeypatch.setattr(s._executor, "run", run)
        h = s.step(_x(3, 0))["y"]  # a sequence start (c = 0, y = h): the full way
        assert len(run.calls) == 1
        for seed, frame in enumerate([lambda x: {"x": x}, lambda x: x]):  # a dict or the bare single input
            x = _x(3, seed + 1)
            y = s.step(frame(x))
            h = h + x
            np.testing.assert_allclose(y["y"], h + 1, rtol=1e-6)
            np.testing.assert_array_equal(y["scale"], [1, 2, 3, 4])
        assert len(run.calls) == 1, "a full-batch frame of exact arrays goes the fast way"
        others = [np.asfortranarray(np.repeat(_x(3, 5), 2, axis=1))[:, ::2],  # not C-contiguous
                  {"x": _x(3, 6).tolist()},  # not an array
                  {"x": _x(3, 7), "cont": np.ones(3, np.float32)},  # the continuation fed
                  types.MappingProxyType({"x": _x(3, 8)})]  # not a dict
        for i, frame in enumerate(others, start=2):
            x = frame["x"] if isinstance(frame, Mapping) else frame
            h = h + np.asarray(x, np.float32)
            np.testing.assert_allclose(s.step(frame)["y"], h + 1, rtol=1e-6)
            assert len(run.calls) == i, f"frame {i} goes the full way"
    with _load(tmp_path, _acc_model("batch"), batch_size=1) as s:  # dims of 1 take the fast way too
        run = _Calls(s._executor.run)
        monkeypatch.setattr(s._executor, "run", run)
        s.step(_x(1, 0))
        s.step(_x(1, 1))
        assert len(run.calls) == 1


def test_fast_step_is_off_with_check_finite(tmp_path):
    bad = np.full((3, 2), np.nan, np.float32)
    with _load(tmp_path, _acc_model("batch"), batch_size=3, check_finite=True) as s:
        x = _x(3, 0)
        s.step(x)
        with pytest.raises(BindingError, match=r"Input 'x' \| Holds NaN or infinite values"):
            s.step(bad)
        with pytest.raises(BindingError, match=r"Input 'x' \| Holds NaN or infinite values"):
            s.step_chunk(bad[None])
        np.testing.assert_allclose(s.step(x)["y"], 2 * x + 1, rtol=1e-6)


def test_a_continuation_that_cannot_be_filled_is_refused_on_every_step(tmp_path):
    # cont [B, T]: no fed input sets T, so it cannot be auto-filled; the fast way must not try either.
    with _load(tmp_path, _acc_model("batch", cont_shape=("batch", "T")), batch_size=3) as s:
        x = _x(3, 0)
        np.testing.assert_array_equal(s.step({"x": x, "cont": np.zeros((3, 4), np.float32)})["y"], x)
        for _ in range(2):
            with pytest.raises(BindingError, match=r"Input 'cont' \| Cannot be filled: its dim 'T' is not set by "
                                                   r"any fed input"):
                s.step({"x": x})


def test_output_device_is_refused_on_a_host_engine(tmp_path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, _acc_model("batch"), batch_size=3, outputs="device")
    assert str(err.value) == ("Session | outputs='device' needs a device engine; 'OnnxRuntimeEngine' runs on the host."
                              "\nNote: Use outputs='host' or 'view'.")


def test_out_may_hold_some_outputs(tmp_path):
    with _load(tmp_path, _acc_model("batch"), batch_size=3) as s:
        x, buf = _x(3, 0), np.full((3, 2), 7, np.float32)
        y = s.step(x, out={"y": buf})
        assert y["y"] is buf
        np.testing.assert_array_equal(buf, x)
        np.testing.assert_array_equal(y["scale"], [1, 2, 3, 4])


def test_slot_steps_of_a_fixed_batch(tmp_path):
    # Fixed batch: the frame rows go into whole-batch buffers; out= and step_async see the listed rows.
    with _load(tmp_path, _acc_model(3)) as s:
        x0, x1 = _x(3, 0), _x(3, 1)
        s.step(x0)
        buf = np.zeros((2, 2), np.float32)
        y = s.step(x1[[2, 0]], slots=[2, 0], out={"y": buf})
        assert y["y"] is buf
        np.testing.assert_allclose(buf, (x0 + x1 + 1)[[2, 0]], rtol=1e-6)
        np.testing.assert_array_equal(y["scale"], [1, 2, 3, 4])
        handle = s.step_async(x1[[1]], slots=[1])
        y = handle.wait()
        np.testing.assert_allclose(y["y"], (x0 + x1 + 1)[[1]], rtol=1e-6)
        np.testing.assert_array_equal(y["scale"], [1, 2, 3, 4])
        np.testing.assert_allclose(s.state["h"], x0 + x1, rtol=1e-6)


def test_a_fixed_batch_cannot_fold_its_streams(tmp_path):
    # Why the scatter path (fixed batch) never sees a folded binding: such a config is refused at load.
    with pytest.raises(ConfigError, match=r"Config \| Bindings disagree on the batch size: \[\(3, 's'\), \(6, 'f'\)\]"):
        _load(tmp_path, _folded_model(3))


@pytest.mark.parametrize("batch", [3, "batch"])
def test_step_chunk_of_a_model_without_continuation(tmp_path, batch):
    frames = np.stack([_x(3, k) for k in range(3)])
    with _load(tmp_path, _acc_model(batch, cont_shape=()), batch_size=3) as s:
        assert s.io.cont is None
        y = s.step_chunk(frames)["y"]
        np.testing.assert_allclose(y, np.cumsum(frames, axis=0) + 1, rtol=1e-6)
        y = s.step_chunk(frames[:2, [2, 0]], slots=[2, 0])["y"]
        state = frames.sum(axis=0)
        np.testing.assert_allclose(y[1], (state + frames[0] + frames[1])[[2, 0]] + 1, rtol=1e-6)
        state[[2, 0]] += (frames[0] + frames[1])[[2, 0]]
        np.testing.assert_allclose(s.state["h"], state, rtol=1e-6)


def test_a_gathered_chunk_runs_the_listed_rows_only(tmp_path, monkeypatch):
    with _load(tmp_path, _acc_model("batch"), batch_size=4) as s:
        execute = _Calls(s._executor._engine.execute)
        monkeypatch.setattr(s._executor._engine, "execute", execute)
        frames = np.stack([_x(2, 0), _x(2, 1)])
        y = s.step_chunk(frames, slots=[3, 1])["y"]
        assert [args[0]["x"].shape for args in execute.calls] == [(2, 2), (2, 2)]
        np.testing.assert_allclose(y[1], frames.sum(axis=0) + 1, rtol=1e-6)
        np.testing.assert_allclose(s.state["h"][[3, 1]], frames.sum(axis=0), rtol=1e-6)
        assert not s.state["h"][[0, 2]].any()


def test_an_engine_failure_inside_a_chunk_names_the_frame(tmp_path, monkeypatch):
    with _load(tmp_path, _acc_model("batch"), batch_size=3) as s:
        x = _x(3, 0)
        s.step(x)
        real = s._executor._engine.execute
        calls = []

        def fail_second(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise EngineError("boom")
            return real(*args, **kwargs)

        monkeypatch.setattr(s._executor._engine, "execute", fail_second)
        with pytest.raises(EngineError) as err:
            s.step_chunk(np.stack([x, x, x]))
        assert str(err.value) == ("Session.step_chunk | The engine failed at frame 2 of 3: boom.\nNote: No slot "
                                  "advanced: the state is as before the chunk.")
        np.testing.assert_array_equal(s.state["h"], x)
