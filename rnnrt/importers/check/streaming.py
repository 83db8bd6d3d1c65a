"""The streaming check: the step graph streamed one frame per call against the original model, either fed its
state (and context) by hand or, where the step graph carries state the original does not, run over the whole
sequence."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import onnx

from rnnrt.errors import EquivalenceError, fmt
from rnnrt.importers.check.compare import _not_run, _Tally
from rnnrt.importers.check.culprit import _agree, _agree_mapped, _first_culprit, _label
from rnnrt.importers.check.frames import _feeds, _frames, _Layout, _stream, _time_axes
from rnnrt.importers.check.runner import _NotRun, _Runner
from rnnrt.ir.checks import CheckResult
from rnnrt.ir.stepgraph import StepGraph

G_LOGGER = logging.getLogger("rnnrt.check")

_PathOrModel = Union[str, os.PathLike, onnx.ModelProto]


@dataclasses.dataclass
class _Original:
    """The original model (constants bound) and how the step graph's state relates to it."""

    model: onnx.ModelProto
    explicit: list            # (state pair, the original's output of it): state the original has itself
    context: list             # (state pair, input name, samples, axis, rows mode)
    carried: list             # state the original does not carry (exposed recurrent state)


def _original(step: StepGraph, original: _PathOrModel, constants: Mapping[str, Any], context: Sequence[str]) -> _Original:
    model = original if isinstance(original, onnx.ModelProto) else onnx.load(os.fspath(original))
    if constants:
        from rnnrt.importers.onnx.fold import bind_constants

        model = bind_constants(model, constants)
    weights = {t.name for t in model.graph.initializer}
    ins = {vi.name for vi in model.graph.input if vi.name not in weights}
    outs = {vi.name for vi in model.graph.output}
    cont = step.continuation.input if step.continuation is not None else None
    missing = [t.name for t in step.inputs if t.name != cont and t.name not in ins]
    if missing:
        raise _NotRun(f"step graph input(s) {missing} are not inputs of the original")
    specs = {t.name: t for t in step.inputs}
    explicit, ctx, carried = [], [], []
    contexts = [_parse_context(c) for c in context]
    copies = {n.output[0]: n.input[0] for n in step.model.graph.node if n.op_type == "Identity"}
    for s in step.states:
        out = s.output
        while out not in outs and out in copies:  # a state output kept beside a user output is a copy
            out = copies[out]
        if s.input in ins and out in outs:
            explicit.append((s, out))
            continue
        hit = next(((name, k, axis) for name, k, axis in contexts
                    if s.input.startswith(f"{name}.context") and name in specs and s.shape[axis] == k), None)
        if hit is not None:
            spec = specs[hit[0]]
            rows = spec.batch_axis is None and len(spec.shape) == 2 and not isinstance(spec.shape[0], int)
            ctx.append((s, *hit, rows))
        else:
            carried.append(s)
    return _Original(model, explicit, ctx, carried)


def _parse_context(spec: Any) -> tuple[str, int, int]:
    """``INPUT:K`` (last axis) or ``INPUT:K:AXIS`` -> (input, K, axis); ``{"input":, "samples":}`` too."""
    if isinstance(spec, dict):
        return str(spec.get("input")), int(spec.get("samples")), int(spec.get("axis", -1))
    parts = str(spec).split(":")
    if len(parts) >= 3 and parts[-1].lstrip("-").isdigit() and parts[-2].isdigit():
        return ":".join(parts[:-2]), int(parts[-2]), int(parts[-1])
    return ":".join(parts[:-1]), int(parts[-1]), -1


def _by_hand(orig: _Original, runner: _Runner, layout: _Layout, rows: Sequence[Sequence[dict]], restart: int) -> list[dict]:
    """The original fed its state (and context) by hand, one call per step, restarting at ``restart``."""
    n = len(rows)
    outs = []
    state: dict[str, np.ndarray] = {}
    ctx: dict[str, np.ndarray] = {}
    for t in range(len(rows[0])):
        if t in (0, restart):
            zeros = layout.state(n)
            state = {s.input: zeros[s.input] for s, _ in orig.explicit}
            ctx = {s.input: zeros[s.input] for s, *_ in orig.context}
        feeds = _feeds(layout, rows, t)
        tails = {}
        for s, name, k, axis, rows_mode in orig.context:
            x = feeds[name]
            if rows_mode:  # row i of a call continues row i-1 (Silero's sequence model)
                last = x[:, -k:]
                feeds[name] = np.concatenate([np.concatenate([ctx[s.input], last[:-1]], axis=0), x], axis=1)
                tails[s.input] = last[-1:]
            else:
                full = np.concatenate([ctx[s.input], x], axis=axis)
                feeds[name] = full
                tails[s.input] = np.take(full, np.arange(full.shape[axis] - k, full.shape[axis]), axis=axis)
        out = runner.run({**feeds, **state})
        state = {s.input: out[name] for s, name in orig.explicit}
        ctx = tails
        outs.append(out)
    return outs


