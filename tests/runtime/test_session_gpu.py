"""The Session on a device engine: golden Caffe cases, copy/swap feedback, CUDA graphs, slot resets, bad input.

Every test runs twice:

- ``sim``: on any machine. ``rnnrt.cuda`` is replaced by a host simulation (buffers are host memory,
  copies are memmoves, a "graph" records the enqueued operations and replays them), and the stand-in
  engine computes with torch on the CPU. This proves the Session's device bookkeeping in CI.
- ``gpu`` (``@pytest.mark.gpu``): the real ``rnnrt.cuda`` and the torch stand-in engine on an NVIDIA GPU
  (skipped without one). TensorRT cannot run on the lent H100, so the stand-in takes its place.

Reference: the golden data of real BVLC Caffe, and the CPU Session (ONNX Runtime) fed the same calls.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import rnnrt
from rnnrt import cuda as real_cuda
from rnnrt.importers.caffe.convert import convert_caffe
from rnnrt.ir.config import load_config, save_step_graph
from rnnrt.errors import BindingError, EngineError, StateError
from rnnrt.runtime.session import Session
from tests import cudasim
from tests.conftest import GOLDEN
from tests.engines.sim_ort import SimOrtEngine

torch = pytest.importorskip("torch")

from tests.engines.standin import StandinEngine  # noqa: E402

ATOL, RTOL = 1e-5, 1e-4
CASES = ["a_lstm_stream_t1n1", "b_lstm_batch_resets", "c_lstm_stacked_ip_softmax", "e_lstm_static_input",
         "f_rnn_vanilla", "h1_lstm_hidden1", "h2_lstm_input1", "h3_lstm_large", "h4_lstm_cont_all_zero",
         "h5_lstm_long_t200", "h6_lstm_x_multidim", "h7_lstm_cont_fractional", "h8_rnn_hidden1"]
MODES = [("copy", False), ("swap", False), ("copy", True), ("swap", True)]


def gpu_available() -> bool:
    return real_cuda.available() and torch.cuda.is_available()


class SimStandinEngine(StandinEngine):
    """The stand-in on the CPU: "device" pointers are host addresses; enqueues go through the simulation."""

    def __init__(self, *args, sim_cuda, **kwargs):
        super().__init__(*args, device="cpu", **kwargs)
        self._sim_cuda = sim_cuda

    def _wrap(self, context, t):
        key = (t.ptr, tuple(t.shape), np.dtype(t.dtype).str)
        tensor = context.wrapped.get(key)
        if tensor is None:
            nbytes = int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype).itemsize
            raw = (ctypes.c_char * max(nbytes, 1)).from_address(t.ptr)
            tensor = torch.frombuffer(raw, dtype=torch.float32, count=nbytes // 4).view(t.shape)
            context.wrapped[key] = tensor
        return tensor

    def enqueue_impl(self, context, feeds, outputs, stream):
        ins = {n: self._wrap(context, t) for n, t in feeds.items()}
        outs = {n: self._wrap(context, t) for n, t in outputs.items()}
        self._sim_cuda.run(lambda: self.forward(ins, outs, context.work), stream)


class Backend:
    """What a test needs from one backend: a session factory, device arrays, live allocation counts."""

    def __init__(self, kind: str, cuda_mod=None, sim: "cudasim.Sim | None" = None) -> None:
        self.kind, self.cuda, self.sim = kind, cuda_mod, sim

    def engine(self, case_dir):
        proto, weights = case_dir / "deploy.prototxt", case_dir / "weights.caffemodel"
        if self.kind == "sim":
            return SimStandinEngine(proto, weights, sim_cuda=self.cuda)
        return StandinEngine(proto, weights)

    def session(self, yaml, case_dir, **kw) -> Session:
        return Session(yaml, lambda: self.engine(case_dir), **kw)

    def device_array(self, arr: np.ndarray):
        if self.kind == "sim":
            return cudasim.device_array(self.cuda, arr)
        return torch.as_tensor(arr, device="cuda")

    def to_host(self, arr) -> np.ndarray:
        return arr.get()

    def live(self) -> dict:
        return self.cuda.live_allocations()


@pytest.fixture(params=["sim", pytest.param("gpu", marks=pytest.mark.gpu)])
def backend(request, monkeypatch):
    if request.param == "gpu":
        if not gpu_available():
            pytest.skip("no CUDA GPU (cudaDriverGetVersion() == 0 or torch.cuda unavailable)")
        return Backend("gpu", real_cuda)
    mod = cudasim.install(monkeypatch)
    return Backend("sim", mod, mod.sim)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if not GOLDEN.is_dir():
        pytest.skip(f"ground truth not found at {GOLDEN}")
    cache = {}

    def get(name):
        if name not in cache:
            d = GOLDEN / name
            step = convert_caffe(d / "deploy.prototxt", d / "weights.caffemodel")
            cache[name] = (save_step_graph(step, tmp_path_factory.mktemp(name)), d)
        return cache[name]

    return get


# ---------------------------------------------------------------------------------------------------
def test_standin_matches_golden_on_cpu(golden):
    """The stand-in's torch math reproduces Caffe on the CPU (the GPU run uses the same code)."""
    for name in CASES:
        case = golden(name)
        e = StandinEngine(case.prototxt, case.caffemodel, device="cpu")
        with e:
            state = {b.name: torch.zeros(b.shape) for b in e.input_bindings() if b.name.endswith("0")}
            work: dict = {}
            for k in range(case.num_calls):
                feeds, expected = case.call(k)
                ins = {n: torch.as_tensor(v) for n, v in feeds.items()} | state
                shapes = e.output_shapes(None, {n: tuple(t.shape) for n, t in ins.items()})
                outs = {n: torch.full(s, float("nan")) for n, s in shapes.items()}
                e.forward(ins, outs, work)
                for n, ref in expected.items():
                    np.testing.assert_allclose(outs[n].numpy(), ref, atol=ATOL, rtol=RTOL, err_msg=f"{name} call {k}")
                state = {n[:-1] + "0": outs[n].clone() for n in outs if n.endswith("T")}


