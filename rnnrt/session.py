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

__all__ = ["Session", "load"]

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
        """
        from rnnrt.engines.base import invoke_if_callable

        self._closed = True  # until set up; makes close() and __del__ safe on failure
        self._engine: Any = None
        self._release = False
        self.config = config if isinstance(config, ModelConfig) else load_config(config)
        cfg = self.config
        feedback = feedback or cfg.session.feedback
        if feedback not in ("copy", "swap"):
            raise StateError(fmt("Session", f"feedback={feedback!r} is not supported", "Use 'copy' or 'swap'."))
        self.feedback = feedback
        self.batch_size, batch_symbols = _resolve_batch(cfg, batch_size)

        engine, created = invoke_if_callable(engine_or_factory)
        self._engine = engine
        self._release = created or not engine.is_active
        try:
            if not engine.is_active:
                engine.activate()
            self._setup(cfg, batch_symbols)
        except BaseException:
            if self._release and engine.is_active:
                engine.deactivate()
            raise
        self._closed = False

    def _setup(self, cfg: ModelConfig, batch_symbols: set) -> None:
        engine = self._engine
        arena_type = _ARENAS.get(engine.memory)
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
        self._arenas = (arena_type(layout), arena_type(layout))
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
        if len(frame) < len(self._inputs):
            for name in self._required:
                if name not in frame:
                    raise BindingError(
                        fmt(f"Input {name!r}", "Is missing from the frame", f"Feed every input of {self._required}.")
                    )
            if self._cont is not None and self._cont.input not in frame:
                feeds[self._cont.input] = self._make_cont(sizes)

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
        index = []
        for slot in slots:
            if isinstance(slot, (bool, np.bool_)) or not isinstance(slot, (int, np.integer)) or not 0 <= slot < self.batch_size:
                raise StateError(
                    fmt(f"Slot {slot!r}", f"Is not a valid slot of a session with batch size {self.batch_size}",
                        f"Slots are integers in [0, {self.batch_size}).")
                )
            index.append(int(slot))
        if not index:
            return
        slots_arr = np.asarray(index, dtype=np.intp)
        arena.zero_slots(self._state_axes, slots_arr)
        self._marks[slots_arr] = True
        self._any_marks = True

    def read_state(self, slots: Iterable[int]) -> dict[str, np.ndarray]:
        """Copies the state rows of chosen slots (used by :class:`rnnrt.pool.StreamPool`).

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
        """Read-only views of the current state, keyed by state *input* name (what the next step reads)."""
        arena = self._arenas[self._in]
        return types.MappingProxyType({name: arena.read(name) for name in self._state_axes})

    @property
    def engine(self) -> Any:
        """The engine the session runs."""
        return self._engine

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Releases the engine if the session created or activated it. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
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
        shape = arr.shape
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
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        return arr

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
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or not count:
        return "no usable CUDA GPU"
    return "the TensorRT Session backend is not implemented yet"


def load(config_path: Union[str, os.PathLike, ModelConfig], backend: str = "auto", **kwargs: Any) -> Session:
    """Loads a config and returns a ready Session.

    Args:
        config_path (str | os.PathLike | ModelConfig): The YAML config (or a loaded config).
        backend (str): ``"auto"``, ``"onnxruntime"`` or ``"tensorrt"``. ``"auto"`` takes the config's
            ``session.backend``; if that is ``"auto"`` too, TensorRT when a plan is recorded and TensorRT
            and a GPU are usable, else ONNX Runtime (one log line says why). Defaults to ``"auto"``.
        **kwargs: ``batch_size`` and ``feedback`` go to :class:`Session`; ``threads`` and ``providers``
            to the ONNX Runtime engine.

    Returns:
        Session: The session; close it, or use it as a context manager.

    Example::

        with rnnrt.load("out/model.yaml", threads=1) as s:
            y = s.step(x)
    """
    cfg = config_path if isinstance(config_path, ModelConfig) else load_config(config_path)
    session_kw = {k: kwargs.pop(k) for k in ("batch_size", "feedback") if k in kwargs}
    engine_kw = {k: kwargs.pop(k) for k in ("threads", "providers") if k in kwargs}
    if kwargs:
        raise StateError(fmt("rnnrt.load", f"Unknown keyword arguments {sorted(kwargs)}",
                             "Known: batch_size, feedback, threads, providers."))
    if backend not in ("auto", "onnxruntime", "tensorrt"):
        raise StateError(fmt("rnnrt.load", f"Unknown backend {backend!r}", "Use 'auto', 'onnxruntime' or 'tensorrt'."))
    if backend == "auto":
        backend = cfg.session.backend
    if backend == "tensorrt":
        raise StateError(fmt("rnnrt.load", "The 'tensorrt' backend is not available yet", "Use backend='onnxruntime'."))
    if backend == "auto":
        why = _probe_tensorrt(cfg)
        if why is not None:
            G_LOGGER.info(f"rnnrt.load | Using ONNX Runtime: {why}.")
        backend = "onnxruntime"

    from rnnrt.engines.onnxruntime import OnnxRuntimeEngine

    threads = engine_kw.pop("threads", cfg.session.threads)
    model_path = cfg.model_path
    return Session(cfg, lambda: OnnxRuntimeEngine(model_path, threads=threads, **engine_kw), **session_kw)