def _time_axis(whole: np.ndarray, parts: Sequence[np.ndarray]) -> Optional[int]:
    """The one axis along which ``whole`` is the ``parts`` concatenated (``len(parts)`` times longer, the
    other dims equal); -1 where the shapes agree (a final state, a value without time); None otherwise."""
    if not (isinstance(whole, np.ndarray) and all(isinstance(p, np.ndarray) for p in parts)):
        return None
    one = parts[0]
    if whole.shape == one.shape:
        return -1
    if whole.ndim != one.ndim or any(p.shape != one.shape for p in parts):
        return None
    axes = [a for a in range(whole.ndim) if whole.shape[a] == len(parts) * one.shape[a]
            and all(whole.shape[b] == one.shape[b] for b in range(whole.ndim) if b != a)]
    return axes[0] if len(axes) == 1 else None


def _along_time(whole: np.ndarray, parts: Sequence[np.ndarray]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(whole, streamed): the parts concatenated along the time axis, or the last part (see :func:`_time_axis`)."""
    axis = _time_axis(whole, parts)
    if axis is None:
        return None
    return whole, parts[-1] if axis < 0 else np.concatenate(parts, axis=axis)


def _whole(orig: _Original, runner: _Runner, layout: _Layout, rows: Sequence[Sequence[dict]], span: tuple[int, int],
           times: Mapping[str, Optional[int]]) -> dict:
    """The original run once over the frames ``span`` concatenated along each input's time axis."""
    a, b = span
    feeds = {}
    for spec in layout.step.inputs:
        if layout.cont is not None and spec.name == layout.cont.name:
            continue
        per_step = [_feeds(layout, rows, t)[spec.name] for t in range(a, b)]
        axis = times.get(spec.name)
        feeds[spec.name] = per_step[0] if axis is None else np.concatenate(per_step, axis=axis)
    zeros = layout.state(len(rows))
    feeds.update({s.input: zeros[s.input] for s, _ in orig.explicit})
    return runner.run(feeds)


def _streaming(step: StepGraph, runner: _Runner, orig: _Original, layout: _Layout, seed: int, steps: int) -> CheckResult:
    orig_runner = _Runner(orig.model)
    restart = steps // 2
    rows_n = 1 if layout.dynamic_batch or layout.rows == 1 else layout.rows
    compared = [(t.name, t.name) for t in step.outputs] + [(s.output, name) for s, name in orig.explicit]
    compared = [(mine, theirs) for mine, theirs in compared if theirs in orig_runner.outputs]
    if orig.carried:
        from rnnrt.ir.bindings import graph_bindings

        times = _time_axes(step.model, step.states)
        names = [s.input for s in orig.carried]
        if not any(t.name in times for t in step.inputs):
            raise _NotRun(f"the original does not carry the state {names} and has no time axis to run whole sequences")
        dims = graph_bindings(orig.model, "input")
        fixed = {n: dims[n][1][a] for n, a in times.items() if n in dims and dims[n][1] and isinstance(dims[n][1][a], int)}
        if fixed:
            raise _NotRun(f"the original does not carry the state {names}, and its time axis is fixed ({fixed}): "
                          "it cannot run a whole sequence")
        steady = {t.name for t in step.inputs if t.name not in times}
        rows = _frames(layout, seed, rows_n, steady)
        streamed = _stream(runner, layout, rows, {restart: range(rows_n)})
        tally = _Tally()
        for span in ((0, restart), (restart, steps)):
            whole = _whole(orig, orig_runner, layout, rows, span, times)
            for mine, theirs in compared:
                parts = [streamed[t][mine] for t in range(*span)]
                axis = _time_axis(whole[theirs], parts)
                if axis is None:
                    continue
                if axis < 0:  # no time axis: the final value (a state) is compared
                    tally.add(span[1] - 1, mine, whole[theirs], parts[-1])
                    continue
                for k, t in enumerate(range(*span)):  # step by step: the first differing step is named
                    size = parts[0].shape[axis]
                    tally.add(t, mine, np.take(whole[theirs], np.arange(k * size, (k + 1) * size), axis=axis), parts[k])
        what = "the step graph streamed one frame per call vs the original's whole-sequence run"
        if tally.first is not None:
            _raise_streaming(step, orig, layout, rows, restart, tally, what, times)
        return tally.result("streaming", what)
    rows = _frames(layout, seed, rows_n, set())
    streamed = _stream(runner, layout, rows, {restart: range(rows_n)})
    by_hand = _by_hand(orig, orig_runner, layout, rows, restart)
    tally = _Tally()
    for t in range(steps):
        for mine, theirs in compared:
            tally.add(t, mine, by_hand[t][theirs], streamed[t][mine])
    fed = "the original fed its state" + (" and context" if orig.context else "") + " by hand"
    what = f"the step graph streamed one frame per call vs {fed}"
    if tally.first is not None:
        _raise_streaming(step, orig, layout, rows, restart, tally, what, None)
    return tally.result("streaming", what)


def _raise_streaming(step: StepGraph, orig: _Original, layout: _Layout, rows: Sequence[Sequence[dict]], restart: int,
                     tally: _Tally, compared: str, times: Optional[Mapping[str, Optional[int]]]) -> None:
    t, name, err = tally.first  # type: ignore[misc]
    culprit = None
    try:
        runner = _Runner(step.model, expose=True, external=step.external_data)
        orig_runner = _Runner(orig.model, expose=True)
        streamed = _stream(runner, layout, rows, {restart: range(len(rows))})
        steps = len(rows[0])
        if times is None:
            by_hand = _by_hand(orig, orig_runner, layout, rows, restart)
            pairs = [_agree(by_hand[k], {n: (lambda v=v: v) for n, v in streamed[k].items()}) for k in range(steps)]
        else:
            pairs = []
            for span in ((0, restart), (restart, steps)):
                whole = _whole(orig, orig_runner, layout, rows, span, times)
                parts = {n: (lambda n=n, span=span, whole=whole: _streamed_along(whole, streamed, n, span))
                         for n in streamed[0]}
                pairs.append(_agree_mapped(parts))
        culprit = _first_culprit(step.model, pairs)
    except Exception as err_:  # noqa: BLE001 - the bisection is a hint; the difference stands
        G_LOGGER.debug("Bisection failed: %s", err_)
    where = f"the first op that differs is {_label(culprit)}" if culprit is not None else "the op could not be located"
    if times is not None:
        note = (f"{_label(culprit) or 'An op'} mixes time steps, so one frame per call cannot equal the whole "
                "sequence. A window along time before the recurrence can be carried as state with --context "
                "INPUT:K; an op after the recurrence cannot stream: feed whole sequences per call. "
                "--no-check writes the conversion anyway.")
    else:
        note = ("The step graph no longer computes what the model does there: check the --set values and --context "
                "(the samples the model's own wrapper prepends), or declare the state with --override. "
                "--no-check writes the conversion anyway.")
    raise EquivalenceError(fmt(f"Output {name!r} at step {t}",
                               f"Convert-time check: {compared} differ by up to {err:.3g}; {where}", note))


def _streamed_along(whole: dict, streamed: list, name: str, span: tuple) -> Optional[tuple]:
    if name not in whole:
        return None
    return _along_time(whole[name], [streamed[t][name] for t in range(*span)])


def _run_streaming(step: StepGraph, runner: _Runner, original: Optional[_PathOrModel], constants: Mapping[str, Any],
                   context: Sequence[Any], layout: _Layout, seed: int, steps: int) -> CheckResult:
    if original is None:
        return _not_run("streaming", "no original model to run (Caffe: the step graph is the net)")
    try:
        orig = _original(step, original, constants, context)
        return _streaming(step, runner, orig, layout, seed, steps)
    except EquivalenceError:
        raise
    except _NotRun as why:
        return _not_run("streaming", str(why))
    except Exception as err:  # noqa: BLE001 - the original may not run in ORT; recorded as not checked
        return _not_run("streaming", f"could not run: {err}")