@pytest.mark.parametrize("feedback,graph", MODES, ids=[f"{f}-{'graph' if g else 'eager'}" for f, g in MODES])
@pytest.mark.parametrize("name", CASES)
def test_golden_every_call(backend, golden, converted, name, feedback, graph):
    case = golden(name)
    yaml, d = converted(name)
    with backend.session(yaml, d, feedback=feedback, cuda_graph=graph) as s:
        for k in range(case.num_calls):
            feeds, expected = case.call(k)
            got = s.step(feeds)
            assert set(got) == set(expected)
            for out, ref in expected.items():
                assert isinstance(got[out], np.ndarray)
                np.testing.assert_allclose(got[out], ref, atol=ATOL, rtol=RTOL, err_msg=f"{name} call {k} {out}")
    if backend.sim is not None and graph and case.num_calls > 2:
        assert backend.sim.launches >= case.num_calls - 2, "graph mode must replay graphs after the warm-up step"


@pytest.mark.parametrize("feedback,graph", MODES, ids=[f"{f}-{'graph' if g else 'eager'}" for f, g in MODES])
def test_slot_resets_match_cpu_session(backend, golden, converted, feedback, graph):
    """reset(slots=...) between calls, auto-filled cont: the device Session equals the ORT Session."""
    case = golden("b_lstm_batch_resets")
    yaml, d = converted("b_lstm_batch_resets")
    plan = [None, [1], [0, 2], [2], [0, 1, 2], [1]]
    with backend.session(yaml, d, feedback=feedback, cuda_graph=graph) as s, \
            rnnrt.load(yaml, backend="onnxruntime") as ref:
        for k, slots in enumerate(plan):
            feeds, _ = case.call(k % case.num_calls)
            feeds = {"data": feeds["data"]}
            if slots is not None:
                s.reset(slots=slots)
                ref.reset(slots=slots)
            got, want = s.step(feeds), ref.step(feeds)
            np.testing.assert_allclose(got["lstm1"], want["lstm1"], atol=ATOL, rtol=RTOL, err_msg=f"call {k}")
            for n, v in ref.state.items():
                np.testing.assert_allclose(s.state[n], v, atol=ATOL, rtol=RTOL, err_msg=f"state {n} call {k}")
        s.reset()
        ref.reset()
        got, want = s.step({"data": case.call(0)[0]["data"]}), ref.step({"data": case.call(0)[0]["data"]})
        np.testing.assert_allclose(got["lstm1"], want["lstm1"], atol=ATOL, rtol=RTOL)


def test_read_write_state_and_state_copies(backend, golden, converted):
    case = golden("c_lstm_stacked_ip_softmax")
    yaml, d = converted("c_lstm_stacked_ip_softmax")
    with backend.session(yaml, d, feedback="swap", cuda_graph=True) as s, \
            rnnrt.load(yaml, backend="onnxruntime") as ref:
        for k in range(case.num_calls):
            feeds, _ = case.call(k)
            s.step(feeds)
            ref.step(feeds)
        snap = s.state
        assert all(not v.flags.writeable for v in snap.values())
        rows = s.read_state([1])
        for n, v in ref.read_state([1]).items():
            np.testing.assert_allclose(rows[n], v, atol=ATOL, rtol=RTOL)
        s.write_state([0], s.read_state([1]))
        ref.write_state([0], ref.read_state([1]))
        feeds, _ = case.call(0)
        np.testing.assert_allclose(s.step(feeds)["prob"], ref.step(feeds)["prob"], atol=ATOL, rtol=RTOL)
        assert not np.array_equal(snap["lstm1.h0"], s.state["lstm1.h0"]), "state() must be a copy taken when read"


def test_device_inputs_and_outputs(backend, golden, converted):
    case = golden("e_lstm_static_input")
    yaml, d = converted("e_lstm_static_input")
    for graph in (False, True):
        with backend.session(yaml, d, outputs="device", cuda_graph=graph) as s:
            for k in range(case.num_calls):
                feeds, expected = case.call(k)
                dev = {n: backend.device_array(v) for n, v in feeds.items()}
                dev["cont"] = feeds["cont"]  # host and device inputs mixed
                got = s.step(dev)["lstm1"]
                assert hasattr(got, "__cuda_array_interface__")
                np.testing.assert_allclose(backend.to_host(got), expected["lstm1"], atol=ATOL, rtol=RTOL, err_msg=f"call {k}")


def test_step_async(backend, golden, converted):
    case = golden("a_lstm_stream_t1n1")
    yaml, d = converted("a_lstm_stream_t1n1")
    with backend.session(yaml, d, cuda_graph=True) as s:
        for k in range(case.num_calls):
            feeds, expected = case.call(k)
            h = s.step_async(feeds)
            if k == 3:
                with pytest.raises(StateError, match="before the previous step_async\\(\\) was waited for"):
                    s.step_async(feeds)
            assert isinstance(h.done(), bool)
            got = h.wait()
            assert h.done() and h.wait() is got
            np.testing.assert_allclose(got["lstm1"], expected["lstm1"], atol=ATOL, rtol=RTOL)
        h = s.step_async(case.call(0)[0])
    with pytest.raises(StateError, match="after the session was closed"):
        h.wait()


def test_bad_inputs_leave_state_untouched(backend, golden, converted):
    case = golden("b_lstm_batch_resets")
    yaml, d = converted("b_lstm_batch_resets")
    with backend.session(yaml, d, input_memory={"data": "device"}) as s:
        feeds, _ = case.call(0)
        s.step({"data": backend.device_array(feeds["data"]), "cont": feeds["cont"]})
        before = dict(s.state)
        x = feeds["data"]
        with pytest.raises(BindingError, match=r"Input 'data' \| Received a host ndarray"):
            s.step({"data": x, "cont": feeds["cont"]})
        with pytest.raises(BindingError, match=r"Input 'data' \| Received a device array of dtype float64"):
            s.step({"data": backend.device_array(x.astype(np.float64)), "cont": feeds["cont"]})
        with pytest.raises(BindingError, match=r"Input 'data' \| Received shape \(8, 3, 4\)"):
            s.step({"data": backend.device_array(np.ascontiguousarray(x[..., :4])), "cont": feeds["cont"]})
        if backend.kind == "gpu":
            t = torch.as_tensor(np.ascontiguousarray(x.transpose(1, 0, 2)), device="cuda").transpose(0, 1)
            with pytest.raises(BindingError, match=r"Input 'data' \| Received a non-contiguous device array"):
                s.step({"data": t, "cont": feeds["cont"]})
        with pytest.raises(BindingError, match=r"Input 'cont' \| Received shape"):
            s.step({"data": backend.device_array(x), "cont": feeds["cont"][:, :2]})
        after = s.state
        for n in before:
            np.testing.assert_array_equal(after[n], before[n])
    with backend.session(yaml, d, input_memory="host") as s:
        with pytest.raises(BindingError, match=r"Input 'data' \| Received a device array"):
            s.step({"data": backend.device_array(x)})


