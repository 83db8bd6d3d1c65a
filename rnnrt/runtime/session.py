"""The Session: runs a step graph frame by frame and carries its recurrent state.

One :class:`Session` class serves every engine. It owns the state buffers, feeds them to the engine,
feeds the state outputs back to the state inputs after every successful step, fills the continuation
input when the caller omits it, and resets whole batches or chosen slots.

Example::

    import rnnrt

    with rnnrt.load("out/model.yaml") as session:
        for frame in frames:                      # frame: (1, 1, 5) float32, or {"data": ..., "cont": ...}
            y = session.step(frame)["lstm1"]
        session.reset(slots=[0])                  # slot 0 starts a new sequence

Feed rules (``step``):

- Every fed name must be a user input of the config (state inputs are the Session's).
- dtype: an ndarray must have the binding's dtype, or one numpy casts to it *safely* (e.g. float16 or
  int8 -> float32); it is then cast. Unsafe casts (float64 -> float32, int64 -> float32) are refused
  so that precision is never lost silently. Python scalars and lists are converted to the binding's dtype.
- shape: must equal the config shape with the batch dim replaced by the session's batch size; other
  dynamic dims may take any size, the same size wherever the same name appears.
- The continuation input may be omitted (``continuation.fill: auto``): the Session feeds 1, and 0 at
  the first time step of slots reset since the last step. A fed continuation input is used as is.

State: one contiguous arena per direction (inputs, outputs), allocated once and zeroed; each state
tensor is a view into it. The engine writes the next state into the output arena, so a failed step
leaves the input arena (the state) untouched. After a successful step the output arena is copied into
the input arena (``feedback: copy``) or the two are swapped (``feedback: swap``).

GPU (an engine with ``memory == "device"``, e.g. :class:`rnnrt.engines.trt.TrtEngine`): the arenas are
two ``cudaMalloc`` allocations and everything runs on the Session's own CUDA stream. ``copy`` feedback
is one device-to-device ``cudaMemcpyAsync`` of the whole arena per step; ``swap`` re-points the engine's
state bindings instead (no copy). ``reset()`` is one ``cudaMemsetAsync``; ``reset(slots)`` one
``cudaMemset2DAsync`` per state tensor and run of consecutive slots. Host frames go through pinned
staging buffers; device arrays (``__cuda_array_interface__`` or DLPack: CuPy, torch, pycuda) are read
in place when their dtype, shape and contiguity match exactly (no casts on the device). Outputs are
numpy arrays (``outputs="host"``) or :class:`rnnrt.cuda.DeviceArray` views that the next step
overwrites (``outputs="device"``). With ``cuda_graph=True`` the H2D copies, the engine, the feedback
copy and the D2H copies are captured once per set of input shapes (one graph per arena orientation
with ``swap``) and replayed; engines that cannot be captured fall back to plain enqueues with one log
line. In graph mode a device-array input is copied (one D2D copy) into the buffer the graph reads, and a
step whose numpy frame has exactly the layout of the previous one (names, dtypes, shapes) reuses a
cached plan: each array is checked against it and copied straight into pinned staging, and the graph is
launched; any other frame takes the full path (casts, errors, a new plan).
:attr:`Session.state`, :meth:`Session.read_state` and :meth:`Session.write_state` go through host copies.
:meth:`Session.step_async` enqueues a step and returns a :class:`StepHandle`; ``step(x)`` is
``step_async(x).wait()``.
"""

from __future__ import annotations

import logging
import os
import types
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import numpy as np

from rnnrt.config import ModelConfig, load_config
from rnnrt.errors import BindingError, ConfigError, StateError, fmt

G_LOGGER = logging.getLogger("rnnrt")

__all__ = ["Session", "StepHandle", "load"]

# Arena offsets are aligned like device allocations so the same layout serves device memory.
_ALIGN = 256


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        raise ConfigError(fmt("dtype 'bfloat16'", "Has no numpy equivalent on the host", "Use float32 or float16 bindings."))
    return np.dtype(name)


