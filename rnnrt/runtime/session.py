"""The Session: runs a step graph frame by frame and carries its recurrent state (the state core).

One :class:`Session` class serves every engine. It owns what is the same everywhere: the bindings,
the slots and their sequence-start marks, the continuation fill, two state arenas (behind one
protocol, :class:`rnnrt.runtime.memory.Arena`), the feedback of state outputs into state inputs, ``reset``,
``read_state``/``write_state``. How a step runs lives in an *executor* picked by the engine's memory
space: :class:`rnnrt.runtime.host.HostExecutor` (ONNX Runtime and other numpy engines) or
:class:`rnnrt.runtime.device.DeviceExecutor` (device arenas, pinned staging, CUDA graphs,
:class:`~rnnrt.runtime.device.StepHandle`). Frames are checked by :mod:`rnnrt.runtime.frames`; the
Session's view of its config at its batch size is :class:`rnnrt.runtime.step_io.StepIO` (``session.io``).

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
- shape: must equal the config shape with the batch dim replaced by the number of stepped slots (the
  batch size, or ``len(slots)``); other dynamic dims may take any size > 0, the same size wherever the
  same name appears. Zero-length dims and masked arrays are refused. NaN and infinity are accepted
  unless the Session was made with ``check_finite=True``.
- The continuation input may be omitted (``continuation.fill: auto``): the Session feeds 1, and 0 at
  the first time step of slots reset since they last stepped. A fed continuation input is used as is.

Slots: ``step(feeds, slots=[...])`` steps only the listed slots. The feeds carry one batch row per
listed slot, in the listed order, and the outputs come back the same way. Only those slots' state
advances; every other slot's state stays bit-identical (on the device without a host round trip: one
2-D copy per state tensor and run of consecutive slots), and a slot's sequence-start mark persists
until that slot next steps.

Chunks: ``step_chunk(frames, slots=...)`` takes K frames per input along a new leading axis and equals K
calls of ``step``; it is atomic (a failure at any frame advances nothing). The host executor checks the
frames once and carries the state from run to run in the engine's outputs, writing it back once; other
executors step frame by frame and put the stepped slots back on a failure.

State: one contiguous arena per direction (inputs, outputs), allocated once and zeroed; each state
tensor is a view into it. The engine writes the next state into the output arena, so a failed step
leaves the input arena (the state) untouched. After a successful step the output arena is copied into
the input arena (``feedback: copy``) or the two are swapped (``feedback: swap``); a step of some slots
copies only their rows (or, when most slots step, copies the other slots' rows the other way and swaps).
"""

from __future__ import annotations

import logging
import os
import types
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Union

import numpy as np

from rnnrt.errors import BindingError, ConfigError, StateError, fmt
from rnnrt.runtime.frames import slot_array, stack_frame
from rnnrt.runtime.memory import DoneHandle
from rnnrt.runtime.step_io import StepIO, resolve_batch

if TYPE_CHECKING:  # the config (pydantic, yaml) is imported when a Session is made, not with `import rnnrt`
    from rnnrt.ir.config import ModelConfig

G_LOGGER = logging.getLogger("rnnrt")

__all__ = ["Session", "load"]

_CHECKED_SLOTS = 16  # slot arrays remembered as checked (a pool cycles through a few patterns)


class _CheckedSlots:
    """A read-only slot array checked before (a StreamPool's plan): the array, its rows, and the slots it
    leaves out (found on first need by a ``swap`` step of most slots)."""

    __slots__ = ("slots", "rows", "others")

    def __init__(self, slots: np.ndarray, rows: np.ndarray) -> None:
        self.slots = slots
        self.rows = rows
        self.others: Optional[np.ndarray] = None


class _Closed:
    """The executor of a Session that is not set up or was closed."""

    fast = None

    def close(self) -> None:
        pass


_CLOSED = _Closed()


def _executor_for(memory: str) -> Any:
    """The executor class of an engine memory space (imported on first use)."""
    if memory == "host":
        from rnnrt.runtime.host import HostExecutor

        return HostExecutor
    if memory == "device":
        from rnnrt.runtime.device import DeviceExecutor

        return DeviceExecutor
    return None