@pytest.mark.gpu
def test_host_pointer_is_rejected_on_gpu(golden, converted):
    if not gpu_available():
        pytest.skip("no CUDA GPU (cudaDriverGetVersion() == 0)")
    yaml, d = converted("a_lstm_stream_t1n1")
    x = np.zeros((1, 1, 5), np.float32)
    fake = real_cuda.DeviceArray(x.ctypes.data, np.float32, (1, 1, 5))  # a host address posing as device memory
    with Backend("gpu", real_cuda).session(yaml, d) as s:
        with pytest.raises(BindingError, match=r"Input 'data' \| Received an array in host memory"):
            s.step({"data": fake})


@pytest.mark.parametrize("graph", [False, True])
def test_device_input_waits_for_its_producer_stream(monkeypatch, golden, converted, graph):
    """A device array whose producer stream has not finished writing it (CUDA Array Interface ``stream``):
    the Session orders its own stream after the producer's (event record + wait), so it reads the
    finished data; the simulation runs the producer's copy only when something waits for it."""
    mod = cudasim.install(monkeypatch)
    backend = Backend("sim", mod, mod.sim)
    case = golden("a_lstm_stream_t1n1")
    yaml, d = converted("a_lstm_stream_t1n1")
    producer = mod.Stream()
    try:
        with backend.session(yaml, d, input_memory={"data": "device"}, cuda_graph=graph) as s:
            for k in range(case.num_calls):
                feeds, expected = case.call(k)
                host = mod.PinnedBuffer(feeds["data"].nbytes)
                host.view(np.float32, feeds["data"].shape)[...] = feeds["data"]
                buf = mod.DeviceBuffer(feeds["data"].nbytes)
                mod.memcpy_async(buf.ptr, host.ptr, buf.nbytes, "h2d", producer)  # still pending
                x = mod.DeviceArray(buf.ptr, np.float32, feeds["data"].shape, producer.handle)
                got = s.step({"data": x, "cont": feeds["cont"]})
                np.testing.assert_allclose(got["lstm1"], expected["lstm1"], atol=ATOL, rtol=RTOL, err_msg=f"call {k}")
                buf.free()
                host.free()
    finally:
        producer.destroy()


def _device_free_after_torch_caches() -> int:
    # The stand-in computes with torch, whose caching allocator keeps blocks per stream and whose cuBLAS
    # keeps a workspace per (handle, stream); every Session brings a new stream. Those caches are the
    # stand-in's, not rnnrt's: drop them (no Session or graph is alive here) before reading free memory.
    torch.cuda.synchronize()
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()
    torch.cuda.empty_cache()
    return real_cuda.mem_get_info()[0]


def test_close_frees_everything(backend, converted):
    yaml, d = converted("a_lstm_stream_t1n1")
    cfg = load_config(yaml)
    engine = backend.engine(d)
    engine.activate()
    x = {"data": np.ones((1, 1, 5), np.float32)}
    try:
        with Session(cfg, engine, cuda_graph=True, feedback="swap") as s:  # warm up torch's allocator
            for _ in range(3):
                s.step(x)
        if backend.kind == "gpu":
            free0 = _device_free_after_torch_caches()
        live0 = backend.live()
        for i in range(1000):
            s = Session(cfg, engine, cuda_graph=(i % 10 == 0), feedback="swap" if i % 2 else "copy")
            s.step(x)
            if i % 10 == 0:
                s.step(x)
                s.step(x)
            s.close()
        assert backend.live() == live0
        if backend.kind == "gpu":
            free1 = _device_free_after_torch_caches()
            assert free1 == free0, f"device memory: {(free0 - free1) / 2**20:.1f} MiB not given back"
    finally:
        engine.deactivate()


def test_uncapturable_engine_falls_back(backend, golden, converted, caplog):
    case = golden("a_lstm_stream_t1n1")
    yaml, d = converted("a_lstm_stream_t1n1")
    engine = backend.engine(d)
    engine.capturable = False
    with caplog.at_level("INFO", logger="rnnrt"):
        with Session(yaml, lambda: engine, cuda_graph=True) as s:
            for k in range(case.num_calls):
                feeds, expected = case.call(k)
                np.testing.assert_allclose(s.step(feeds)["lstm1"], expected["lstm1"], atol=ATOL, rtol=RTOL)
    lines = [r.getMessage() for r in caplog.records if "CUDA graph" in r.getMessage()]
    assert len(lines) == 1 and "running plain enqueues" in lines[0]


def _count_calls(s: Session, method: str) -> list:
    """A list that grows by one at each call of the executor's ``method`` (which still runs)."""
    calls = []
    executor = s.executor
    call = getattr(executor, method)

    def counted(*args):
        calls.append(1)
        return call(*args)

    setattr(executor, method, counted)
    return calls


def _count_full_steps(s: Session) -> list:
    return _count_calls(s, "_step")