class _HostArena:
    """One contiguous host buffer holding several tensors, each a view at an aligned offset.

    A device arena (GPU Session) has the same methods over one device allocation.
    """

    def __init__(self, layout: list[tuple[str, tuple[int, ...], np.dtype]]) -> None:
        offsets, end = [], 0
        for _, shape, dtype in layout:
            end = -(-end // _ALIGN) * _ALIGN
            offsets.append(end)
            end += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        self.buffer = np.zeros(end, dtype=np.uint8)
        self.views: dict[str, np.ndarray] = {
            name: np.ndarray(shape, dtype=dtype, buffer=self.buffer, offset=off)
            for (name, shape, dtype), off in zip(layout, offsets)
        }

    def zero(self) -> None:
        self.buffer.fill(0)

    def zero_slots(self, axes: Mapping[str, int], slots: np.ndarray) -> None:
        for name, view in self.views.items():
            index = [slice(None)] * view.ndim
            index[axes[name]] = slots
            view[tuple(index)] = 0

    def copy_from(self, other: "_HostArena") -> None:
        np.copyto(self.buffer, other.buffer)

    def read(self, name: str) -> np.ndarray:
        view = self.views[name].view()
        view.flags.writeable = False
        return view

    def read_rows(self, axes: Mapping[str, int], slots: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.take(view, slots, axis=axes[name]) for name, view in self.views.items()}

    def write_rows(self, axes: Mapping[str, int], slots: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        for name, view in self.views.items():
            index = [slice(None)] * view.ndim
            index[axes[name]] = slots
            view[tuple(index)] = values[name]


_ARENAS: dict[str, Callable[[list], Any]] = {"host": _HostArena}


def _aligned_layout(sizes: list[int]) -> tuple[list[int], int]:
    offsets, end = [], 0
    for n in sizes:
        end = -(-end // _ALIGN) * _ALIGN
        offsets.append(end)
        end += int(n)
    return offsets, end


class _DeviceArena:
    """The device twin of :class:`_HostArena`: one ``cudaMalloc`` allocation, a DeviceTensor per state.

    Every operation is enqueued on the Session's stream; host reads go through a pinned mirror.
    """

    def __init__(self, layout: list[tuple[str, tuple[int, ...], np.dtype]], stream: Any) -> None:
        from rnnrt import cuda
        from rnnrt.engines.base import DeviceTensor

        self._cuda = cuda
        self.stream = stream
        sizes = [int(np.prod(shape, dtype=np.int64)) * dtype.itemsize for _, shape, dtype in layout]
        offsets, self.nbytes = _aligned_layout(sizes)
        self.layout = {name: (off, shape, dtype) for (name, shape, dtype), off in zip(layout, offsets)}
        self.buffer = cuda.DeviceBuffer(self.nbytes)
        self.views = {name: DeviceTensor(self.buffer.ptr + off, dtype, shape)
                      for name, (off, shape, dtype) in self.layout.items()}
        self._mirror: Any = None
        self.zero()

    def zero(self) -> None:
        self._cuda.memset_async(self.buffer.ptr, 0, self.nbytes, self.stream)

    def zero_slots(self, axes: Mapping[str, int], slots: np.ndarray) -> None:
        # Runs of consecutive slots; per state and run one 2D memset: `outer` rows (the dims before the
        # batch axis) of run*inner bytes, B*inner bytes apart. Batch axis 0 makes it a single row.
        runs, start = [], None
        ordered = np.unique(slots)
        for i, slot in enumerate(ordered):
            if start is None:
                start = slot
            if i + 1 == len(ordered) or ordered[i + 1] != slot + 1:
                runs.append((int(start), int(slot) + 1))
                start = None
        for name, (off, shape, dtype) in self.layout.items():
            axis = axes[name]
            outer = int(np.prod(shape[:axis], dtype=np.int64))
            inner = int(np.prod(shape[axis + 1:], dtype=np.int64)) * dtype.itemsize
            pitch = shape[axis] * inner
            for a, b in runs:
                self._cuda.memset2d_async(self.buffer.ptr + off + a * inner, pitch, 0, (b - a) * inner, outer,
                                          self.stream)

    def copy_from(self, other: "_DeviceArena") -> None:
        self._cuda.memcpy_async(self.buffer.ptr, other.buffer.ptr, self.nbytes, "d2d", self.stream)

    def _download(self) -> dict[str, np.ndarray]:
        if self._mirror is None:
            self._mirror = self._cuda.PinnedBuffer(self.nbytes)
        self._cuda.memcpy_async(self._mirror.ptr, self.buffer.ptr, self.nbytes, "d2h", self.stream)
        self.stream.synchronize()
        return {name: self._mirror.view(dtype, shape, off) for name, (off, shape, dtype) in self.layout.items()}

    def read(self, name: str) -> np.ndarray:
        view = self._download()[name].copy()
        view.flags.writeable = False
        return view

    def read_all(self) -> dict[str, np.ndarray]:
        views = {}
        for name, view in self._download().items():
            view = view.copy()
            view.flags.writeable = False
            views[name] = view
        return views

    def read_rows(self, axes: Mapping[str, int], slots: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.take(view, slots, axis=axes[name]) for name, view in self._download().items()}

    def write_rows(self, axes: Mapping[str, int], slots: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        for name, view in self._download().items():
            index: list[Any] = [slice(None)] * view.ndim
            index[axes[name]] = slots
            view[tuple(index)] = values[name]
        self._cuda.memcpy_async(self.buffer.ptr, self._mirror.ptr, self.nbytes, "h2d", self.stream)
        self.stream.synchronize()

    def free(self) -> None:
        self.buffer.free()
        if self._mirror is not None:
            self._mirror.free()
            self._mirror = None


class _IOSet:
    """Device buffers (and pinned staging) for one set of input shapes; graphs capture their addresses.

    The device buffer holds the host-staged inputs first, then the device-fed inputs, then the outputs.
    The pinned buffer mirrors the staged inputs at the same offsets, then the outputs (host outputs
    only) at the same offsets relative to the first output. So one H2D copy uploads every staged input
    and one D2H copy downloads every output (fewer copy nodes in a graph, fewer calls when eager).
    """

    def __init__(self, cuda: Any, inputs: list[tuple[str, tuple, np.dtype, bool]],
                 outputs: list[tuple[str, tuple, np.dtype]], host_outputs: bool) -> None:
        from rnnrt.engines.base import DeviceTensor

        staged = [(n, shape, dt) for n, shape, dt, on_host in inputs if on_host]
        fed = [(n, shape, dt) for n, shape, dt, on_host in inputs if not on_host]
        entries = staged + fed + list(outputs)
        sizes = [int(np.prod(shape, dtype=np.int64)) * dt.itemsize for _, shape, dt in entries]
        offsets, total = _aligned_layout(sizes)
        ns, no = len(staged), len(outputs)
        staged_end = offsets[ns - 1] + sizes[ns - 1] if ns else 0
        out_start = offsets[len(entries) - no] if no else total
        pin_out = -(-staged_end // _ALIGN) * _ALIGN  # where the outputs' mirror starts in pinned memory
        self.device = cuda.DeviceBuffer(total)
        try:
            self.pinned = cuda.PinnedBuffer(pin_out + (total - out_start if host_outputs else 0))
        except BaseException:
            self.device.free()
            raise
        self.tensors = {n: DeviceTensor(self.device.ptr + off, dt, shape)
                        for (n, shape, dt), off in zip(entries, offsets)}
        self.host = {n: self.pinned.view(dt, shape, off) for (n, shape, dt), off in zip(staged, offsets)}
        if host_outputs:
            self.host.update({n: self.pinned.view(dt, shape, off - out_start + pin_out)
                              for (n, shape, dt), off in zip(outputs, offsets[len(entries) - no:])})
        # (dst, src, nbytes) of the one upload and the one download.
        self.h2d = (self.device.ptr, self.pinned.ptr, staged_end)
        self.d2h = (self.pinned.ptr + pin_out, self.device.ptr + out_start, total - out_start if host_outputs else 0)
        self.nbytes = {n: size for (n, _, _), size in zip(entries, sizes)}
        self.staged_inputs = [n for n, _, _ in staged]
        self.device_inputs = [n for n, _, _ in fed]
        self.outputs = [n for n, _, _ in outputs]
        self.warm = False
        self.graphs: dict[int, Any] = {}

    def free(self) -> None:
        for g in self.graphs.values():
            g.destroy()
        self.graphs.clear()
        self.host = {}
        self.device.free()
        self.pinned.free()


class _FastPlan:
    """What a graph-mode step with the same frame layout as the last one needs, resolved once.

    Built after a step that went the whole way (checks, staging, graph launch) with host frames only.
    A later frame with the same names, each an exact ``np.ndarray`` of the same dtype and shape, is
    copied straight into the pinned staging views and the graph of the current parity is launched;
    anything else takes the full path, which raises the usual errors or builds a new plan. Graph mode
    stages the continuation input too: an auto-filled one stays all ones in pinned memory, so it is
    not copied at all (a step after reset() takes the full path, which writes the zeros; ``refill``
    then names the staging view to set back to ones before the next launch).
    """

    __slots__ = ("io", "inputs", "nfed", "bare", "launch", "swap", "host_outputs", "outputs", "refill")

    def __init__(self, io: "_IOSet", names: list[str], bare: bool, launch: tuple, swap: bool,
                 host_outputs: bool, output_names: list[str], stream: int, refill: Optional[np.ndarray]) -> None:
        self.io = io
        self.refill = refill
        # (name, dtype, shape, pinned staging view)
        self.inputs = tuple((n, io.host[n].dtype, io.host[n].shape, io.host[n]) for n in names)
        self.nfed = len(names)
        self.bare = bare
        self.launch = launch  # per parity (the input arena's index): a raw cudaGraphLaunch, or None
        self.swap = swap
        self.host_outputs = host_outputs
        if host_outputs:
            self.outputs = tuple((n, io.host[n]) for n in output_names)
        else:
            self.outputs = tuple((n, io.tensors[n].ptr, np.dtype(io.tensors[n].dtype),
                                  tuple(int(d) for d in io.tensors[n].shape), stream) for n in output_names)


class StepHandle:
    """An enqueued GPU step; :meth:`wait` returns its outputs (see :meth:`Session.step_async`)."""

    __slots__ = ("_session", "_io", "_keep", "_result")

    def __init__(self, session: Optional["Session"], io: Optional[_IOSet], keep: Any, result: Any = None) -> None:
        self._session = session
        self._io = io
        self._keep = keep
        self._result = result

    def done(self) -> bool:
        """Whether the step has finished on the GPU (never blocks)."""
        if self._result is not None:
            return True
        session = self._session
        return session is None or session._stream.query()

    def wait(self) -> dict[str, Any]:
        """Blocks until the step has finished and returns its outputs (what :meth:`Session.step` returns).

        Raises:
            StateError: The session was closed before the step was waited for.
            CudaError: The GPU reported an error for this step.
        """
        if self._result is not None:
            return self._result
        session = self._session
        if session is None or session._closed:
            raise StateError(fmt("StepHandle", "wait() was called after the session was closed",
                                 "Wait for a step before closing its session."))
        try:
            # One step in flight on the session's own stream: the stream's end is this step's end.
            session._stream.synchronize()
        finally:
            session._pending = None
            self._keep = None
        io = self._io
        if session._host_outputs:
            result = {name: np.array(io.host[name]) for name in session.output_names}
        else:
            from rnnrt.cuda import DeviceArray

            stream = session._stream.handle
            result = {name: DeviceArray(io.tensors[name].ptr, io.tensors[name].dtype, io.tensors[name].shape, stream)
                      for name in session.output_names}
        self._result = result
        self._session = None
        return result


class _InputSpec:
    __slots__ = ("name", "dtype", "shape", "symbols", "display")

    def __init__(self, name: str, dtype: np.dtype, shape: list, batch_symbols: set, batch: int) -> None:
        self.name = name
        self.dtype = dtype
        # Fixed dims as ints; other dynamic dims as None with their name in `symbols`.
        self.shape = tuple(batch if (isinstance(d, str) and d in batch_symbols) else (None if isinstance(d, str) else d)
                           for d in shape)
        self.symbols = tuple(d if (isinstance(d, str) and d not in batch_symbols) else None for d in shape)
        self.display = [d if d is not None else s for d, s in zip(self.shape, self.symbols)]


def _resolve_batch(cfg: ModelConfig, batch_size: Optional[int]) -> tuple[int, set]:
    """Returns the session batch size and the names of dynamic batch dims."""
    fixed: dict[int, str] = {}
    symbols: set = set()
    entries = [(t.name, t.shape, t.batch_axis) for t in cfg.inputs + cfg.outputs] + [
        (s.input, s.shape, s.batch_axis) for s in cfg.state
    ]
    for name, shape, axis in entries:
        if axis is None:
            continue
        dim = shape[axis]
        if isinstance(dim, str):
            symbols.add(dim)
        else:
            fixed.setdefault(dim, name)
    if len(fixed) > 1:
        raise ConfigError(
            fmt("Config", f"Bindings disagree on the batch size: {sorted(fixed.items())}", "All batch dims must be equal.")
        )
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise StateError(fmt("Session", f"batch_size={batch_size!r} is not a positive integer"))
    if fixed:
        (size, name), = fixed.items()
        if symbols:
            raise ConfigError(
                fmt("Config", f"Binding {name!r} has a fixed batch of {size} but others have dynamic batch {sorted(symbols)}",
                    "Use one batch dim for every binding.")
            )
        if batch_size is not None and batch_size != size:
            raise StateError(
                fmt("Session", f"batch_size={batch_size} was requested but the model's batch is fixed at {size}",
                    "Omit batch_size or export the model with a dynamic batch dim.")
            )
        return size, symbols
    if symbols:
        if batch_size is None:
            raise StateError(
                fmt("Session", f"The model has a dynamic batch dim {sorted(symbols)[0]!r} and no batch_size was given",
                    "Pass batch_size=N (the number of streams) to load() or Session().")
            )
        return int(batch_size), symbols
    return int(batch_size or 1), symbols


class Session:
    """Runs a step graph frame by frame, carrying its recurrent state.

    Example::

        from rnnrt.engines import OnnxRuntimeEngine
        cfg = rnnrt.config.load_config("model.yaml")
        with Session(cfg, lambda: OnnxRuntimeEngine(cfg.model_path)) as s:
            out = s.step({"data": x})
    """

    def __init__(
        self,
        config: Union[ModelConfig, str, os.PathLike],
        engine_or_factory: Any,
        *,
        batch_size: Optional[int] = None,
        feedback: Optional[str] = None,
        cuda_graph: Optional[bool] = None,
        outputs: str = "host",
        input_memory: Union[str, Mapping[str, str]] = "auto",
    ) -> None:
        """
        Args:
            config (ModelConfig | str | os.PathLike): The config, or its YAML file.
            engine_or_factory (BaseEngine | Callable[[], BaseEngine]): The engine, or a callable that makes
                one. The Session deactivates an engine it created or activated; it leaves an engine that
                was already active to its owner.
            batch_size (int | None): Number of slots. Required when the batch dim is dynamic; must equal
                a fixed batch dim otherwise. Defaults to None.
            feedback (str | None): ``"copy"`` or ``"swap"`` (see the module doc). Defaults to the config's
                ``session.feedback``.
            cuda_graph (bool | None): Device engines only: capture each step into a CUDA graph and replay
                it. Ignored for host engines. Defaults to the config's ``session.cuda_graph``.
            outputs (str): Device engines only: ``"host"`` returns numpy arrays, ``"device"`` returns
                :class:`rnnrt.cuda.DeviceArray` views that the next step overwrites. Defaults to ``"host"``.
            input_memory (str | Mapping[str, str]): Device engines only: where inputs may live, for all
                inputs or per input name: ``"auto"`` (numpy or device arrays), ``"host"`` (numpy only) or
                ``"device"`` (device arrays only). Defaults to ``"auto"``.
        """
        from rnnrt.engines.base import invoke_if_callable

        self._closed = True  # until set up; makes close() and __del__ safe on failure
        self._engine: Any = None
        self._release = False
        self._fast: Optional[_FastPlan] = None
        self.config = config if isinstance(config, ModelConfig) else load_config(config)
        cfg = self.config
        feedback = feedback or cfg.session.feedback
        if feedback not in ("copy", "swap"):
            raise StateError(fmt("Session", f"feedback={feedback!r} is not supported", "Use 'copy' or 'swap'."))
        self.feedback = feedback
        if outputs not in ("host", "device"):
            raise StateError(fmt("Session", f"outputs={outputs!r} is not supported", "Use 'host' or 'device'."))
        self.cuda_graph = bool(cfg.session.cuda_graph if cuda_graph is None else cuda_graph)
        self._host_outputs = outputs == "host"
        self._input_memory = input_memory
        self._device = False
        self._pending: Optional[StepHandle] = None
        self.batch_size, batch_symbols = _resolve_batch(cfg, batch_size)

        engine, created = invoke_if_callable(engine_or_factory)
        self._engine = engine
        self._release = created or not engine.is_active
        try:
            if not engine.is_active:
                engine.activate()
            self._setup(cfg, batch_symbols)
        except BaseException:
            self._free_device()
            if self._release and engine.is_active:
                engine.deactivate()
            raise
        self._closed = False

    def _setup(self, cfg: ModelConfig, batch_symbols: set) -> None:
        engine = self._engine
        arena_type = _ARENAS.get(engine.memory)
        if engine.memory == "device":
            arena_type = self._setup_device(cfg)
        elif not self._host_outputs:
            raise StateError(fmt("Session", f"outputs='device' needs a device engine; {engine.name!r} runs on the host",
                                 "Use outputs='host'."))
        if arena_type is None:
            raise StateError(
                fmt(f"Engine {engine.name!r}", f"Uses memory space {engine.memory!r}, which the Session does not support yet",
                    f"Supported: {sorted(_ARENAS)}.")
            )
        self._check_engine(cfg)

        B = self.batch_size
        self._inputs = {t.name: _InputSpec(t.name, _np_dtype(t.dtype), t.shape, batch_symbols, B) for t in cfg.inputs}
        self.input_names = [t.name for t in cfg.inputs]
        self.output_names = [t.name for t in cfg.outputs]
        user_inputs = [n for n in self.input_names if cfg.continuation is None or n != cfg.continuation.input]
        self._single_input = user_inputs[0] if len(user_inputs) == 1 else None

        # State: one arena per direction; both hold views keyed by the state *input* name.
        layout = []
        self._state_axes: dict[str, int] = {}
        for s in cfg.state:
            shape = tuple(B if isinstance(d, str) else d for d in s.shape)
            layout.append((s.input, shape, _np_dtype(s.dtype)))
            self._state_axes[s.input] = s.batch_axis
        arenas: list = []
        self._arenas = arenas  # a failure below frees what was made
        arenas.append(arena_type(layout))
        arenas.append(arena_type(layout))
        self._arenas = tuple(arenas)
        if self._device:
            self._dev_setup_io(cfg)
        self._in = 0
        # Per orientation k (arena k is the input arena): the engine feeds and output destinations.
        self._state_feeds = [
            {s.input: self._arenas[k].views[s.input] for s in cfg.state} for k in (0, 1)
        ]
        self._state_dests = [
            {s.output: self._arenas[1 - k].views[s.input] for s in cfg.state} for k in (0, 1)
        ]

        self._cont = cfg.continuation if (cfg.continuation and cfg.continuation.fill == "auto") else None
        self._required = [n for n in self.input_names if self._cont is None or n != self._cont.input]
        self._cont_cache: dict[tuple, np.ndarray] = {}
        # A fresh session starts every sequence at t=0.
        self._marks = np.ones(B, dtype=bool)
        self._any_marks = True

    def _setup_device(self, cfg: ModelConfig) -> Callable[[list], Any]:
        from rnnrt import cuda

        self._cuda = cuda
        self._device = True
        self._arenas = ()
        self._io_sets: dict[tuple, _IOSet] = {}
        self._dev_ctx = None
        self._stream = cuda.Stream()
        self._sync = cuda.raw_synchronizer(self._stream)
        self._sync_event = cuda.Event()
        self._device_id = cuda.current_device()
        self._dev_ctx = self._engine.create_context()
        self._graphs_ok = self.cuda_graph
        stream = self._stream
        return lambda layout: _DeviceArena(layout, stream)

    def _dev_setup_io(self, cfg: ModelConfig) -> None:
        policy = self._input_memory
        names = [t.name for t in cfg.inputs]
        if isinstance(policy, str):
            policy = {n: policy for n in names}
        else:
            unknown = sorted(set(policy) - set(names))
            if unknown:
                raise StateError(fmt(f"input_memory {unknown[0]!r}", "Is not an input of the model", f"Inputs: {names}."))
            policy = {n: policy.get(n, "auto") for n in names}
        for n, where in policy.items():
            if where not in ("auto", "host", "device"):
                raise StateError(fmt(f"input_memory[{n!r}]", f"Is {where!r}", "Use 'auto', 'host' or 'device'."))
        self._memory_policy = policy
        self._state_shapes = {s.output: self._arenas[0].views[s.input].shape for s in cfg.state}

    def _free_device(self) -> None:
        self._fast = None
        if not self._device:
            return
        self._device = False
        stream = getattr(self, "_stream", None)
        try:
            if stream is not None and stream.handle:
                stream.synchronize()
        finally:
            for io in getattr(self, "_io_sets", {}).values():
                io.free()
            self._io_sets = {}
            for arena in getattr(self, "_arenas", ()):
                arena.free()
            if getattr(self, "_dev_ctx", None) is not None and self._engine is not None:
                self._engine.destroy_context(self._dev_ctx)
                self._dev_ctx = None
            ev = getattr(self, "_sync_event", None)
            if ev is not None:
                ev.destroy()
            if stream is not None:
                stream.destroy()

    def _check_engine(self, cfg: ModelConfig) -> None:
        ins = {b.name: b for b in self._engine.input_bindings()}
        outs = {b.name: b for b in self._engine.output_bindings()}
        wanted_in = [(t.name, t.dtype) for t in cfg.inputs] + [(s.input, s.dtype) for s in cfg.state]
        wanted_out = [(t.name, t.dtype) for t in cfg.outputs] + [(s.output, s.dtype) for s in cfg.state]
        for role, wanted, have in (("input", wanted_in, ins), ("output", wanted_out, outs)):
            for name, dtype in wanted:
                b = have.get(name)
                if b is None:
                    raise ConfigError(
                        fmt(f"Config {role} {name!r}", f"Is not an {role} of engine {self._engine.name!r}",
                            f"The engine's {role}s are {sorted(have)}.")
                    )
                if dtype != "bfloat16" and np.dtype(b.dtype) != np.dtype(dtype):
                    raise ConfigError(
                        fmt(f"Config {role} {name!r}", f"Has dtype {dtype!r} but the engine has {np.dtype(b.dtype).name!r}",
                            "Rebuild the engine or fix the config.")
                    )
        extra = sorted(set(ins) - {n for n, _ in wanted_in})
        if extra:
            raise ConfigError(
                fmt(f"Engine input {extra[0]!r}", "Is not declared in the config", "Every engine input must be in the config.")
            )

    # Public API.
    def step(self, frame: Union[Mapping[str, Any], np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one step and carries the state.

        Args:
            frame (Mapping[str, np.ndarray] | np.ndarray): The user inputs by name. A bare array is
                allowed when the model has exactly one input besides the continuation input.

        Returns:
            dict[str, np.ndarray]: The user outputs by name (state outputs excluded).

        Raises:
            BindingError: A fed name is unknown, a shape or dtype does not match (see the module doc),
                or a required input is missing. The state is unchanged.
            StateError: The session is closed, or the engine failed. The state is unchanged.
        """
        plan = self._fast
        if plan is not None and self._pending is None and not self._any_marks and self._launch_fast(plan, frame):
            err = self._sync()[0]
            if err:
                self._cuda.raise_status(err, "cudaStreamSynchronize")
            if plan.host_outputs:
                return {name: view.copy() for name, view in plan.outputs}
            view = self._cuda.DeviceArray._view
            return {o[0]: view(*o[1:]) for o in plan.outputs}
        if self._device:
            return self.step_async(frame).wait()
        if self._closed:
            raise StateError(fmt("Session", "step() was called after close()", "Create a new Session."))
        if not isinstance(frame, Mapping):
            if self._single_input is None:
                raise BindingError(
                    fmt("Session.step", f"Got a bare {type(frame).__name__} but the model has inputs {self._required}",
                        "Pass a mapping {input name: array}.")
                )
            frame = {self._single_input: frame}
        feeds = dict(self._state_feeds[self._in])
        sizes: dict[str, int] = {}
        for name, value in frame.items():
            spec = self._inputs.get(name)
            if spec is None:
                self._unknown_input(name)
            feeds[name] = self._check(spec, value, sizes)
        self._complete(frame, feeds, sizes)

        results = self._engine.execute(feeds, self._state_dests[self._in])

        # Only now, after a successful run, does the state advance.
        if self._state_axes:
            if self.feedback == "swap":
                self._in = 1 - self._in
            else:
                self._arenas[self._in].copy_from(self._arenas[1 - self._in])
        if self._any_marks:
            self._marks[:] = False
            self._any_marks = False
        return {name: results[name] for name in self.output_names}

    def step_async(self, frame: Union[Mapping[str, Any], np.ndarray]) -> StepHandle:
        """Enqueues one step and returns at once; ``handle.wait()`` returns what :meth:`step` returns.

        On a host engine the step runs synchronously and the handle is already done. On a device engine
        the frame is checked and staged, the step (and its state feedback) is enqueued on the session's
        stream, and the host is free until :meth:`StepHandle.wait`. ``reset()`` may be called before
        ``wait()`` (it is ordered after the step); another ``step``/``step_async`` may not.

        Args:
            frame (Mapping[str, Any] | np.ndarray): As for :meth:`step`; on a device engine values may also
                be device arrays (``__cuda_array_interface__`` or DLPack) with exactly the binding's dtype
                and shape, C-contiguous, on the session's device.

        Returns:
            StepHandle: Call ``wait()`` for the outputs.

        Raises:
            BindingError: As for :meth:`step`; also a device array with another dtype, shape, layout or
                device, or an array in a memory space that ``input_memory`` excludes. The state is unchanged.
            StateError: The session is closed, or the previous step_async() was not waited for.
        """
        if not self._device:
            return StepHandle(None, None, None, self.step(frame))
        if self._closed:
            raise StateError(fmt("Session", "step_async() was called after close()", "Create a new Session."))
        if self._pending is not None:
            raise StateError(fmt("Session", "A step was started before the previous step_async() was waited for",
                                 "Call wait() on the previous handle first."))
        plan = self._fast
        if plan is not None and not self._any_marks and self._launch_fast(plan, frame):
            handle = StepHandle(self, plan.io, None)
            self._pending = handle
            return handle
        return self._step_device(frame)

    def _launch_fast(self, plan: _FastPlan, frame: Any) -> bool:
        """Stages ``frame`` and launches the graph through ``plan``; False, having done nothing, when the
        frame does not match the plan exactly (the full path then checks it)."""
        launch = plan.launch[self._in]
        if launch is None:
            return False
        if type(frame) is dict:
            if len(frame) != plan.nfed:
                return False
            for name, dtype, shape, _ in plan.inputs:
                value = frame.get(name)
                if type(value) is not np.ndarray or value.dtype != dtype or value.shape != shape:
                    return False
            for name, _, _, staging in plan.inputs:
                staging[...] = frame[name]
        elif plan.bare and type(frame) is np.ndarray:
            _, dtype, shape, staging = plan.inputs[0]
            if frame.dtype != dtype or frame.shape != shape:
                return False
            staging[...] = frame
        else:
            return False
        if plan.refill is not None:
            plan.refill[...] = 1
            plan.refill = None
        err = launch()[0]
        if err:
            self._cuda.raise_status(err, "cudaGraphLaunch")
        if plan.swap:
            self._in ^= 1
        return True

    def _step_device(self, frame: Union[Mapping[str, Any], np.ndarray]) -> StepHandle:
        cuda = self._cuda
        # The staging buffers may change below: no plan until this step has gone through.
        self._fast = None
        bare = type(frame) is not dict and not isinstance(frame, Mapping)
        if bare:
            if self._single_input is None:
                raise BindingError(
                    fmt("Session.step", f"Got a bare {type(frame).__name__} but the model has inputs {self._required}",
                        "Pass a mapping {input name: array}.")
                )
            frame = {self._single_input: frame}
        stream = self._stream
        host: dict[str, np.ndarray] = {}
        foreign: dict[str, Any] = {}
        sizes: dict[str, int] = {}
        policy = self._memory_policy
        for name, value in frame.items():
            spec = self._inputs.get(name)
            if spec is None:
                self._unknown_input(name)
            if isinstance(value, np.ndarray) or not cuda.is_device_array(value):
                if policy[name] == "device":
                    raise BindingError(
                        fmt(f"Input {name!r}", f"Received a host {type(value).__name__}",
                            "This binding takes device arrays only (input_memory='device'): pass a CuPy/torch "
                            "CUDA array.")
                    )
                host[name] = self._check(spec, value, sizes)
            else:
                if policy[name] == "host":
                    raise BindingError(
                        fmt(f"Input {name!r}", f"Received a device array ({type(value).__name__})",
                            "This binding takes host (numpy) arrays only (input_memory='host').")
                    )
                foreign[name] = self._check_device(spec, value, sizes)
        self._complete(frame, host, sizes)

        key = tuple((name, host[name].shape if name in host else foreign[name].shape, name in host)
                    for name in self.input_names)
        io = self._io_sets.get(key)
        if io is None:
            io = self._make_io(key)
        for name, arr in host.items():
            np.copyto(io.host[name], arr, casting="no")
        for fa in foreign.values():
            # The producer asked consumers to order after its stream (CUDA Array Interface v3).
            if fa.stream is not None and fa.stream != stream.handle:
                self._sync_event.record(fa.stream)
                stream.wait_event(self._sync_event)

        k = self._in
        graph = io.graphs.get(k) if self._graphs_ok else None
        if graph is None and self._graphs_ok and io.warm:
            graph = self._capture(io, k)
        if graph is not None:
            for name, fa in foreign.items():
                cuda.memcpy_async(io.tensors[name].ptr, fa.ptr, io.nbytes[name], "d2d", stream)
            graph.launch(stream)
        else:
            self._enqueue_eager(io, k, foreign)
            io.warm = True

        # The step is enqueued: the state advances (stream-ordered after the engine's writes).
        if self._state_axes and self.feedback == "swap":
            self._in = 1 - k
        if graph is not None and not foreign and type(frame) is dict and all(type(v) is np.ndarray for v in frame.values()):
            # A layout that _launch_fast accepts. The staging buffers now hold this frame and, if
            # auto-filled, a continuation of ones unless slots were reset before this step.
            auto_cont = self._cont is not None and self._cont.input not in frame
            refill = io.host[self._cont.input] if auto_cont and self._any_marks else None
            self._fast = self._make_plan(io, list(frame), bare, refill)
        if self._any_marks:
            self._marks[:] = False
            self._any_marks = False
        handle = StepHandle(self, io, [fa.keepalive for fa in foreign.values()] or None)
        self._pending = handle
        return handle

    def _make_plan(self, io: _IOSet, names: list[str], bare: bool, refill: Optional[np.ndarray]) -> _FastPlan:
        launch = tuple(self._cuda.raw_launcher(io.graphs[j], self._stream) if j in io.graphs else None
                       for j in (0, 1))
        return _FastPlan(io, names, bare, launch, bool(self._state_axes) and self.feedback == "swap",
                         self._host_outputs, self.output_names, self._stream.handle, refill)

    def _enqueue_eager(self, io: _IOSet, k: int, foreign: Mapping[str, Any], capture: bool = False) -> None:
        from rnnrt.engines.base import DeviceTensor

        cuda, stream = self._cuda, self._stream
        cuda.memcpy_async(*io.h2d, "h2d", stream)  # every staged input (nothing if none)
        feeds = dict(self._state_feeds[k])
        for name in self.input_names:
            fa = None if capture else foreign.get(name)
            feeds[name] = DeviceTensor(fa.ptr, fa.dtype, fa.shape) if fa is not None else io.tensors[name]
        dests = dict(self._state_dests[k])
        for name in io.outputs:
            dests[name] = io.tensors[name]
        self._engine.enqueue(self._dev_ctx, feeds, dests, stream.handle)
        if self._state_axes and self.feedback == "copy":
            self._arenas[0].copy_from(self._arenas[1])
        cuda.memcpy_async(*io.d2h, "d2h", stream)  # every output (nothing with outputs="device")

    def _capture(self, io: _IOSet, k: int) -> Any:
        from rnnrt.errors import RnnrtError

        if not getattr(self._engine, "capturable", True):
            G_LOGGER.info(f"Session | Engine {self._engine.name!r} cannot be captured into a CUDA graph; "
                          "running plain enqueues.")
            self._graphs_ok = False
            return None
        try:
            with self._cuda.capture(self._stream) as box:
                self._enqueue_eager(io, k, {}, capture=True)
        except (RnnrtError, RuntimeError) as err:
            G_LOGGER.info(f"Session | CUDA graph capture failed for engine {self._engine.name!r} "
                          f"({str(err).splitlines()[0]}); running plain enqueues.")
            self._graphs_ok = False
            return None
        io.graphs[k] = box[0]
        return box[0]

    def _make_io(self, key: tuple) -> _IOSet:
        shapes = {name: shape for name, shape, _ in key}
        for name, view in self._state_feeds[self._in].items():
            shapes[name] = view.shape
        out_shapes = self._engine.output_shapes(self._dev_ctx, shapes)
        for out, want in self._state_shapes.items():
            if tuple(out_shapes[out]) != tuple(want):
                raise StateError(
                    fmt(f"State output {out!r}", f"The engine makes shape {tuple(out_shapes[out])}",
                        f"Expected the state shape {tuple(want)}.")
                )
        outs = {o.name: o for o in self._engine.output_bindings()}
        inputs = [(name, shape, self._inputs[name].dtype, on_host) for name, shape, on_host in key]
        outputs = [(name, tuple(out_shapes[name]), np.dtype(outs[name].dtype)) for name in self.output_names]
        io = _IOSet(self._cuda, inputs, outputs, self._host_outputs)
        self._io_sets[key] = io
        return io

    def _check_device(self, spec: "_InputSpec", value: Any, sizes: dict[str, int]) -> Any:
        fa = self._cuda.foreign_array(value, spec.name, self._stream.handle)
        if fa.dtype != spec.dtype:
            raise BindingError(
                fmt(f"Input {spec.name!r}", f"Received a device array of dtype {fa.dtype.name}",
                    f"Expected dtype {spec.dtype.name} exactly (device arrays are not cast).")
            )
        self._check_shape(spec, fa.shape, sizes)
        if not fa.contiguous:
            raise BindingError(
                fmt(f"Input {spec.name!r}", "Received a non-contiguous device array",
                    "Pass a C-contiguous array (e.g. x.contiguous() or cupy.ascontiguousarray(x)).")
            )
        if fa.device != self._device_id:
            where = "host memory" if fa.device is None else f"device {fa.device}"
            raise BindingError(
                fmt(f"Input {spec.name!r}", f"Received an array in {where}",
                    f"Expected an array on device {self._device_id}, the session's device.")
            )
        return fa

    def reset(self, slots: Optional[Iterable[int]] = None) -> None:
        """Zeroes the state and marks the slots as starting a new sequence.

        Args:
            slots (Iterable[int] | None): Batch rows (slots) to reset. Defaults to None (all slots).
                Until the next step, an auto-filled continuation input is 0 at t=0 for those slots.

        Raises:
            StateError: A slot is not an integer in ``[0, batch_size)``, or the session is closed.
        """
        if self._closed:
            raise StateError(fmt("Session", "reset() was called after close()", "Create a new Session."))
        arena = self._arenas[self._in]
        if slots is None:
            arena.zero()
            self._marks[:] = True
            self._any_marks = True
            return
        slots_arr = self._slot_array(slots, "reset")
        if not len(slots_arr):
            return
        arena.zero_slots(self._state_axes, slots_arr)
        self._marks[slots_arr] = True
        self._any_marks = True

    def read_state(self, slots: Iterable[int]) -> dict[str, np.ndarray]:
        """Copies the state rows of chosen slots (used by :class:`rnnrt.runtime.pool.StreamPool`).

        Args:
            slots (Iterable[int]): Slots to read, in the order wanted.

        Returns:
            dict[str, np.ndarray]: Host copies keyed by state *input* name; each has the state's shape
            with its batch dim replaced by ``len(slots)``, rows in the order of ``slots``.

        Raises:
            StateError: A slot is invalid, or the session is closed.
        """
        slots_arr = self._slot_array(slots, "read_state")
        return self._arenas[self._in].read_rows(self._state_axes, slots_arr)

    def write_state(self, slots: Iterable[int], values: Mapping[str, np.ndarray]) -> None:
        """Overwrites the state rows of chosen slots; the inverse of :meth:`read_state`.

        Unlike :meth:`reset`, this does not mark the slots as starting a sequence.

        Args:
            slots (Iterable[int]): Slots to write.
            values (Mapping[str, np.ndarray]): One array per state input name, shaped as
                :meth:`read_state` returns it for these slots, with the state's dtype.

        Raises:
            StateError: A slot is invalid, or the session is closed.
            BindingError: A state name is missing or unknown, or a shape or dtype differs. Nothing is
                written then.
        """
        slots_arr = self._slot_array(slots, "write_state")
        arena = self._arenas[self._in]
        if set(values) != set(self._state_axes):
            raise BindingError(
                fmt("Session.write_state", f"Got state names {sorted(values)}", f"Expected {sorted(self._state_axes)}.")
            )
        for name, view in arena.views.items():
            value = values[name]
            shape = list(view.shape)
            shape[self._state_axes[name]] = len(slots_arr)
            if not isinstance(value, np.ndarray) or value.dtype != view.dtype or list(value.shape) != shape:
                got = (value.dtype.name, value.shape) if isinstance(value, np.ndarray) else type(value).__name__
                raise BindingError(
                    fmt(f"State {name!r}", f"Received {got}", f"Expected a {view.dtype.name} array of shape {tuple(shape)}.")
                )
        arena.write_rows(self._state_axes, slots_arr, values)

    def _slot_array(self, slots: Iterable[int], what: str) -> np.ndarray:
        if self._closed:
            raise StateError(fmt("Session", f"{what}() was called after close()", "Create a new Session."))
        index = []
        for slot in slots:
            if isinstance(slot, (bool, np.bool_)) or not isinstance(slot, (int, np.integer)) or not 0 <= slot < self.batch_size:
                raise StateError(
                    fmt(f"Slot {slot!r}", f"Is not a valid slot of a session with batch size {self.batch_size}",
                        f"Slots are integers in [0, {self.batch_size}).")
                )
            index.append(int(slot))
        return np.asarray(index, dtype=np.intp)

    @property
    def state(self) -> Mapping[str, np.ndarray]:
        """Read-only views of the current state, keyed by state *input* name (what the next step reads).

        On a device engine these are read-only host *copies* taken now (one D2H copy and a stream sync).
        """
        arena = self._arenas[self._in]
        if self._device:
            return types.MappingProxyType(arena.read_all())
        return types.MappingProxyType({name: arena.read(name) for name in self._state_axes})

    @property
    def engine(self) -> Any:
        """The engine the session runs."""
        return self._engine

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Frees the session's device memory, streams and graphs, and releases the engine if the session
        created or activated it. Closing twice is harmless; a pending step is waited for, its handle dies."""
        if self._closed:
            return
        self._closed = True
        self._pending = None
        try:
            self._free_device()
        finally:
            if self._release and self._engine is not None and self._engine.is_active:
                self._engine.deactivate()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Session(model={str(self.config.model_path)!r}, engine={getattr(self._engine, 'name', None)!r}, "
                f"batch_size={getattr(self, 'batch_size', None)}, closed={self._closed})")

    # Helpers.
    def _unknown_input(self, name: str) -> None:
        if name in self._state_axes:
            raise BindingError(
                fmt(f"Input {name!r}", "Is a state input; the Session feeds it",
                    "Use reset() to clear the state; feed only " + repr(self.input_names) + ".")
            )
        raise BindingError(fmt(f"Input {name!r}", "Is not an input of the model", f"Inputs: {self.input_names}."))

    def _check(self, spec: _InputSpec, value: Any, sizes: dict[str, int]) -> np.ndarray:
        if isinstance(value, np.ndarray):
            arr = value
            if arr.dtype != spec.dtype:
                if not np.can_cast(arr.dtype, spec.dtype, casting="safe"):
                    raise BindingError(
                        fmt(f"Input {spec.name!r}", f"Received dtype {arr.dtype.name}",
                            f"Expected dtype {spec.dtype.name} (or one that casts to it safely); cast it explicitly, "
                            f"e.g. x.astype(np.{spec.dtype.name}).")
                    )
                arr = arr.astype(spec.dtype)
        else:
            try:
                arr = np.asarray(value, dtype=spec.dtype)
            except (TypeError, ValueError) as err:
                raise BindingError(
                    fmt(f"Input {spec.name!r}", f"Cannot be converted to {spec.dtype.name}: {err}")
                ) from err
        self._check_shape(spec, arr.shape, sizes)
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        return arr

    def _check_shape(self, spec: _InputSpec, shape: tuple, sizes: dict[str, int]) -> None:
        ok = len(shape) == len(spec.shape)
        if ok:
            for got, want, sym in zip(shape, spec.shape, spec.symbols):
                if want is None:
                    seen = sizes.setdefault(sym, got)
                    if seen != got:
                        ok = False
                        break
                elif got != want:
                    ok = False
                    break
        if not ok:
            raise BindingError(
                fmt(f"Input {spec.name!r}", f"Received shape {tuple(shape)}",
                    f"Expected shape {spec.display} (batch size {self.batch_size})"
                    + (f", dynamic dims so far {sizes}" if sizes else "") + ".")
            )

    def _complete(self, frame: Mapping[str, Any], feeds: dict, sizes: dict[str, int]) -> None:
        """Checks that no required input is missing and adds the auto-filled continuation input."""
        if len(frame) == len(self._inputs):
            return
        for name in self._required:
            if name not in frame:
                raise BindingError(
                    fmt(f"Input {name!r}", "Is missing from the frame", f"Feed every input of {self._required}.")
                )
        if self._cont is not None and self._cont.input not in frame:
            feeds[self._cont.input] = self._make_cont(sizes)

    def _make_cont(self, sizes: dict[str, int]) -> np.ndarray:
        spec = self._inputs[self._cont.input]
        shape = []
        for want, sym in zip(spec.shape, spec.symbols):
            if want is None:
                if sym not in sizes:
                    raise BindingError(
                        fmt(f"Input {spec.name!r}", f"Cannot be filled: its dim {sym!r} is not set by any fed input",
                            "Feed the continuation input yourself.")
                    )
                want = sizes[sym]
            shape.append(want)
        key = tuple(shape)
        if not self._any_marks:
            ones = self._cont_cache.get(key)
            if ones is None:
                ones = np.ones(key, dtype=spec.dtype)
                ones.flags.writeable = False
                self._cont_cache[key] = ones
            return ones
        cont = np.ones(key, dtype=spec.dtype)
        index: list[Any] = [slice(None)] * len(key)
        index[self._cont.batch_axis] = np.flatnonzero(self._marks)
        if self._cont.time_axis is not None:
            index[self._cont.time_axis] = 0
        cont[tuple(index)] = 0
        return cont


def _probe_tensorrt(cfg: ModelConfig) -> Optional[str]:
    """Returns why the TensorRT backend cannot run this config, or None if it can."""
    if cfg.engine is None:
        return "no TensorRT plan is recorded in the config (run `rnnrt build`)"
    plan = cfg.plan_path
    if plan is None or not plan.is_file():
        return f"the plan {str(plan)!r} does not exist"
    module = "tensorrt_rtx" if cfg.engine.flavour == "tensorrt_rtx" else "tensorrt"
    try:
        __import__(module)
    except ImportError:
        return f"{module} is not installed"
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "cuda-python is not installed"
    err, version = cudart.cudaDriverGetVersion()
    if int(err) != 0 or not version:
        return "no CUDA driver"
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or not count:
        return "no usable CUDA GPU"
    return None


def load(config_path: Union[str, os.PathLike, ModelConfig], backend: str = "auto", **kwargs: Any) -> Session:
    """Loads a config and returns a ready Session.

    Args:
        config_path (str | os.PathLike | ModelConfig): The YAML config (or a loaded config).
        backend (str): ``"auto"``, ``"onnxruntime"`` or ``"tensorrt"``. ``"auto"`` takes the config's
            ``session.backend``; if that is ``"auto"`` too, TensorRT when a plan is recorded and TensorRT
            and a GPU are usable, else ONNX Runtime (one log line says why). Defaults to ``"auto"``.
        **kwargs: ``batch_size``, ``feedback``, ``cuda_graph``, ``outputs`` and ``input_memory`` go to
            :class:`Session`; ``threads`` and ``providers`` to the ONNX Runtime engine; ``runtime_cache``
            to the TensorRT engine.

    Returns:
        Session: The session; close it, or use it as a context manager.

    Example::

        with rnnrt.load("out/model.yaml", threads=1) as s:
            y = s.step(x)
    """
    cfg = config_path if isinstance(config_path, ModelConfig) else load_config(config_path)
    session_kw = {k: kwargs.pop(k) for k in ("batch_size", "feedback", "cuda_graph", "outputs", "input_memory")
                  if k in kwargs}
    engine_kw = {k: kwargs.pop(k) for k in ("threads", "providers") if k in kwargs}
    trt_kw = {k: kwargs.pop(k) for k in ("runtime_cache",) if k in kwargs}
    if kwargs:
        raise StateError(fmt("rnnrt.load", f"Unknown keyword arguments {sorted(kwargs)}",
                             "Known: batch_size, feedback, cuda_graph, outputs, input_memory, threads, providers, "
                             "runtime_cache."))
    if backend not in ("auto", "onnxruntime", "tensorrt"):
        raise StateError(fmt("rnnrt.load", f"Unknown backend {backend!r}", "Use 'auto', 'onnxruntime' or 'tensorrt'."))
    if backend == "auto":
        backend = cfg.session.backend
    if backend == "auto":
        why = _probe_tensorrt(cfg)
        if why is not None:
            G_LOGGER.info(f"rnnrt.load | Using ONNX Runtime: {why}.")
        backend = "onnxruntime" if why is not None else "tensorrt"
    if backend == "tensorrt":
        if cfg.engine is None:
            raise ConfigError(fmt("rnnrt.load", "The 'tensorrt' backend needs a plan but the config records none",
                                  "Run `rnnrt build` first, or use backend='onnxruntime'."))
        from rnnrt.engines.trt import TrtEngine

        plan, flavour = cfg.plan_path, cfg.engine.flavour
        if cfg.session.runtime_cache and "runtime_cache" not in trt_kw:
            trt_kw["runtime_cache"] = cfg.resolve(cfg.session.runtime_cache)
        return Session(cfg, lambda: TrtEngine(plan, flavour=flavour, **trt_kw), **session_kw)

    from rnnrt.engines.onnxruntime import OnnxRuntimeEngine

    threads = engine_kw.pop("threads", cfg.session.threads)
    model_path = cfg.model_path
    return Session(cfg, lambda: OnnxRuntimeEngine(model_path, threads=threads, **engine_kw), **session_kw)
