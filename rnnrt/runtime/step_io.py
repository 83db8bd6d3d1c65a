"""The Session's view of its config at a batch size: :class:`StepIO` (user inputs with their frame checks,
outputs, the state layout, the continuation fill) and :func:`resolve_batch` (the batch size and dynamic batch
dims the config allows).

Executors (:mod:`rnnrt.runtime.host`, :mod:`rnnrt.runtime.device`) and the StreamPool read a Session's
``io``; it never changes after the Session is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

import numpy as np

from rnnrt.errors import BindingError, ConfigError, fmt
from rnnrt.ir.streams import single_input
from rnnrt.runtime.frames import ContinuationFill, InputSpec, RowLayout, np_dtype

if TYPE_CHECKING:
    from rnnrt.ir.config import ModelConfig

__all__ = ["StepIO", "resolve_batch"]


class StepIO:
    """The Session's inputs, outputs and state layout at its batch size, read from its config (read-only).

    Executors read these public attributes; they never change after the Session is made.
    """

    def __init__(self, cfg: ModelConfig, batch_size: int, batch_symbols: set, fixed: bool) -> None:
        B = batch_size
        self.batch_size = B
        self.dynamic_batch = not fixed
        fixed_b = B if fixed else None
        self.inputs = {t.name: InputSpec(t.name, np_dtype(t.dtype), t.shape, batch_symbols, t.batch_axis, fixed_b,
                                         t.batch_fold) for t in cfg.inputs}
        self.input_names = [t.name for t in cfg.inputs]
        self.output_names = [t.name for t in cfg.outputs]
        self.output_axes = {t.name: t.batch_axis for t in cfg.outputs}
        self.output_folds = {t.name: tuple(t.batch_fold) for t in cfg.outputs if t.batch_fold}
        # Bindings whose batch axis folds the streams with other dims (batch_fold, e.g. T*N frame rows).
        self.folded = sorted(t.name for t in cfg.inputs + cfg.outputs if t.batch_fold)
        c = cfg.continuation
        self.cont = ContinuationFill(self.inputs[c.input], c.batch_axis, c.time_axis) \
            if (c is not None and c.fill == "auto") else None
        self.required = [n for n in self.input_names if self.cont is None or n != self.cont.spec.name]
        self.single_input = single_input(self.input_names, [c.input if c is not None else None])
        self.state_layout = []
        self.state_rows: dict[str, RowLayout] = {}
        self.state_outputs = {s.input: s.output for s in cfg.state}
        for s in cfg.state:
            shape = tuple(B if isinstance(d, str) else int(d) for d in s.shape)
            dtype = np_dtype(s.dtype)
            self.state_layout.append((s.input, shape, dtype))
            self.state_rows[s.input] = RowLayout(s.batch_axis, shape, dtype.itemsize)

    def as_mapping(self, frame: Any) -> Mapping[str, Any]:
        """A frame as a mapping; a bare array stands for the single user input."""
        if type(frame) is dict or isinstance(frame, Mapping):  # a dict skips typing's slow isinstance
            return frame
        if self.single_input is None or frame is None or isinstance(frame, (str, bytes)):
            raise BindingError(
                fmt("Session.step", f"Got a bare {type(frame).__name__} but the model has inputs {self.required}",
                    "Pass a mapping {input name: array}.")
            )
        return {self.single_input: frame}

    def unknown_input(self, name: Any) -> BindingError:
        if name in self.state_rows:
            return BindingError(
                fmt(f"Input {name!r}", "Is a state input; the Session feeds it",
                    "Use reset() to clear the state; feed only " + repr(self.input_names) + ".")
            )
        return BindingError(fmt(f"Input {name!r}", "Is not an input of the model", f"Inputs: {self.input_names}."))

    def missing(self, frame: Mapping[str, Any]) -> None:
        """Raises for the first required input the frame lacks."""
        for name in self.required:
            if name not in frame:
                raise BindingError(
                    fmt(f"Input {name!r}", "Is missing from the frame", f"Feed every input of {self.required}.")
                )

    def chunk(self, frames: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], int]:
        """The inputs of a chunk (``step_chunk``) as numpy arrays and their common frame count K (axis 0)."""
        arrays: dict[str, np.ndarray] = {}
        count = None
        for name, value in frames.items():
            if name not in self.inputs:
                raise self.unknown_input(name)
            if not isinstance(value, np.ndarray):
                try:
                    value = np.asarray(value)
                except (TypeError, ValueError) as err:
                    raise BindingError(fmt(f"Input {name!r}", f"A {type(value).__name__} is not an array of frames: "
                                           f"{err}", "Pass a numpy array [K, *step shape].")) from err
            if value.ndim == 0 or value.shape[0] == 0:
                raise BindingError(fmt(f"Input {name!r}", f"Received shape {value.shape}, no frames along axis 0",
                                       "A chunk carries K >= 1 frames along a new leading axis: [K, *step shape]."))
            if count is not None and value.shape[0] != count:
                first = next(iter(arrays))
                raise BindingError(fmt(f"Input {name!r}", f"Has {value.shape[0]} frames along axis 0, input {first!r} "
                                       f"has {count}", "Send the same number of frames for every input."))
            count = value.shape[0]
            arrays[name] = value
        if count is None:
            self.missing(frames)
            raise BindingError(fmt("Session.step_chunk", "Received no inputs", f"Feed {self.required}."))
        return arrays, count

    def complete(self, frame: Mapping[str, Any], host: dict, fed: int, n: int, sizes: Mapping[str, int],
                 starts: Optional[np.ndarray]) -> None:
        """After the frame's ``fed`` inputs were checked: raises for a required input it lacks, and adds the
        auto-filled continuation input to ``host`` when the frame omits it."""
        if fed == len(self.inputs):
            return
        self.missing(frame)
        cont = self.cont
        if cont is not None and cont.spec.name not in frame:
            host[cont.spec.name] = cont.make(n, sizes, starts)


def resolve_batch(cfg: ModelConfig, batch_size: Optional[int]) -> tuple[int, set, bool]:
    """Returns the session batch size, the names of dynamic batch dims and whether the batch is fixed."""
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
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or not 1 <= batch_size < 2 ** 31):
        raise ConfigError(fmt("Session", f"batch_size={batch_size!r} is not a positive integer",
                              "Pass the number of slots (streams), e.g. batch_size=64."))
    if fixed:
        (size, name), = fixed.items()
        if symbols:
            raise ConfigError(
                fmt("Config", f"Binding {name!r} has a fixed batch of {size} but others have dynamic batch {sorted(symbols)}",
                    "Use one batch dim for every binding.")
            )
        if batch_size is not None and batch_size != size:
            raise ConfigError(
                fmt("Session", f"batch_size={batch_size} was requested but the model's batch is fixed at {size}",
                    "Omit batch_size or export the model with a dynamic batch dim.")
            )
        return size, symbols, True
    if symbols:
        if batch_size is None:
            raise ConfigError(
                fmt("Session", f"The model has a dynamic batch dim {sorted(symbols)[0]!r} and no batch_size was given",
                    "Pass batch_size=N (the number of streams) to load() or Session().")
            )
        return int(batch_size), symbols, False
    return int(batch_size or 1), symbols, True