@pytest.mark.parametrize("feedback", ["copy", "swap"])
def test_graph_fast_path_matches_cpu_session(backend, golden, converted, feedback):
    """Steady-state graph steps take the cached plan; any other frame takes the full path (errors,
    casts, new layouts) and the results equal the ORT Session's under the same calls."""
    case = golden("b_lstm_batch_resets")
    yaml, d = converted("b_lstm_batch_resets")
    rng = np.random.default_rng(7)
    x = lambda: rng.uniform(-1, 1, (8, 3, 5)).astype(np.float32)  # noqa: E731
    cont = case.call(1)[0]["cont"]
    with backend.session(yaml, d, feedback=feedback, cuda_graph=True) as s, \
            rnnrt.load(yaml, backend="onnxruntime") as ref:
        full = _count_full_steps(s)

        def both(frame, ref_frame=None):
            got, want = s.step(frame), ref.step(frame if ref_frame is None else ref_frame)
            np.testing.assert_allclose(got["lstm1"], want["lstm1"], atol=ATOL, rtol=RTOL)
            for n, v in ref.state.items():
                np.testing.assert_allclose(s.state[n], v, atol=ATOL, rtol=RTOL, err_msg=n)
            return got

        for _ in range(4):  # eager warm-up, capture(s), then the plan
            both({"data": x()})
        n0 = len(full)
        outs = [both({"data": x()}) for _ in range(3)]
        assert len(full) == n0, "steady-state steps must not take the full path"
        assert not np.shares_memory(outs[0]["lstm1"], outs[1]["lstm1"]), "outputs are fresh arrays"

        # Bad frames: typed errors from the full path, state untouched, and the plan still serves afterwards.
        before = {n: v.copy() for n, v in s.state.items()}
        for bad, match in (({"data": x().astype(np.float64)}, r"Input 'data' \| Received dtype float64"),
                           ({"data": x()[:, :2]}, r"Input 'data' \| Received shape \(8, 2, 5\)"),
                           ({"data": x(), "h0": x()}, r"Input 'h0' \| Is not an input of the model"),
                           ({"lstm1.h0": x()}, r"Input 'lstm1.h0' \| Is a state input"),
                           ({"cont": cont}, r"Input 'data' \| Is missing from the frame"),
                           ({"data": [[1.0]]}, r"Input 'data' \| Received shape \(1, 1\)")):
            with pytest.raises(BindingError, match=match):
                s.step(bad)
        for n, v in s.state.items():
            np.testing.assert_array_equal(v, before[n])
        # Safe casts, non-contiguous arrays, bare arrays and fed cont go through the full path and stay right.
        both({"data": x().astype(np.float16)})
        y = x()
        both({"data": np.asfortranarray(y)}, {"data": y})
        both(x())
        n1 = len(full)
        both(x())
        assert len(full) == n1, "a bare array gets its own plan"
        both({"data": x(), "cont": cont})
        n2 = len(full)
        both({"data": x(), "cont": cont})
        both({"cont": cont, "data": x()})
        assert len(full) == n2, "a fed continuation input is part of the plan"
        both({"data": x()})  # back to the auto-filled continuation: full path rewrites the ones
        both({"data": x()})
        # reset(slots) after plan steps: the full path zeroes cont at t=0 for those slots, then the plan
        # resumes at once (it sets the staged cont back to ones).
        for slots in ([1], [0, 2], None):
            s.reset(slots=slots)
            ref.reset(slots=slots)
            both({"data": x()})
            n3 = len(full)
            both({"data": x()})
            both({"data": x()})
            assert len(full) == n3
        # step_async takes the plan too, and still refuses a second step before wait().
        h = s.step_async({"data": y})
        with pytest.raises(StateError, match="before the previous step_async\\(\\) was waited for"):
            s.step({"data": y})
        np.testing.assert_allclose(h.wait()["lstm1"], ref.step({"data": y})["lstm1"], atol=ATOL, rtol=RTOL)
        assert len(full) == n3
    with pytest.raises(StateError, match="after close"):
        s.step({"data": y})


