"""The check's generated inputs: the layout of a batch (its rows and the size of every dynamic dim), seeded
frames per stream, and a batch of streams run one call per step with the state carried."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import onnx

from rnnrt.importers.check.runner import _NotRun, _Runner
from rnnrt.ir.stepgraph import StepGraph, TensorSpec

G_LOGGER = logging.getLogger("rnnrt.check")

STREAMS = 3
"""Streams in one batch for the batch check (a dynamic batch; a fixed one uses its size)."""

_SIZES = (16, 64, 256, 512, 1024, 1, 4, 8, 32, 128, 2048)


def _join(parts: Sequence[np.ndarray], axis: Optional[int], fold: Optional[tuple]) -> np.ndarray:
    """Stacks one frame per stream along the batch axis (``batch_fold`` [outer, inner]: stream-interleaved)."""
    if axis is None or len(parts) == 1:
        return parts[0]
    if fold is None:
        return np.concatenate(parts, axis=axis)
    outer, inner = fold
    shaped = [p.reshape(p.shape[:axis] + (outer, 1, inner) + p.shape[axis + 1:]) for p in parts]
    joined = np.concatenate(shaped, axis=axis + 1)
    return joined.reshape(joined.shape[:axis] + (outer * len(parts) * inner,) + joined.shape[axis + 3:])


def _row(arr: np.ndarray, axis: Optional[int], fold: Optional[tuple], k: int, n: int) -> np.ndarray:
    """Stream ``k``'s part of a batch of ``n`` (the inverse of :func:`_join`)."""
    if axis is None:
        return arr
    if fold is None:
        m = arr.shape[axis] // n
        return np.take(arr, np.arange(k * m, (k + 1) * m), axis=axis)
    outer, inner = fold
    split = arr.reshape(arr.shape[:axis] + (outer, n, inner) + arr.shape[axis + 1:])
    part = np.take(split, [k], axis=axis + 1)
    return part.reshape(arr.shape[:axis] + (outer * inner,) + arr.shape[axis + 1:])


@dataclasses.dataclass
class _Layout:
    """How frames of the step graph are made: the rows of a batch and the size of every dynamic dim."""

    step: StepGraph
    rows: int                 # streams in one batched run
    dynamic_batch: bool       # the batch dim is symbolic (streams can also run alone)
    batch_names: set
    sizes: dict               # other dynamic dims
    cont: Optional[TensorSpec]
    steps: int = 1            # calls per stream

    def frame_shape(self, t: TensorSpec) -> tuple:
        """One stream's frame of input ``t``."""
        shape = []
        for a, d in enumerate(t.shape):
            if a == t.batch_axis:
                shape.append(t.batch_entries(1))
            elif isinstance(d, int):
                shape.append(d)
            else:
                shape.append(self.sizes[d])
        return tuple(shape)

    def state(self, n: int) -> dict[str, np.ndarray]:
        return {s.input: np.zeros([n if a == s.batch_axis and isinstance(d, str) else d for a, d in enumerate(s.shape)],
                                  s.dtype) for s in self.step.states}

    def cont_value(self, n: int, starts: Sequence[int]) -> np.ndarray:
        """The continuation input for ``n`` rows with 0 at t=0 of the rows ``starts`` (as the Session fills it)."""
        c, spec = self.step.continuation, self.cont
        shape = [spec.batch_entries(n) if a == c.batch_axis else (d if isinstance(d, int) else self.sizes.get(d, 1))
                 for a, d in enumerate(spec.shape)]
        value = np.ones(shape, spec.dtype)
        rows = np.asarray(list(starts), dtype=np.intp)
        if not len(rows):
            return value
        if spec.batch_fold is not None and c.time_axis == c.batch_axis:
            outer, inner = spec.batch_fold
            a = c.batch_axis
            view = value.reshape(value.shape[:a] + (outer, n, inner) + value.shape[a + 1:])
            view[(slice(None),) * a + (0, rows)] = 0
            return value
        index: list[Any] = [slice(None)] * value.ndim
        index[c.batch_axis] = rows
        if c.time_axis is not None:
            index[c.time_axis] = 0
        value[tuple(index)] = 0
        return value


