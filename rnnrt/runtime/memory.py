"""What the state core and its executors share: the arena layout, the Arena and Executor protocols.

Import direction inside the runtime: ``bindings`` and ``memory`` (leaves) <- ``host`` / ``device`` (the
executors) <- ``session`` (the state core, which picks an executor by the engine's memory space) <- ``pool``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Protocol

import numpy as np

from rnnrt.runtime.frames import RowLayout

__all__ = ["ALIGN", "Arena", "DoneHandle", "Executor", "aligned_layout", "feedback_bindings"]

# Arena offsets are aligned like device allocations so the same layout serves device memory.
ALIGN = 256


def aligned_layout(sizes: list[int]) -> tuple[list[int], int]:
    """Offsets of consecutive blocks of ``sizes`` bytes, each aligned to :data:`ALIGN`; and the total."""
    offsets, end = [], 0
    for n in sizes:
        end = -(-end // ALIGN) * ALIGN
        offsets.append(end)
        end += int(n)
    return offsets, end


def feedback_bindings(pairs: Mapping[str, str], arenas: tuple) -> tuple[list[dict], list[dict]]:
    """Per parity (the input arena 0 or 1), what the engine reads (that arena's views by state input name) and where it writes
    (arena 1-parity's views by state output name): the two arenas swap roles every step."""
    feeds = [dict(arenas[parity].views) for parity in (0, 1)]
    dests = [{pairs[n]: arenas[1 - parity].views[n] for n in pairs} for parity in (0, 1)]
    return feeds, dests


class Arena(Protocol):
    """One buffer holding every state tensor (host or device memory); the Session keeps two.

    ``views`` maps each state input name to the tensor the engine reads or writes (a numpy view for
    a host arena, a :class:`rnnrt.engines.base.DeviceTensor` for a device arena). Row arguments are
    slot arrays; ``rows`` maps each name to its :class:`rnnrt.runtime.frames.RowLayout`.
    """

    views: Mapping[str, Any]

    def zero(self) -> None: ...

    def zero_rows(self, rows: Mapping[str, RowLayout], slots: np.ndarray) -> None: ...

    def copy_from(self, other: "Arena") -> None: ...

    def copy_rows_from(self, other: "Arena", rows: Mapping[str, RowLayout], slots: np.ndarray) -> None: ...

    def read_all(self) -> dict[str, np.ndarray]: ...

    def read_rows(self, rows: Mapping[str, RowLayout], slots: np.ndarray) -> dict[str, np.ndarray]: ...

    def write_rows(self, rows: Mapping[str, RowLayout], slots: np.ndarray, values: Mapping[str, np.ndarray]) -> None: ...

    def free(self) -> None: ...


class Executor(Protocol):
    """Runs steps for a Session over one kind of memory (see the module doc)."""

    fast: Any
    """A callable ``fast(frame, in_arena) -> outputs | None`` for a repeated frame layout, or None."""
    fast_rows: Any
    """The same for a step of some slots, ``fast_rows(frame, in_arena, rows)``; the caller feeds back."""

    def make_arena(self, layout: list[tuple[str, tuple, np.dtype]]) -> Arena: ...

    def bind_arenas(self, arenas: tuple) -> None: ...

    def run(self, frame: Mapping[str, Any], slots: Optional[np.ndarray], n: int, starts: Optional[np.ndarray],
            parity: int, fuse_copy: bool, out: Optional[Mapping[str, np.ndarray]], wait: bool) -> tuple[Any, bool]: ...

    def input_buffers(self, shapes: Optional[Mapping[str, tuple]]) -> dict[str, np.ndarray]: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


class DoneHandle:
    """The handle of a step that has finished (a host step, or an empty one); ``wait()`` returns its outputs.

    A device step's handle is :class:`rnnrt.runtime.device.StepHandle` (same two methods).
    """

    __slots__ = ("_result",)

    def __init__(self, result: Any) -> None:
        self._result = result

    def done(self) -> bool:
        return True

    def wait(self) -> dict[str, Any]:
        return self._result