def test_graph_fast_path_failed_launch_leaves_state(backend, golden, converted):
    """A launch that fails on the plan's path raises CudaError and does not advance the state."""
    from rnnrt.errors import CudaError

    case = golden("a_lstm_stream_t1n1")
    yaml, d = converted("a_lstm_stream_t1n1")
    with backend.session(yaml, d, feedback="swap", cuda_graph=True, outputs="device") as s:
        for k in range(4):
            out = s.step(case.call(k)[0])["lstm1"]
            assert hasattr(out, "__cuda_array_interface__")
        plan = s.executor._plan
        assert plan is not None
        before, k_in = {n: v.copy() for n, v in s.state.items()}, s.in_arena
        real_launch = plan.launch
        plan.launch = (lambda: (1,), lambda: (1,))  # cudaErrorInvalidValue
        with pytest.raises(CudaError, match="cudaGraphLaunch"):
            s.step(case.call(4)[0])
        assert s.in_arena == k_in
        for n, v in s.state.items():
            np.testing.assert_array_equal(v, before[n])
        plan.launch = real_launch
        feeds, expected = case.call(4)
        np.testing.assert_allclose(backend.to_host(s.step(feeds)["lstm1"]), expected["lstm1"], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("host_outputs", [True, False])
def test_ioset_one_upload_one_download(host_outputs):
    """Staged inputs sit at the same offsets in pinned and device memory, outputs likewise relative to the
    first output: one H2D and one D2H move them all (checked on the host simulation)."""
    from rnnrt.runtime.device import IOSet as _IOSet

    mod = cudasim.make_module()
    sim = mod.sim
    f32, f16 = np.dtype(np.float32), np.dtype(np.float16)
    inputs = [("a", (3, 5), f32, True), ("dev", (7,), f32, False), ("b", (1,), f16, True), ("c", (2, 300), f32, True)]
    outputs = [("y", (4, 3), f32), ("z", (1,), f16), ("w", (65,), f32)]
    io = _IOSet(mod, inputs, outputs, host_outputs)
    try:
        rng = np.random.default_rng(0)
        for n in ("a", "b", "c"):
            io.host[n][...] = rng.uniform(-1, 1, io.host[n].shape)
        mod.memcpy_async(*io.h2d, "h2d", None)
        assert sim.copies == 0, "the simulation runs enqueued work only when it is waited for"
        mod.synchronize()
        assert sim.copies == 1
        dev = {n: io.device.view(t.dtype, t.shape, t.ptr - io.device.ptr) for n, t in io.tensors.items()}
        for n in ("a", "b", "c"):
            np.testing.assert_array_equal(dev[n], io.host[n], err_msg=n)
        assert io.h2d[2] <= io.tensors["dev"].ptr - io.device.ptr, "the upload must not cover device-fed inputs"
        for n, _, _ in outputs:
            dev[n][...] = rng.uniform(-1, 1, dev[n].shape)
        mod.memcpy_async(*io.d2h, "d2h", None)
        mod.synchronize()
        if host_outputs:
            assert sim.copies == 2
            for n, _, _ in outputs:
                np.testing.assert_array_equal(io.host[n], dev[n], err_msg=n)
        else:
            assert sim.copies == 1 and io.d2h[2] == 0 and "y" not in io.host
    finally:
        io.free()


def _frozen(slots):
    """The same read-only slot array for the same slots (a StreamPool plan's): the Session's fast path."""
    if slots is None:
        return None
    key = tuple(slots)
    if key not in _FROZEN:
        arr = np.array(slots, dtype=np.intp)
        arr.flags.writeable = False
        _FROZEN[key] = arr
    return _FROZEN[key]


_FROZEN: dict = {}


@pytest.mark.parametrize("slot_kind", ["list", "frozen"])
@pytest.mark.parametrize("outputs", ["host", "view", "device"])
@pytest.mark.parametrize("feedback,graph", MODES, ids=[f"{f}-{'graph' if g else 'eager'}" for f, g in MODES])
def test_step_slots_leaves_absent_slots_bit_identical(backend, golden, converted, feedback, graph, outputs, slot_kind):
    """step(feeds, slots=...) on the device: absent slots' state bit-identical (no host round trip), the
    listed slots equal the ORT Session under the same calls, outputs in the listed order. ``frozen``:
    recurring read-only slot arrays, which take the fast path (swap, graphs) between resets."""
    yaml, d = converted("b_lstm_batch_resets")  # T=8, batch 3 (fixed), auto-filled cont
    rng = np.random.default_rng(11)
    plan = [None, [2], [1, 0], [0, 1, 2], [2, 0, 1], [1], None, [0, 2], [1, 0], [2], [1, 0], [0, 2]]
    if slot_kind == "frozen":
        plan = [_frozen(p) for p in plan]
    with backend.session(yaml, d, feedback=feedback, cuda_graph=graph, outputs=outputs) as s, \
            rnnrt.load(yaml, backend="onnxruntime") as ref:
        s.reset(slots=[1])
        ref.reset(slots=[1])
        for k, slots in enumerate(plan * 2):
            n = 3 if slots is None else len(slots)
            x = rng.uniform(-1, 1, (8, n, 5)).astype(np.float32)
            before = s.state
            if k == 9:
                s.reset(slots=[2])
                ref.reset(slots=[2])
            got = s.step({"data": x}, slots=slots)["lstm1"]
            want = ref.step({"data": x}, slots=slots)["lstm1"]
            if outputs == "device":
                assert hasattr(got, "__cuda_array_interface__")
                got = backend.to_host(got)
            assert got.shape == (8, n, 7)
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=f"call {k} slots {slots}")
            after = s.state
            absent = sorted(set(range(3)) - set(range(3) if slots is None else slots.tolist() if
                                                 isinstance(slots, np.ndarray) else slots))
            for name, v in ref.state.items():
                np.testing.assert_allclose(after[name], v, atol=ATOL, rtol=RTOL, err_msg=f"state {name} call {k}")
                if k != 9:
                    assert after[name][absent].tobytes() == before[name][absent].tobytes(), f"{name} call {k}"
            if outputs == "view" and slots is None:
                assert not got.flags.owndata, "outputs='view' returns the staging buffer itself"


def test_input_buffers_are_the_staging(backend, golden, converted):
    """Frames written into input_buffers() are read in place (no copy) by the graph fast path."""
    case = golden("b_lstm_batch_resets")
    yaml, d = converted("b_lstm_batch_resets")
    with backend.session(yaml, d, feedback="swap", cuda_graph=True, outputs="view") as s, \
            rnnrt.load(yaml, backend="onnxruntime") as ref:
        bufs = s.input_buffers()
        rng = np.random.default_rng(12)
        for k in range(6):
            x = rng.uniform(-1, 1, (8, 3, 5)).astype(np.float32)
            bufs["data"][...] = x
            got = s.step({"data": bufs["data"]})["lstm1"]
            np.testing.assert_allclose(got, ref.step({"data": x})["lstm1"], atol=ATOL, rtol=RTOL, err_msg=f"call {k}")
        assert s.executor.fast is not None


def test_pool_on_device_session_matches_host_pool(backend, golden, converted):
    """A StreamPool over a device Session (graph/swap) with idle streams equals one over the ORT Session
    fed the same ticks; idle streams' state is bit-identical across the ticks they miss."""
    from rnnrt.runtime.pool import StreamPool

    yaml, d = converted("b_lstm_batch_resets")  # batch 3 (fixed): three slots
    rng = np.random.default_rng(13)
    ticks = [["a", "b", "c"], ["c", "a"], ["b"], ["a", "b", "c"], ["b", "c", "a"], [], ["c"], ["a", "b", "c"]]
    with backend.session(yaml, d, feedback="swap", cuda_graph=True) as s, \
            rnnrt.load(yaml, backend="onnxruntime") as ref:
        pool, ref_pool = StreamPool(s), StreamPool(ref)
        for p in (pool, ref_pool):
            for sid in "abc":
                p.open(sid)
        for k, ids in enumerate(ticks):
            if k == 4:
                pool.reset("b")
                ref_pool.reset("b")
            frames = {sid: rng.uniform(-1, 1, (8, 1, 5)).astype(np.float32) for sid in ids}
            idle = {sid: pool.snapshot(sid) for sid in "abc" if sid not in ids}
            got, want = pool.step(frames), ref_pool.step(frames)
            assert list(got) == ids
            for sid in ids:
                np.testing.assert_allclose(got[sid]["lstm1"], want[sid]["lstm1"], atol=ATOL, rtol=RTOL,
                                           err_msg=f"tick {k} stream {sid}")
            for sid, before in idle.items():
                after = pool.snapshot(sid)
                for n, v in before.tensors.items():
                    assert after.tensors[n].tobytes() == v.tobytes(), f"tick {k}: idle stream {sid} {n} changed"