def _layout(step: StepGraph, runner: _Runner, seed: int) -> _Layout:
    cont = step.continuation.input if step.continuation is not None else None
    specs = list(step.inputs) + list(step.outputs)
    batch_names = {t.shape[t.batch_axis] for t in specs if t.batch_axis is not None and isinstance(t.shape[t.batch_axis], str)}
    batch_names |= {s.shape[s.batch_axis] for s in step.states if isinstance(s.shape[s.batch_axis], str)}
    fixed = [t.shape[t.batch_axis] // (t.batch_entries(1)) for t in step.inputs
             if t.batch_axis is not None and isinstance(t.shape[t.batch_axis], int)]
    fixed += [s.shape[s.batch_axis] for s in step.states if isinstance(s.shape[s.batch_axis], int)]
    dynamic_batch = bool(batch_names) and not fixed
    rows = STREAMS if dynamic_batch else (min(fixed) if fixed else 1)
    time_names = _time_names(step)
    others = sorted({d for t in step.inputs for a, d in enumerate(t.shape)
                     if isinstance(d, str) and d not in batch_names and a != t.batch_axis} - time_names)
    sizes = {**{n: rows for n in batch_names}, **{n: 1 for n in time_names}}
    cont_spec = next((t for t in step.inputs if t.name == cont), None)
    layout = _Layout(step, rows, dynamic_batch, batch_names, sizes, cont_spec)
    if others:  # the first size the step graph runs with
        for size in _SIZES:
            layout.sizes.update({n: size for n in others})
            try:
                _stream(runner, layout, [_frames(layout, seed, 1, set())[0]], resets={})
                return layout
            except Exception as err:  # noqa: BLE001 - ORT raises many kinds; the next size may run
                G_LOGGER.debug("Size %d does not run: %s", size, err)
        raise _NotRun(f"no size of the dynamic dims {others} runs the step graph (pin them with --dim NAME=N)")
    return layout


def _time_axes(model: onnx.ModelProto, states: Sequence[Any] = ()) -> dict[str, int]:
    """The recurrent nodes' time axis on each graph input/output that carries it: the ONNX importer's
    symbolic inference, and for inputs it cannot follow (a conv or reshape before the recurrence) the
    importer's probe of the one dynamic dim that a recurrent node's sequence length follows
    (:func:`rnnrt.importers.onnx.axes.time_axes`, given the step graph's ``states``); empty for a model
    without LSTM/GRU/RNN nodes."""
    from rnnrt.importers.onnx.axes import _rnn_axes, time_axes

    found = {name: axis for name, axis in _rnn_axes(model)[1].items() if axis is not None}
    if states:
        for name, axis in time_axes(model, list(states)).items():
            found.setdefault(name, axis)
    return found


def _time_names(step: StepGraph) -> set:
    """Dim names on the recurrent nodes' time axis (one frame per call)."""
    times = _time_axes(step.model, step.states)
    return {t.shape[times[t.name]] for t in step.inputs if t.name in times and isinstance(t.shape[times[t.name]], str)}


def _frames(layout: _Layout, seed: int, streams: int, steady: set, base: int = 0) -> list[list[dict[str, np.ndarray]]]:
    """``frames[k][t]``: stream ``k``'s inputs at step ``t`` (inputs in ``steady`` keep their step-0 value)."""
    steps = layout.steps
    cont = layout.cont.name if layout.cont is not None else None
    shared_rng = np.random.default_rng([seed, 1 << 20])
    shared = [{} for _ in range(steps)]
    out = []
    for k in range(streams):
        rng = np.random.default_rng([seed, base + k])
        frames = []
        for t in range(steps):
            frame = {}
            for spec in layout.step.inputs:
                if spec.name == cont:
                    continue
                if spec.name in steady and t > 0:
                    frame[spec.name] = frames[0][spec.name]
                    continue
                src = rng if spec.batch_axis is not None else shared_rng
                if spec.batch_axis is None and spec.name in shared[t]:
                    frame[spec.name] = shared[t][spec.name]
                    continue
                value = _random(src, layout.frame_shape(spec), np.dtype(spec.dtype))
                if spec.batch_axis is None:
                    shared[t][spec.name] = value
                frame[spec.name] = value
            frames.append(frame)
        out.append(frames)
    return out


def _random(rng: np.random.Generator, shape: tuple, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.integers(0, 2, size=shape).astype(dtype)


def _feeds(layout: _Layout, rows: Sequence[Sequence[dict]], t: int) -> dict[str, np.ndarray]:
    """Step ``t``'s user inputs for a batch of ``rows`` (one frame list per stream)."""
    return {spec.name: _join([r[t][spec.name] for r in rows], spec.batch_axis, spec.batch_fold)
            for spec in layout.step.inputs if spec.name in rows[0][t]}


def _stream(runner: _Runner, layout: _Layout, rows: Sequence[Sequence[dict]], resets: Mapping[int, Sequence[int]],
            n: Optional[int] = None) -> list[dict]:
    """Streams a batch of ``len(rows)`` streams (``n``: one list of frames that hold ``n`` rows each) one
    call per step, the state carried; at step ``t`` the rows ``resets[t]`` restart (state zeroed,
    continuation 0); every row starts fresh at step 0."""
    n = n or len(rows)
    state = layout.state(n)
    outs = []
    for t in range(len(rows[0])):
        starts = list(range(n)) if t == 0 else list(resets.get(t, ()))
        for s in layout.step.states:
            if starts and t > 0:
                index: list[Any] = [slice(None)] * state[s.input].ndim
                index[s.batch_axis] = starts
                state[s.input] = state[s.input].copy()
                state[s.input][tuple(index)] = 0
        feeds = _feeds(layout, rows, t)
        if layout.cont is not None and layout.cont.name not in feeds:  # a recorded feed may carry its own
            feeds[layout.cont.name] = layout.cont_value(n, starts)
        out = runner.run({**feeds, **state})
        state = {s.input: out[s.output] for s in layout.step.states}
        outs.append(out)
    return outs