class Session:
    """Runs a step graph frame by frame, carrying its recurrent state.

    Example::

        from rnnrt.engines import OnnxRuntimeEngine
        cfg = rnnrt.ir.config.load_config("model.yaml")
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
        check_finite: bool = False,
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
            outputs (str): ``"host"``: numpy arrays the caller owns (fresh each step). ``"view"``: numpy
                views of the Session's output buffers (pinned staging on a device engine), valid until
                the next ``step``/``step_async``/``reset``/``close`` of this Session: no second host copy.
                ``"device"`` (device engines only): :class:`rnnrt.cuda.DeviceArray` views that the next
                step overwrites. Defaults to ``"host"``.
            input_memory (str | Mapping[str, str]): Device engines only: where inputs may live, for all
                inputs or per input name: ``"auto"`` (numpy or device arrays), ``"host"`` (numpy only) or
                ``"device"`` (device arrays only). Defaults to ``"auto"``.
            check_finite (bool): Refuse frames holding NaN or infinity (a BindingError, state untouched).
                Defaults to False (accepted: the engine computes with them).

        Raises:
            ConfigError: An argument is invalid, the config and the engine disagree, or ``batch_size`` > 1
                for a model whose convert-time check found its batched streams mixing (``checks.batch_one``).
            EngineError: The engine failed to load.
        """
        from rnnrt.engines.base import invoke_if_callable
        from rnnrt.ir.config import ModelConfig, load_config

        self._closed = True  # until set up; makes close() and __del__ safe on failure
        self._engine: Any = None
        self._release = False
        self._executor: Any = _CLOSED
        if isinstance(config, ModelConfig):
            self.config = config
        elif isinstance(config, (str, os.PathLike)):
            self.config = load_config(config)
        else:
            raise ConfigError(fmt("Session", f"Got a {type(config).__name__} as the config",
                                  "Pass a path to a YAML config or a ModelConfig."))
        cfg = self.config
        feedback = feedback or cfg.session.feedback
        if feedback not in ("copy", "swap"):
            raise ConfigError(fmt("Session", f"feedback={feedback!r} is not supported", "Use 'copy' or 'swap'."))
        self.feedback = feedback
        if outputs not in ("host", "view", "device"):
            raise ConfigError(fmt("Session", f"outputs={outputs!r} is not supported", "Use 'host', 'view' or 'device'."))
        self.outputs = outputs
        self.cuda_graph = bool(cfg.session.cuda_graph if cuda_graph is None else cuda_graph)
        self.check_finite = bool(check_finite)
        self.batch_size, batch_symbols, fixed = resolve_batch(cfg, batch_size)
        if cfg.checks is not None and cfg.checks.batch_one and self.batch_size > 1:
            raise ConfigError(fmt(f"Session batch_size={self.batch_size}",
                                  f"The model runs one stream per batch only: {cfg.checks.batch_one}",
                                  "Its convert-time check found the streams of a batch mixing: use batch_size=1 "
                                  "(one Session per stream)."))
        self.io = StepIO(cfg, self.batch_size, batch_symbols, fixed)
        self.input_names = self.io.input_names
        self.output_names = self.io.output_names
        self._rows = self.io.state_rows
        self._swap = feedback == "swap" and bool(self._rows)

        engine, created = invoke_if_callable(engine_or_factory)
        self._engine = engine
        self._release = created or not engine.is_active
        try:
            if not engine.is_active:
                engine.activate()
            executor_type = _executor_for(engine.memory)
            if executor_type is None:
                raise ConfigError(
                    fmt(f"Engine {engine.name!r}", f"Uses memory space {engine.memory!r}, which the Session does not "
                        "support", "Supported: 'host', 'device'.")
                )
            self._check_engine(cfg)
            self._executor = executor_type(self, engine, input_memory)
            layout = self.io.state_layout
            arenas: list = []
            self._arenas = arenas  # a failure below frees what was made
            arenas.append(self._executor.make_arena(layout))
            arenas.append(self._executor.make_arena(layout))
            self._arenas = tuple(arenas)
            self._executor.bind_arenas(self._arenas)
        except BaseException:
            self._teardown()
            raise
        self._in = 0
        self._backup: Any = None  # step_chunk's copy of the state on executors without run_chunk (made on use)
        # A fresh session starts every sequence at t=0.
        self._marks = np.ones(self.batch_size, dtype=bool)
        self._any_marks = True
        self._all_slots = np.arange(self.batch_size, dtype=np.intp)
        # Read-only slot arrays checked before (a StreamPool's plans), by id.
        self._checked: dict[int, _CheckedSlots] = {}
        self._closed = False

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
    @property
    def in_arena(self) -> int:
        """Which of the two arenas holds the state the next step reads (0 or 1)."""
        return self._in

    def step(self, frame: Union[Mapping[str, Any], np.ndarray], slots: Optional[Iterable[int]] = None,
             out: Optional[Mapping[str, np.ndarray]] = None) -> dict[str, Any]:
        """Runs one step and carries the state.

        Args:
            frame (Mapping[str, np.ndarray] | np.ndarray): The user inputs by name. A bare array is
                allowed when the model has exactly one input besides the continuation input.
            slots (Iterable[int] | None): Step only these slots; the frame has one batch row per listed
                slot, in this order, and so have the outputs. Every other slot's state stays bit-identical.
                Defaults to None (every slot, rows in slot order).
            out (Mapping[str, np.ndarray] | None): Numpy arrays to write outputs into (any subset of the
                outputs, shaped as returned); those outputs are returned as these arrays. Defaults to None.

        Returns:
            dict[str, np.ndarray]: The user outputs by name (state outputs excluded); see ``outputs`` of
            the constructor for who owns them.

        Raises:
            BindingError: A fed name is unknown, a shape or dtype does not match (see the module doc), a
                required input is missing, or ``slots``/``out`` is invalid. The state is unchanged.
            EngineError: The engine failed. The state is unchanged.
            StateError: The session is closed, or a step_async() was not waited for.
        """
        fast = self._executor.fast
        # The fast paths take ``out`` as a dict holding every output (anything else: the full path checks it).
        if fast is not None and (out is None or type(out) is dict):
            if slots is None:
                if not self._any_marks:
                    result = fast(frame, self._in) if out is None else fast(frame, self._in, out)
                    if result is not None:
                        if self._swap:
                            self._in ^= 1
                        return result
            else:
                # A slot array checked before (a StreamPool's plan), a frame of the last layout, and no
                # sequence start among those slots (slots never stepped elsewhere keep theirs).
                checked = self._checked_entry(slots)
                fast_rows = self._executor.fast_rows
                if checked is not None and fast_rows is not None and checked.rows is not self._all_slots and \
                        not (self._any_marks and self._marks[checked.rows].any()):
                    result = fast_rows(frame, self._in, checked.rows) if out is None else \
                        fast_rows(frame, self._in, checked.rows, out)
                    if result is not None:
                        self._advance(checked.rows, False, checked)
                        return result
        return self._step(frame, slots, out, True)

    def step_async(self, frame: Union[Mapping[str, Any], np.ndarray], slots: Optional[Iterable[int]] = None) -> Any:
        """Enqueues one step and returns at once; ``handle.wait()`` returns what :meth:`step` returns.

        On a host engine the step runs synchronously and the handle is already done. On a device engine
        the frame is checked and staged, the step (and its state feedback) is enqueued on the session's
        stream, and the host is free until ``wait()``. ``reset()`` may be called before ``wait()`` (it is
        ordered after the step); another ``step``/``step_async`` may not.

        Args:
            frame (Mapping[str, Any] | np.ndarray): As for :meth:`step`; on a device engine values may also
                be device arrays (``__cuda_array_interface__`` or DLPack) with exactly the binding's dtype
                and shape, C-contiguous, on the session's device.
            slots (Iterable[int] | None): As for :meth:`step`.

        Returns:
            StepHandle: Call ``wait()`` for the outputs.

        Raises:
            BindingError: As for :meth:`step`; also a device array with another dtype, shape, layout or
                device, or an array in a memory space that ``input_memory`` excludes. The state is unchanged.
            StateError: The session is closed, or the previous step_async() was not waited for.
        """
        return self._step(frame, slots, None, False)

    def _step(self, frame: Any, slots: Any, out: Any, wait: bool) -> Any:
        self._require_open("step")
        frame = self.io.as_mapping(frame)
        rows, n, checked = self._resolve_slots(slots, "Session.step")
        if n == 0:
            return {} if wait else DoneHandle({})
        if out is not None and not isinstance(out, Mapping):
            raise BindingError(fmt("Session.step", f"out= got a {type(out).__name__}",
                                   "Pass a mapping {output name: numpy array}."))
        starts = self._starts(rows)
        fuse = rows is None and not self._swap and bool(self._rows)
        result, in_place = self._executor.run(frame, rows, n, starts, self._in, fuse, out, wait)
        # Only now, after a successful run (or enqueue), does the state advance.
        if not in_place and self._rows:
            self._advance(rows, fuse, checked)
        if starts is not None:
            self._clear_marks(rows)
        return result

    def step_chunk(self, frames: Union[Mapping[str, Any], np.ndarray],
                   slots: Optional[Iterable[int]] = None) -> dict[str, np.ndarray]:
        """Runs K successive steps at once: each input carries K frames along a new leading axis.

        What ``K`` calls of :meth:`step` with ``frames[name][k]`` do, as one call: the frames are checked
        once, the stepped slots' state is read once and written once, and the outputs come back stacked.
        It is atomic: when any of the K steps fails, no slot has advanced (a multi-frame request of a
        server fails whole and can be sent again). The auto-filled continuation input is 0 at frame 0 of
        slots at a sequence start and 1 everywhere else; a fed continuation input has the K axis too.

        Args:
            frames (Mapping[str, np.ndarray] | np.ndarray): Per user input, an array ``[K, *step shape]``
                (the shape :meth:`step` takes for these slots, K >= 1 the same for every input). A bare
                array is allowed as for :meth:`step`.
            slots (Iterable[int] | None): As for :meth:`step`. Defaults to None (every slot).

        Returns:
            dict[str, np.ndarray]: Per user output, ``[K, *step output shape]``: row k is what step k
            returned. Fresh arrays the caller owns, whatever the Session's ``outputs=``.

        Raises:
            BindingError: As for :meth:`step`; also an input without the K axis or with another K than
                the others. The state is unchanged.
            EngineError: The engine failed at some frame. The state is unchanged.
            StateError: The session is closed, or a step_async() was not waited for.
        """
        self._require_open("step_chunk")
        frames = self.io.as_mapping(frames)
        frames, count = self.io.chunk(frames)
        rows, n, checked = self._resolve_slots(slots, "Session.step_chunk")
        if n == 0:
            return {}
        starts = self._starts(rows)
        run_chunk = getattr(self._executor, "run_chunk", None)
        if run_chunk is None:
            # The same slots object when it is an array (a pool's plan: the executor's fast paths know it).
            return self._step_each(frames, count, slots if isinstance(slots, np.ndarray) else rows, rows)
        result, in_place = run_chunk(frames, count, rows, n, starts, self._in)
        if not in_place and self._rows:
            self._advance(rows, False, checked)
        if starts is not None:
            self._clear_marks(rows)
        return result

    def _step_each(self, frames: Mapping[str, Any], count: int, slots: Any, rows: Optional[np.ndarray]) -> dict:
        """``step_chunk`` on an executor without ``run_chunk``: one :meth:`step` per frame (with its fast
        paths), and on a failure the stepped slots are put back (state rows and sequence-start marks as
        before the chunk) from a copy made in the executor's own memory (a third arena, made on first use:
        on a device no host round trip)."""
        taken = self._all_slots if rows is None else rows
        if self._rows:
            if self._backup is None:
                self._backup = self._executor.make_arena(self.io.state_layout)
            self._copy_state(self._backup, self._arenas[self._in], rows)
        marks = self._marks[taken].copy()
        stacked: dict[str, np.ndarray] = {}
        try:
            for k in range(count):
                frame = {name: value[k, ...] for name, value in frames.items()}
                if k == 0 or self.outputs == "device":  # outputs="device": DeviceArrays, copied to the host
                    out = self.step(frame, slots)
                    stack_frame(stacked, k, count, {name: value if isinstance(value, np.ndarray) else value.get()
                                                    for name, value in out.items()})
                else:  # frame k's outputs written straight into row k (the executors' fast paths take out=)
                    self.step(frame, slots, out={name: value[k] for name, value in stacked.items()})
        except BaseException:
            if self._rows:
                self._executor.sync()  # a step that failed may still be queued; restore after it
                self._copy_state(self._arenas[self._in], self._backup, rows)
            self._marks[taken] = marks
            self._any_marks = bool(self._marks.any())
            raise
        return stacked

    def _copy_state(self, dst: Any, src: Any, rows: Optional[np.ndarray]) -> None:
        """Copies the state rows of ``rows`` (None: every slot) from arena ``src`` into arena ``dst``."""
        if rows is None:
            dst.copy_from(src)
        else:
            dst.copy_rows_from(src, self._rows, rows)

    def _resolve_slots(self, slots: Any, what: str) -> tuple[Optional[np.ndarray], int, Optional[_CheckedSlots]]:
        """``(rows or None for every slot, number of rows, the checked-cache entry or None)`` of ``slots``."""
        B = self.batch_size
        if slots is None:
            return None, B, None
        checked = self._checked_entry(slots)
        if checked is not None:
            rows = checked.rows  # a read-only array checked before (a StreamPool's plan)
        else:
            rows = slot_array(slots, B, what, unique=True)
            if n_full := (len(rows) == B and rows[0] == 0 and rows[-1] == B - 1):
                n_full = B < 3 or np.array_equal(rows, self._all_slots)
            if n_full:
                rows = self._all_slots
            if isinstance(slots, np.ndarray) and not slots.flags.writeable and slots.base is None:
                if len(self._checked) >= _CHECKED_SLOTS:
                    del self._checked[next(iter(self._checked))]
                checked = self._checked[id(slots)] = _CheckedSlots(slots, rows)
        n = len(rows)
        return (None if rows is self._all_slots else rows), n, checked

    def _starts(self, rows: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """The sequence-start marks of the stepped rows, or None when none of them is marked."""
        if not self._any_marks:
            return None
        starts = self._marks if rows is None else self._marks[rows]
        if rows is not None and not starts.any():
            return None  # marks only on slots not stepped now (e.g. a pool's unused slots)
        return starts

    def _clear_marks(self, rows: Optional[np.ndarray]) -> None:
        if rows is None:
            self._marks[:] = False
            self._any_marks = False
        else:
            self._marks[rows] = False
            self._any_marks = bool(self._marks.any())

    def _checked_entry(self, slots: Any) -> Optional[_CheckedSlots]:
        """The cache entry of a slot array checked before, or None."""
        entry = self._checked.get(id(slots))
        return entry if entry is not None and entry.slots is slots else None

    def _advance(self, rows: Optional[np.ndarray], fused: bool, checked: Optional[_CheckedSlots] = None) -> None:
        """Feeds the state outputs (arena 1 - in) of the stepped slots back into the state inputs.

        ``checked`` is the cache entry of ``rows`` (its other slots are kept there once found)."""
        parity = self._in
        if rows is None:
            if self._swap:
                self._in = 1 - parity
            elif not fused:
                self._arenas[parity].copy_from(self._arenas[1 - parity])
            return
        B = self.batch_size
        if self._swap and 2 * len(rows) > B:
            # Most slots stepped: carry the others' old rows into the output arena, then swap.
            others = checked.others if checked is not None else None
            if others is None:
                keep = np.ones(B, dtype=bool)
                keep[rows] = False
                others = np.flatnonzero(keep)
                others.flags.writeable = False
                if checked is not None:
                    checked.others = others
            if len(others):
                self._arenas[1 - parity].copy_rows_from(self._arenas[parity], self._rows, others)
            self._in = 1 - parity
        else:
            self._arenas[parity].copy_rows_from(self._arenas[1 - parity], self._rows, rows)

    def input_buffers(self, shapes: Optional[Mapping[str, tuple]] = None) -> dict[str, np.ndarray]:
        """Writable numpy buffers, one per host input, that the next full-batch step reads without a copy.

        Write a frame into them and pass them as the feeds (``s.step(bufs)``): on a device engine they
        are the pinned staging buffers the H2D copy reads; on a host engine, arrays the engine reads as
        they are. They stay valid until :meth:`close`.

        Args:
            shapes (Mapping[str, tuple] | None): Full shapes of inputs that have dynamic non-batch dims.
                Defaults to None (every input's shape is fixed once the batch is).

        Raises:
            BindingError: A shape is missing or does not fit its input.
        """
        self._require_open("input_buffers")
        return self._executor.input_buffers(shapes)

    def reset(self, slots: Optional[Iterable[int]] = None) -> None:
        """Zeroes the state and marks the slots as starting a new sequence.

        Args:
            slots (Iterable[int] | None): Batch rows (slots) to reset. Defaults to None (all slots).
                Until each slot next steps, an auto-filled continuation input is 0 at its t=0.

        Raises:
            BindingError: ``slots`` is not a list of integers in ``[0, batch_size)``.
            StateError: The session is closed.
        """
        self._require_open("reset")
        arena = self._arenas[self._in]
        if slots is None:
            arena.zero()
            self._marks[:] = True
            self._any_marks = True
            return
        slots_arr = slot_array(slots, self.batch_size, "Session.reset")
        if not len(slots_arr):
            return
        arena.zero_rows(self._rows, slots_arr)
        self._marks[slots_arr] = True
        self._any_marks = True

    def read_state(self, slots: Iterable[int]) -> dict[str, np.ndarray]:
        """Copies the state rows of chosen slots.

        Args:
            slots (Iterable[int]): Slots to read, in the order wanted.

        Returns:
            dict[str, np.ndarray]: Host copies keyed by state *input* name; each has the state's shape
            with its batch dim replaced by ``len(slots)``, rows in the order of ``slots``.

        Raises:
            BindingError: A slot is invalid.
            StateError: The session is closed.
        """
        slots_arr = self._slot_array(slots, "read_state")
        self._executor.sync()
        return self._arenas[self._in].read_rows(self._rows, slots_arr)

    def write_state(self, slots: Iterable[int], values: Mapping[str, np.ndarray], start: bool = False) -> None:
        """Overwrites the state rows of chosen slots; the inverse of :meth:`read_state`.

        Args:
            slots (Iterable[int]): Slots to write.
            values (Mapping[str, np.ndarray]): One array per state input name, shaped as
                :meth:`read_state` returns it for these slots, with the state's dtype.
            start (bool): Whether the slots' next step is the t=0 of a sequence (what :meth:`reset`
                marks; it decides the auto-filled continuation input). Defaults to False: the written
                state continues.

        Raises:
            BindingError: A slot is invalid, a state name is missing or unknown, or a shape or dtype
                differs. Nothing is written then.
            StateError: The session is closed.
        """
        slots_arr = self._slot_array(slots, "write_state")
        if not isinstance(values, Mapping) or set(values) != set(self._rows):
            got = sorted(map(str, values)) if isinstance(values, Mapping) else type(values).__name__
            raise BindingError(
                fmt("Session.write_state", f"Got state names {got}", f"Expected {sorted(self._rows)}.")
            )
        for name, (_, full, dtype) in zip(self._rows, self.io.state_layout):
            value = values[name]
            shape = list(full)
            shape[self._rows[name].axis] = len(slots_arr)
            if not isinstance(value, np.ndarray) or value.dtype != dtype or list(value.shape) != shape:
                got = (value.dtype.name, value.shape) if isinstance(value, np.ndarray) else type(value).__name__
                raise BindingError(
                    fmt(f"State {name!r}", f"Received {got}", f"Expected a {dtype.name} array of shape {tuple(shape)}.")
                )
        self._executor.sync()
        if self._rows:
            self._arenas[self._in].write_rows(self._rows, slots_arr, values)
        self._marks[slots_arr] = bool(start)
        self._any_marks = bool(self._marks.any())

    def _slot_array(self, slots: Iterable[int], what: str) -> np.ndarray:
        self._require_open(what)
        return slot_array(slots, self.batch_size, f"Session.{what}")

    def _require_open(self, what: str) -> None:
        if self._closed:
            raise StateError(fmt("Session", f"{what}() was called after close()", "Create a new Session."))

    @property
    def state(self) -> Mapping[str, np.ndarray]:
        """Read-only host copies of the current state taken now, keyed by state *input* name (what the
        next step reads). On a device engine: one D2H copy and a stream sync.

        Raises:
            StateError: The session is closed.
        """
        if self._closed:
            raise StateError(fmt("Session", "state was read after close()", "Read it before closing the Session."))
        self._executor.sync()
        return types.MappingProxyType(self._arenas[self._in].read_all())

    @property
    def sequence_starts(self) -> np.ndarray:
        """Per slot, whether its next step is the t=0 of a sequence (set by reset, cleared when it steps); a copy."""
        return self._marks.copy()

    @property
    def engine(self) -> Any:
        """The engine the session runs."""
        return self._engine

    @property
    def executor(self) -> Any:
        """The executor that runs the steps (host or device)."""
        return self._executor

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Frees the session's device memory, streams and graphs, and releases the engine if the session
        created or activated it. Closing twice is harmless; a pending step is waited for, its handle dies."""
        if self._closed:
            return
        self._closed = True
        self._teardown()

    def _teardown(self) -> None:
        try:
            self._executor.close()
        finally:
            self._arenas = ()
            if self._release and self._engine is not None and self._engine.is_active:
                self._engine.deactivate()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Session(model={str(self.config.model_path)!r}, engine={getattr(self._engine, 'name', None)!r}, "
                f"batch_size={getattr(self, 'batch_size', None)}, closed={self._closed})")


_SESSION_KEYS = ("batch_size", "feedback", "cuda_graph", "outputs", "input_memory", "check_finite")
_ENGINE_KEYS = ("threads", "providers", "runtime_cache", "plan")


def load(config_path: Union[str, os.PathLike, ModelConfig], backend: str = "auto", **kwargs: Any) -> Session:
    """Loads a config and returns a ready Session.

    Args:
        config_path (str | os.PathLike | ModelConfig): The YAML config (or a loaded config).
        backend (str): ``"auto"``, ``"onnxruntime"``, ``"tensorrt"``, an engine installed under the
            ``rnnrt.engines`` entry-point group, or ``module.path:callable`` (see
            :mod:`rnnrt.engines.select`). ``"auto"`` takes the config's ``session.backend``; if that is
            ``"auto"`` too, TensorRT when a plan was built for the config and a runtime it needs and a GPU
            are usable, else ONNX Runtime (one log line says why). Defaults to ``"auto"``.
        **kwargs: ``batch_size``, ``feedback``, ``cuda_graph``, ``outputs``, ``input_memory`` and
            ``check_finite`` go to :class:`Session`; ``threads`` and ``providers`` to the ONNX Runtime
            engine; ``runtime_cache`` (a TensorRT-RTX runtime cache file chosen at run time) and ``plan`` (the
            plan when it is not the config's default ``model.plan``; found through its manifest
            ``model.plan.json``, see :mod:`rnnrt.ir.manifest`) to the TensorRT engine.

    The config is checked against its ONNX graph (:func:`rnnrt.ir.config.validate_against_model`) unless a
    TensorRT plan runs it: then the plan's bindings are checked against the config when the Session is made
    (names, dtypes, state shapes), and neither onnx nor the builder is imported.

    Returns:
        Session: The session; close it, or use it as a context manager.

    Raises:
        ConfigError: The config is invalid, or an argument is (unknown keyword, bad backend, threads
            not a positive integer ...).
        EngineError: The engine failed to load.

    Example::

        with rnnrt.load("out/model.yaml", threads=1) as s:
            y = s.step(x)
    """
    from rnnrt.engines.select import engine_for
    from rnnrt.ir.config import ModelConfig, load_config, validate_against_model

    if isinstance(config_path, ModelConfig):
        cfg, source = config_path, None
    elif isinstance(config_path, (str, os.PathLike)):
        # Checked against its ONNX graph below, unless a plan runs it: a plan is checked against the config
        # by its engine's bindings (names, dtypes, state shapes), and loading it needs no onnx.
        cfg, source = load_config(config_path, validate=False), config_path
    else:
        raise ConfigError(fmt("rnnrt.load", f"Got a {type(config_path).__name__} as the config",
                              "Pass the path of a YAML config (or a ModelConfig)."))
    session_kw = {k: kwargs.pop(k) for k in _SESSION_KEYS if k in kwargs}
    engine_kw = {k: kwargs.pop(k) for k in _ENGINE_KEYS if k in kwargs}
    if kwargs:
        raise ConfigError(fmt("rnnrt.load", f"Unknown keyword arguments {sorted(kwargs)}",
                              "Known: " + ", ".join(_SESSION_KEYS + _ENGINE_KEYS) + "."))
    # Checked before an engine is made (so a huge batch fails here, not in ONNX Runtime).
    batch, _, fixed = resolve_batch(cfg, session_kw.get("batch_size"))
    # A dynamic batch: each step carries `batch` rows (ONNX Runtime's threads=None picks from that cost).
    choice = engine_for(cfg, backend, config_path=source, rows=1 if fixed else batch, **engine_kw)
    if source is not None and choice.backend != "tensorrt":
        validate_against_model(cfg)
    return Session(choice.config, choice.engine, **session_kw)