def _count_fast_rows(session) -> list:
    """Wraps the device executor's fast path for slots: the returned list gets True per step it took
    (False when it declined); bound into the plan when the plan is made, so call before stepping."""
    fast_rows, taken = session.executor._fast_rows, []

    def counted(*args):
        result = fast_rows(*args)
        taken.append(result is not None)
        return result

    session.executor._fast_rows = counted
    return taken


@pytest.mark.parametrize("opened", ["abc", "ab"])  # "ab": slot 2 never steps (keeps its sequence-start mark)
@pytest.mark.parametrize("outputs", ["host", "view"])
def test_pool_step_batch_on_device_session_matches_host_pool(backend, golden, converted, outputs, opened):
    """pool.step_batch over a device Session (graph/swap), recurring patterns of present streams (the
    pool's plans, the Session's checked slots and the arena's cached row blocks are reused), equals
    the same calls on an ORT pool; absent streams' state is bit-identical; the fast path is taken, also
    while a slot no stream uses still carries its sequence-start mark."""
    from rnnrt.runtime.pool import StreamPool

    yaml, d = converted("b_lstm_batch_resets")  # batch 3 (fixed): three slots
    rng = np.random.default_rng(14)
    patterns = [("a", "b"), ("c", "a"), ("a", "b", "c"), ("b",), ("c", "b", "a"), ("b", "c")]
    patterns = [tuple(sid for sid in p if sid in opened) for p in patterns]
    with backend.session(yaml, d, feedback="swap", cuda_graph=True, outputs=outputs) as s, \
            rnnrt.load(yaml, backend="onnxruntime") as ref:
        pool, ref_pool = StreamPool(s), StreamPool(ref)
        for p in (pool, ref_pool):
            for sid in opened:
                p.open(sid)
        taken = _count_fast_rows(s)
        for k in range(18):
            ids = patterns[(k * 5) % len(patterns)]
            if k == 7:
                pool.reset("b")
                ref_pool.reset("b")
            x = rng.uniform(-1, 1, (8, len(ids), 5)).astype(np.float32)
            idle = {sid: pool.snapshot(sid) for sid in opened if sid not in ids}
            got = np.array(pool.step_batch(ids, {"data": x})["lstm1"])
            want = ref_pool.step_batch(ids, x)["lstm1"]
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=f"call {k} {ids}")
            for sid, before in idle.items():
                after = pool.snapshot(sid)
                for n, v in before.tensors.items():
                    assert after.tensors[n].tobytes() == v.tobytes(), f"call {k}: idle stream {sid} {n} changed"
        assert sum(taken) >= 8, f"the fast path for slots ran {sum(taken)} times"


@pytest.mark.parametrize("case", ["g1_lrcn_conv_lstm", "g4_mixed_ops"])  # folded input / folded output
@pytest.mark.parametrize("outputs", ["host", "device"])
@pytest.mark.parametrize("feedback,graph", [("swap", True), ("copy", False)])
def test_step_slots_on_folded_rows(dynamic, monkeypatch, feedback, graph, outputs, case):
    """A device Session over a model whose batch axis folds the streams with time (LRCN: T*N frame rows,
    batch_fold) steps only the listed slots: rows scattered into and gathered out of (outer, N, inner),
    absent slots' state bit-identical, listed slots == the ORT Session under the same calls; a StreamPool
    over it == a host pool (simulated CUDA; the folded model runs in ONNX Runtime behind the device API)."""
    from rnnrt.runtime.pool import StreamPool

    mod = cudasim.install(monkeypatch)
    yaml = dynamic(case)
    cfg = load_config(yaml)
    assert any(t.batch_fold for t in cfg.inputs + cfg.outputs), "the case must fold streams with time"
    B = 4
    rng = np.random.default_rng(21)
    plan = [None, [2], [1, 0], [3, 0, 2], None, [0, 1, 2, 3], [3], [2, 1]]
    with Session(yaml, lambda: SimOrtEngine(yaml, mod), batch_size=B, feedback=feedback, cuda_graph=graph,
                 outputs=outputs) as s, rnnrt.load(yaml, backend="onnxruntime", batch_size=B, threads=1) as ref:
        user = [name for name in s.io.input_names if s.io.cont is None or name != s.io.cont.spec.name]
        for k, slots in enumerate(plan * 2):
            n = B if slots is None else len(slots)
            frame = {name: rng.uniform(-1, 1, s.io.inputs[name].full_shape(n, {})).astype(np.float32)
                     for name in user}
            if k == 9:
                s.reset(slots=[1])
                ref.reset(slots=[1])
            before = s.state
            # Every fourth call feeds (simulated) device arrays: rows copied on the device into the batch.
            fed = {n: cudasim.device_array(mod, v) for n, v in frame.items()} if k % 4 == 3 else frame
            got = s.step(fed, slots=slots)
            want = ref.step(frame, slots=slots)
            for name, value in want.items():
                value_got = got[name]
                if outputs == "device":
                    value_got = value_got.get()
                assert value_got.shape == value.shape, name
                np.testing.assert_allclose(value_got, value, atol=ATOL, rtol=RTOL, err_msg=f"{name} call {k} {slots}")
            after = s.state
            absent = sorted(set(range(B)) - set(range(B) if slots is None else slots))
            for name, v in ref.state.items():
                np.testing.assert_allclose(after[name], v, atol=ATOL, rtol=RTOL, err_msg=f"state {name} call {k}")
                axis = next(st.batch_axis for st in cfg.state if st.input == name)
                if k != 9:
                    assert np.take(after[name], absent, axis=axis).tobytes() == \
                        np.take(before[name], absent, axis=axis).tobytes(), f"{name} call {k}"
    if outputs == "device":
        return
    with Session(yaml, lambda: SimOrtEngine(yaml, mod), batch_size=B, feedback=feedback, cuda_graph=graph) as s, \
            rnnrt.load(yaml, backend="onnxruntime", batch_size=B, threads=1) as ref:
        pool, ref_pool = StreamPool(s), StreamPool(ref)
        for p in (pool, ref_pool):
            for sid in "abc":
                p.open(sid)
        one = {name: s.io.inputs[name].full_shape(1, {}) for name in user}
        for k, ids in enumerate([["a", "b", "c"], ["c", "a"], ["b"], ["a", "c", "b"]] * 2):
            frames = {sid: {name: rng.uniform(-1, 1, shape).astype(np.float32) for name, shape in one.items()}
                      for sid in ids}
            got, want = pool.step(frames), ref_pool.step(frames)
            for sid in ids:
                for name, value in want[sid].items():
                    np.testing.assert_allclose(got[sid][name], value, atol=ATOL, rtol=RTOL,
                                               err_msg=f"pool tick {k} stream {sid} {name}")


@pytest.mark.parametrize("outputs", ["host", "view"])  # "device": on the GPU (DeviceArray.get), below
@pytest.mark.parametrize("feedback,graph", [("swap", True), ("copy", False)])
def test_step_chunk_on_a_device_session(dynamic, monkeypatch, feedback, graph, outputs):
    """A device Session's step_chunk (one step per frame, put back on failure) == the host Session's
    (simulated CUDA; ONNX Runtime behind the device API): outputs, state; a failure at frame 2 of 3
    leaves every slot as before."""
    mod = cudasim.install(monkeypatch)
    yaml = dynamic("c_lstm_stacked_ip_softmax")
    B = 4
    rng = np.random.default_rng(22)
    with Session(yaml, lambda: SimOrtEngine(yaml, mod), batch_size=B, feedback=feedback, cuda_graph=graph,
                 outputs=outputs) as s, rnnrt.load(yaml, backend="onnxruntime", batch_size=B, threads=1) as ref:
        assert getattr(s.executor, "run_chunk", None) is None  # the Session's step-by-step path
        for k, slots in enumerate([None, [2, 0], [3], None]):
            n = B if slots is None else len(slots)
            frames = {"data": rng.uniform(-1, 1, (k + 1,) + s.io.inputs["data"].full_shape(n, {}))
                      .astype(np.float32)}
            if k == 2:
                s.reset(slots=[3])
                ref.reset(slots=[3])
            got, want = s.step_chunk(frames, slots=slots), ref.step_chunk(frames, slots=slots)
            for name, value in want.items():
                assert got[name].shape == value.shape
                np.testing.assert_allclose(got[name], value, atol=ATOL, rtol=RTOL, err_msg=f"{name} call {k}")
        before, marks = s.state, s.sequence_starts.copy()
        real, calls = s.executor.run, []

        def run(*args):  # frame 2 fails (with CUDA graphs the engine's enqueue is not called per step)
            calls.append(1)
            if len(calls) == 2:
                raise EngineError("device lost")
            return real(*args)

        monkeypatch.setattr(s.executor, "run", run)
        s.reset(slots=[1])
        marks[1] = True
        with pytest.raises(EngineError, match="device lost"):
            s.step_chunk({"data": rng.uniform(-1, 1, (3,) + s.io.inputs["data"].full_shape(2, {}))
                          .astype(np.float32)}, slots=[1, 2])
        after = s.state
        for name, value in before.items():
            if name in after:
                rows = [0, 2, 3]  # slot 1 was reset (zeroed) before the chunk: compare the others
                axis = next(st.batch_axis for st in load_config(yaml).state if st.input == name)
                assert np.take(after[name], rows, axis=axis).tobytes() == \
                    np.take(value, rows, axis=axis).tobytes(), name
                assert not np.take(after[name], [1], axis=axis).any(), name
        np.testing.assert_array_equal(s.sequence_starts, marks)


@pytest.mark.parametrize("outputs", ["host", "device"])
@pytest.mark.parametrize("feedback,graph", [("swap", True), ("copy", False)])
def test_pool_step_chunk_on_device_session_matches_host_pool(backend, golden, converted, feedback, graph, outputs,
                                                             monkeypatch):
    """pool.step_chunk over a device Session (the stand-in engine on the GPU, or simulated) == the same
    chunks on an ORT pool, with idle streams (bit-identical across the chunks they miss) and a reset."""
    from rnnrt.runtime.pool import StreamPool

    yaml, d = converted("b_lstm_batch_resets")  # batch 3 (fixed): three slots
    rng = np.random.default_rng(14)
    with backend.session(yaml, d, feedback=feedback, cuda_graph=graph, outputs=outputs) as s, \
            rnnrt.load(yaml, backend="onnxruntime") as ref:
        pool, ref_pool = StreamPool(s), StreamPool(ref)
        for p in (pool, ref_pool):
            for sid in "abc":
                p.open(sid)
        taken = _count_fast_rows(s)
        for k, ids in enumerate([("a", "b", "c"), ("c", "a"), ("b",), ("b", "c", "a"), ("a",), ("c", "a")]):
            if k == 3:
                pool.reset("c")
                ref_pool.reset("c")
            x = rng.uniform(-1, 1, (k + 1, 8, len(ids), 5)).astype(np.float32)
            idle = {sid: pool.snapshot(sid) for sid in "abc" if sid not in ids}
            got, want = pool.step_chunk(ids, x), ref_pool.step_chunk(ids, x)
            assert got["lstm1"].shape == want["lstm1"].shape and got["lstm1"].shape[:3] == (k + 1, 8, len(ids))
            np.testing.assert_allclose(got["lstm1"], want["lstm1"], atol=ATOL, rtol=RTOL, err_msg=f"chunk {k} {ids}")
            for sid, before in idle.items():
                after = pool.snapshot(sid)
                for n, v in before.tensors.items():
                    assert after.tensors[n].tobytes() == v.tobytes(), f"chunk {k}: idle stream {sid} {n} changed"
        if feedback == "swap" and graph and outputs == "host":  # a chunk's frames take the fast path for slots
            assert sum(taken) >= 5, f"the fast path for slots ran {sum(taken)} times"
        # The same chunks again and again (the arenas swap under the backup copy): the row-copy tables are
        # made once per (slots, source arena) and then only launched, and no device memory grows.
        x = rng.uniform(-1, 1, (3, 8, 2, 5)).astype(np.float32)  # 3 frames: with swap, the source alternates
        for _ in range(2):
            pool.step_chunk(("c", "a"), x)
        copier, prepared = s.executor._copier, []
        real_prepare = copier.prepare
        monkeypatch.setattr(copier, "prepare", lambda *a: prepared.append(1) or real_prepare(*a))
        live = backend.live()
        for _ in range(6):
            pool.step_chunk(("c", "a"), x)
        assert backend.live() == live and not prepared, prepared


@pytest.mark.parametrize("outputs", ["host", "view"])
def test_batcher_over_device_session_equals_each_stream_alone(backend, golden, converted, outputs):
    """Three asyncio tasks and a thread stream through one StreamBatcher over a device Session (graph/swap;
    its 3 slots: when all step, frames go straight into the pinned staging), with a reset and a close +
    reopen; each stream equals the same frames stepped alone on an ORT pool; ticks batch the streams."""
    import asyncio
    import threading

    from rnnrt.runtime.batcher import StreamBatcher
    from rnnrt.runtime.pool import StreamPool
    from tests.runtime.batcher_script import control

    yaml, d = converted("b_lstm_batch_resets")  # batch 3 (fixed)
    rng = np.random.default_rng(21)
    ops = {sid: [("frame", rng.uniform(-1, 1, (8, 1, 5)).astype(np.float32)) for _ in range(8)] for sid in "abc"}
    ops["a"].insert(4, ("reset", None))
    ops["b"].insert(3, ("close", None))
    with backend.session(yaml, d, feedback="swap", cuda_graph=True, outputs=outputs) as s, \
            rnnrt.load(yaml, backend="onnxruntime") as ref:
        ref_pool = StreamPool(ref)
        want = {}
        for sid, seq in ops.items():
            ref_pool.open(sid)
            want[sid] = []
            for kind, x in seq:
                if kind == "frame":
                    want[sid].append(ref_pool.step({sid: {"data": x}})[sid]["lstm1"])
                else:
                    ref_pool.reset(sid)
            ref_pool.close(sid)
        got = {sid: [] for sid in ops}
        batcher = StreamBatcher(StreamPool(s), max_delay_ms=20.0)

        def thread(sid):
            for kind, x in ops[sid]:
                if not control(batcher, sid, kind):
                    got[sid].append(batcher.submit(sid, x).result(30)["lstm1"])

        async def main():
            async def task(sid):
                for kind, x in ops[sid]:
                    if not control(batcher, sid, kind):
                        got[sid].append((await batcher.step(sid, {"data": x}))["lstm1"])

            thread_c = threading.Thread(target=thread, args=("c",))
            thread_c.start()
            await asyncio.gather(task("a"), task("b"))
            await asyncio.get_running_loop().run_in_executor(None, thread_c.join)
            await batcher.aclose()

        asyncio.run(main())
        for sid in ops:
            assert len(got[sid]) == len(want[sid])
            for k, (g, w) in enumerate(zip(got[sid], want[sid])):
                assert isinstance(g, np.ndarray)
                np.testing.assert_allclose(g, w, atol=ATOL, rtol=RTOL, err_msg=f"stream {sid} frame {k}")
        m = batcher.metrics()
        assert m.frames == 24 and m.engine_steps < 24 and m.mean_batch > 1


def test_batcher_blocks_over_device_session_equal_each_stream_alone(backend, golden, converted):
    """Blocks (host arrays, and device arrays passed through without a copy), single frames and a close go
    through one StreamBatcher over a device Session (graph/swap): each stream equals its frames stepped alone
    on an ORT pool; a block of all three streams is one engine step."""
    from rnnrt.runtime.batcher import StreamBatcher
    from rnnrt.runtime.pool import StreamPool

    yaml, d = converted("b_lstm_batch_resets")  # batch 3 (fixed), frames (8, 1, 5): batch axis 1
    rng = np.random.default_rng(22)
    ids = ("a", "b", "c")
    blocks = [rng.uniform(-1, 1, (8, 3, 5)).astype(np.float32) for _ in range(4)]
    single = rng.uniform(-1, 1, (8, 1, 5)).astype(np.float32)
    with backend.session(yaml, d, feedback="swap", cuda_graph=True) as s, \
            rnnrt.load(yaml, backend="onnxruntime") as ref:
        ref_pool = StreamPool(ref)
        want = {sid: [] for sid in ids}
        for k, x in enumerate(blocks):
            if k == 2:  # b gets one frame of its own, then is closed (and reopened afresh by the next block)
                want["b"].append(ref_pool.step({"b": {"data": single}})["b"]["lstm1"])
                ref_pool.close("b")
            for i, sid in enumerate(ids):
                if sid not in ref_pool:
                    ref_pool.open(sid)
                want[sid].append(ref_pool.step({sid: {"data": x[:, i:i + 1]}})[sid]["lstm1"])
        got = {sid: [] for sid in ids}
        batcher = StreamBatcher(StreamPool(s), max_delay_ms=5.0)
        for k, x in enumerate(blocks):
            if k == 2:
                got["b"].append(batcher.submit("b", {"data": single}).result(30)["lstm1"])
                batcher.close_stream("b")
            feeds = {"data": backend.device_array(x) if k % 2 else x}
            out = batcher.submit_batch(ids, feeds).result(30)["lstm1"]
            assert isinstance(out, np.ndarray)
            for i, sid in enumerate(ids):
                got[sid].append(out[:, i:i + 1])
        batcher.close()
        for sid in ids:
            assert len(got[sid]) == len(want[sid])
            for k, (g, w) in enumerate(zip(got[sid], want[sid])):
                np.testing.assert_allclose(g, w, atol=ATOL, rtol=RTOL, err_msg=f"stream {sid} frame {k}")
        m = batcher.metrics()
        assert m.frames == 13 and m.engine_steps == 5
