"""The convert-time equivalence check: the step graph computes what the original model computes.

After an importer made a step graph, :func:`check_conversion` runs it in ONNX Runtime on generated frames
(seeded; each input's dtype and shape, floats in [-1, 1), integers 0/1; inputs bound with ``--set`` stay
bound) over two short sequences with a reset between them, and checks:

- **streaming**: one frame per call with the state carried equals the original model. Where the step graph
  carries state the original does not (recurrent nodes whose state was exposed, carried context), the
  reference is the original's whole-sequence run (the sequence concatenated along its time axis); where
  the original has the state pairs itself, the reference is the original fed its state by hand (and the
  context ``--context`` carries, prepended by hand as the model's own wrapper does).
- **batch**: streams with different data in one batch equal each stream alone. When they do not, the op
  that mixes the rows is found and the model is marked one stream per batch
  (:attr:`rnnrt.ir.checks.ChecksRecord.batch_one`); a ``StreamPool`` over more than one slot refuses it.
- **reset**: a stream reset in the middle (its state zeroed, the continuation input 0, as the Session does)
  equals a fresh stream fed the same frames.
- **reference** (optional): the step graph streamed over a recorded feed (``call{k}/{name}`` .npz, the
  format ``rnnrt verify --feed`` reads) equals the outputs recorded there, e.g. from the package's own
  wrapper: this tells a model whose wrapper prepends context (Silero) from one converted without it.

A difference in streaming, reset or reference raises :class:`rnnrt.errors.EquivalenceError` naming the
first differing step and output and, where it can be found, the op: both runs are repeated with every
intermediate tensor exposed as an output and the first node whose outputs differ while its inputs agree
is named. Only ONNX Runtime and the step graph are used (no runtime stage).

::

    from rnnrt.config import save_step_graph
    from rnnrt.importers.check import check_conversion
    from rnnrt.importers.onnx.importer import convert_onnx

    step = convert_onnx("lstm.onnx", add_reset=True)
    step = check_conversion(step, original="lstm.onnx")      # raises EquivalenceError on a difference
    save_step_graph(step, "out")                             # out/model.yaml records `checks:`
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import onnx

from rnnrt.errors import ConfigError, EquivalenceError, fmt
from rnnrt.ir.checks import CheckResult, ChecksRecord
from rnnrt.ir.stepgraph import StepGraph, TensorSpec

G_LOGGER = logging.getLogger("rnnrt.check")

__all__ = ["BUDGET_S", "DEFAULT_STEPS", "MAX_EXTERNAL_BYTES", "ROW_MIXING_OPS", "STREAMS", "TOLERANCE", "check_conversion"]

DEFAULT_STEPS = 8
"""Calls per stream: two sequences of ``steps // 2`` and the rest, a reset between them."""

STREAMS = 3
"""Streams in one batch for the batch check (a dynamic batch; a fixed one uses its size)."""

MAX_EXTERNAL_BYTES = 128 << 20
"""Weights kept outside the model (big Caffe nets) up to which the check runs (ONNX Runtime copies them)."""

BUDGET_S = 10.0
"""Seconds the check may take by default; a slower model runs fewer steps (see ``check_conversion``)."""

_CALLS_PER_STEP = 7  # model calls per step over every run of the check (streamed, batched, alone, fresh ...)

TOLERANCE = 1e-5
"""An output differs where ``|got - ref| > TOLERANCE * max(1, max |ref|)``."""

ROW_MIXING_OPS: dict[str, str] = {
    "DynamicQuantizeLinear": "dynamic quantization computes one scale over the whole batch",
    "DynamicQuantizeLSTM": "dynamic quantization computes one scale over the whole batch",
    "DynamicQuantizeMatMul": "dynamic quantization computes one scale over the whole batch",
    "BatchNormalization": "it normalizes with statistics of the whole batch",
}
"""Ops known to mix the rows of a batch, and why (for the ``batch_one`` reason)."""

_SIZES = (16, 64, 256, 512, 1024, 1, 4, 8, 32, 128, 2048)
_PathOrModel = Union[str, os.PathLike, onnx.ModelProto]


class _Runner:
    """One model in ONNX Runtime; ``expose`` makes every intermediate tensor an output too; ``external``:
    the weights the model holds as external-data placeholders (a big Caffe net's, kept in memory)."""

    def __init__(self, model: onnx.ModelProto, expose: bool = False,
                 external: Optional[Mapping[str, np.ndarray]] = None) -> None:
        import onnxruntime as ort

        if expose:
            model = copy.deepcopy(model)
            have = {o.name for o in model.graph.output}
            for node in model.graph.node:
                for name in node.output:
                    if name and name not in have:
                        model.graph.output.append(onnx.ValueInfoProto(name=name))
                        have.add(name)
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.intra_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        if external:
            names = list(external)
            self._values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(external[n])) for n in names]
            opts.add_external_initializers(names, self._values)
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(self.outputs, {k: v for k, v in feeds.items() if k in self.inputs})))


# --- frames, rows and state -------------------------------------------------------------------------------


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


def _time_axes(model: onnx.ModelProto) -> dict[str, int]:
    """The recurrent nodes' time axis on each graph input/output that carries it (the ONNX importer's
    symbolic inference); empty for a model without LSTM/GRU/RNN nodes."""
    from rnnrt.importers.onnx.axes import _rnn_axes

    return {name: axis for name, axis in _rnn_axes(model)[1].items() if axis is not None}


def _time_names(step: StepGraph) -> set:
    """Dim names on the recurrent nodes' time axis (one frame per call)."""
    times = _time_axes(step.model)
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


# --- comparing ----------------------------------------------------------------------------------------------


def _error(ref: np.ndarray, got: np.ndarray, tol: float = TOLERANCE) -> tuple[float, float, bool]:
    """``(max abs error, max rel error, beyond tolerance)``; a shape mismatch is infinitely far."""
    if ref.shape != got.shape:
        return float("inf"), float("inf"), True
    if ref.size == 0:
        return 0.0, 0.0, False
    r, g = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    diff = np.where((r == g) | (np.isnan(r) & np.isnan(g)), 0.0, np.abs(g - r))
    diff = np.where(np.isnan(diff), np.inf, diff)
    finite = np.abs(r[np.isfinite(r)])
    limit = tol * max(1.0, float(finite.max()) if finite.size else 1.0)
    rel = diff / np.maximum(np.abs(np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)), limit)
    return float(diff.max()), float(rel.max()), bool(diff.max() > limit)


class _Tally:
    """The largest errors of one check and its first difference (step, output, error)."""

    def __init__(self) -> None:
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.output: Optional[str] = None
        self.first: Optional[tuple[int, str, float]] = None

    def add(self, t: int, name: str, ref: np.ndarray, got: np.ndarray) -> None:
        a, r, bad = _error(ref, got)
        if self.output is None or a > self.max_abs:
            self.max_abs, self.output = a, name
        self.max_rel = max(self.max_rel, r)
        if bad and self.first is None:
            self.first = (t, name, a)

    def result(self, check: str, compared: str, reason: Optional[str] = None) -> CheckResult:
        if self.output is None:  # nothing matched: not a pass
            return CheckResult(check=check, compared=compared, passed=None,
                               reason=reason or "no output of the two runs could be matched")
        return CheckResult(check=check, compared=compared, passed=self.first is None, max_abs=self.max_abs,
                           max_rel=self.max_rel, output=self.output, reason=reason)


def _is_float(value: np.ndarray) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind == "f"


def _culprit(model: onnx.ModelProto, agree: Callable[[str], Optional[bool]]) -> Optional[onnx.NodeProto]:
    """The first node (graph order) with an output that differs while none of its inputs does."""
    for node in model.graph.node:
        if not any(agree(o) is False for o in node.output if o):
            continue
        if all(agree(i) is not False for i in node.input if i):
            return node
    return None


def _label(node: Optional[onnx.NodeProto]) -> str:
    if node is None:
        return ""
    return f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node (outputs {list(node.output)})"


def _first_culprit(model: onnx.ModelProto, pairs: Sequence[Callable[[str], Optional[bool]]]) -> Optional[onnx.NodeProto]:
    """The culprit at the first step (of ``pairs``, one agreement per step) where anything differs."""
    names = [o for node in model.graph.node for o in node.output if o]
    for agree in pairs:
        if any(agree(n) is False for n in names):
            return _culprit(model, agree)
    return None


def _agree(ref: Mapping[str, np.ndarray], got: Mapping[str, Callable[[], Optional[np.ndarray]]]) -> Callable[[str], Optional[bool]]:
    """Agreement of same-named float tensors (10x the output tolerance); None where not comparable."""
    cache: dict[str, Optional[bool]] = {}

    def agree(name: str) -> Optional[bool]:
        if name not in cache:
            r, g = ref.get(name), got[name]() if name in got else None
            ok = None
            if _is_float(r) and _is_float(g) and r.shape == g.shape:
                ok = not _error(r, g, 10 * TOLERANCE)[2]
            cache[name] = ok
        return cache[name]

    return agree


# --- the checks -----------------------------------------------------------------------------------------------


class _NotRun(Exception):
    """A check that cannot run (with the reason)."""


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

        times = _time_axes(step.model)
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


def _agree_mapped(parts: Mapping[str, Callable[[], Optional[tuple]]]) -> Callable[[str], Optional[bool]]:
    cache: dict[str, Optional[bool]] = {}

    def agree(name: str) -> Optional[bool]:
        if name not in cache:
            pair = parts[name]() if name in parts else None
            ok = None
            if pair is not None and _is_float(pair[0]) and _is_float(pair[1]):
                ok = not _error(pair[0], pair[1], 10 * TOLERANCE)[2]
            cache[name] = ok
        return cache[name]

    return agree


def _batch_and_reset(step: StepGraph, runner: _Runner, layout: _Layout, seed: int,
                     steps: int) -> tuple[CheckResult, CheckResult, Optional[str]]:
    """The batch and reset checks; returns them and the ``batch_one`` reason (None when rows are independent)."""
    n = layout.rows
    restart = steps // 2
    reset_row = 1 if n > 1 else 0
    data = _frames(layout, seed + 1, n, set())
    batched = _stream(runner, layout, data, {restart: [reset_row]})
    # reset: the reset stream from the restart on vs a fresh stream fed the same frames. A dynamic batch
    # compares the stream alone (rows that mix are the batch check's finding, not the reset's).
    if layout.dynamic_batch:
        alone = [_stream(runner, layout, [data[k]], {restart: [0]} if k == reset_row else {}) for k in range(n)]
        reset_run, reset_k, reset_n, fresh_rows = alone[reset_row], 0, 1, [data[reset_row][restart:]]
    else:
        reset_run, reset_k, reset_n, fresh_rows = batched, reset_row, n, [frames[restart:] for frames in data]
    fresh = _stream(runner, layout, fresh_rows, {})
    reset = _Tally()
    for t in range(restart, steps):
        for spec in step.outputs:
            got = _row(reset_run[t][spec.name], spec.batch_axis, spec.batch_fold, reset_k, reset_n)
            ref = _row(fresh[t - restart][spec.name], spec.batch_axis, spec.batch_fold, reset_k, reset_n)
            reset.add(t, spec.name, ref, got)
    reset_what = f"a stream reset at step {restart} vs a fresh stream fed the same frames"
    if reset.first is not None:
        t, name, err = reset.first
        raise EquivalenceError(fmt(f"Output {name!r} at step {t}",
                                   f"Convert-time check: {reset_what} differ by up to {err:.3g}",
                                   "Some state is not carried by the state pairs, or the continuation input does not "
                                   "restart it: declare the state with --override. --no-check writes the conversion "
                                   "anyway."))
    reset_result = reset.result("reset", reset_what)
    if n < 2:
        return _not_run("batch", "the batch is fixed at 1 (or the model has none)"), reset_result, None
    # batch: each row vs the same stream alone (a fixed batch: row 0 beside other data)
    if layout.dynamic_batch:
        refs = [(k, alone[k], 0, 1) for k in range(n)]
        what = f"{n} streams with different data in one batch vs each alone"
    else:
        other = _frames(layout, seed + 2, n, set(), base=n)
        mixed = _stream(runner, layout, [data[0]] + other[1:], {restart: [reset_row]})
        refs = [(0, mixed, 0, n)]
        what = f"stream 0 in a batch of {n} vs the same stream beside other data"
    tally = _Tally()
    for k, ref_run, k_ref, n_ref in refs:
        for t in range(steps):
            for spec in step.outputs:
                got = _row(batched[t][spec.name], spec.batch_axis, spec.batch_fold, k, n)
                ref = _row(ref_run[t][spec.name], spec.batch_axis, spec.batch_fold, k_ref, n_ref)
                tally.add(t, spec.name, ref, got)
    if tally.first is None:
        return tally.result("batch", what), reset_result, None
    culprit = _batch_culprit(step, layout, data, restart, reset_row) if layout.dynamic_batch else None
    t, name, err = tally.first
    if culprit is not None:
        why = ROW_MIXING_OPS.get(culprit.op_type, "its rows depend on each other")
        reason = f"{_label(culprit)} mixes the streams of a batch ({why})"
    else:
        reason = "an op mixes the streams of a batch (not located)"
    reason += f"; output {name!r} differs by up to {err:.3g} at step {t}"
    return tally.result("batch", what, reason), reset_result, reason


def _batch_culprit(step: StepGraph, layout: _Layout, data: list, restart: int, reset_row: int) -> Optional[onnx.NodeProto]:
    try:
        runner = _Runner(step.model, expose=True, external=step.external_data)
        n = len(data)
        batched = _stream(runner, layout, data, {restart: [reset_row]})
        alone = [_stream(runner, layout, [data[k]], {restart: [0]} if k == reset_row else {}) for k in range(n)]
        pairs = []
        for t in range(len(data[0])):
            def rows_of(name: str, t: int = t) -> Optional[bool]:
                b = batched[t].get(name)
                ones = [alone[k][t].get(name) for k in range(n)]
                if not _is_float(b) or not all(_is_float(o) for o in ones):
                    return None
                one = ones[0]
                if b.shape == one.shape:
                    return all(not _error(o, b, 10 * TOLERANCE)[2] for o in ones)
                axes = [a for a in range(b.ndim) if b.ndim == one.ndim and b.shape[a] == n * one.shape[a]
                        and all(b.shape[j] == one.shape[j] for j in range(b.ndim) if j != a)]
                if len(axes) != 1:
                    return None
                return all(not _error(ones[k], _row(b, axes[0], None, k, n), 10 * TOLERANCE)[2] for k in range(n))
            pairs.append(rows_of)
        return _first_culprit(step.model, pairs)
    except Exception as err:  # noqa: BLE001 - the bisection is a hint
        G_LOGGER.debug("Batch bisection failed: %s", err)
        return None


def _reference(step: StepGraph, runner: _Runner, layout: _Layout, path: Union[str, os.PathLike]) -> CheckResult:
    """The step graph streamed over a recorded feed vs the outputs recorded in it."""
    calls, recorded = _read_feed(step, Path(path))
    rows = next((calls[0][t.name].shape[t.batch_axis] // t.batch_entries(1) for t in step.inputs
                 if t.batch_axis is not None and t.name in calls[0] and isinstance(t.shape[t.batch_axis], str)), 1)
    try:
        streamed = _stream(runner, layout, [calls], {}, n=rows)
    except Exception as err:  # noqa: BLE001 - ORT's message says which input does not fit
        raise ConfigError(fmt(f"Check reference {os.fspath(path)!r}", f"Cannot be streamed through the step graph: {err}",
                              "Its inputs are frames as the converted model takes them (see the config's inputs).")) from err
    tally = _Tally()
    for t, want in enumerate(recorded):
        for name, ref in want.items():
            tally.add(t, name, ref, streamed[t][name])
    compared = f"the step graph streamed over {os.fspath(path)!r} vs the outputs recorded there"
    if tally.first is not None:
        t, name, err = tally.first
        raise EquivalenceError(fmt(
            f"Output {name!r} at call {t} of {os.fspath(path)!r}",
            f"Convert-time check: {compared} differ by up to {err:.3g}",
            "The package's own wrapper feeds the model differently: a wrapper that prepends the last samples of the "
            "previous chunk needs --context INPUT:K (Silero: --context input:64 at 16 kHz, input:32 at 8 kHz), a "
            "model made for one chunk length --dim NAME=N, a constant input --set NAME=VALUE (sr=16000). "
            "--no-check writes the conversion anyway."))
    return tally.result("reference", compared)


def _read_feed(step: StepGraph, path: Path) -> tuple[list[dict], list[dict]]:
    """``call{k}/{name}`` arrays of an .npz: the inputs and the recorded outputs of each call."""
    import re
    import zipfile

    inputs = {t.name for t in step.inputs}
    outputs = {t.name for t in step.outputs}
    calls: dict[int, dict] = {}
    recorded: dict[int, dict] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                m = re.fullmatch(r"call(\d+)/(.+)", key)
                if m is not None and m.group(2).startswith("_internal/"):  # extra blobs of a Caffe recording
                    continue
                if m is None or m.group(2) not in inputs | outputs:
                    raise ConfigError(fmt(f"Check reference key {key!r}", "Is not call{k}/{name} of an input or output",
                                          f"Inputs: {sorted(inputs)}; outputs: {sorted(outputs)}."))
                target = calls if m.group(2) in inputs else recorded
                target.setdefault(int(m.group(1)), {})[m.group(2)] = npz[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, AttributeError) as err:
        raise ConfigError(fmt(f"Check reference {str(path)!r}", f"Cannot be read as .npz: {err}")) from err
    if not calls or sorted(calls) != list(range(len(calls))) or not recorded:
        raise ConfigError(fmt(f"Check reference {str(path)!r}", "Has no calls 0, 1, 2 ... with inputs and outputs",
                              "Keys are call{k}/{input} and call{k}/{output}, k from 0 without gaps."))
    return [calls[k] for k in range(len(calls))], [recorded.get(k, {}) for k in range(len(calls))]


def check_conversion(
    step: StepGraph,
    original: Optional[_PathOrModel] = None,
    *,
    constants: Optional[Mapping[str, Any]] = None,
    context: Optional[Sequence[Any]] = None,
    steps: Optional[int] = None,
    seed: int = 0,
    reference: Union[str, os.PathLike, None] = None,
    no_reference: Optional[str] = None,
) -> StepGraph:
    """Runs the step graph beside the original model and records the result in ``step.checks``.

    Args:
        step (StepGraph): The converted step graph (not modified; a copy with ``checks`` is returned).
        original (str | os.PathLike | onnx.ModelProto | None): The model that was converted (ONNX). None
            (Caffe): no streaming reference; the batch and reset checks run on the step graph.
        constants (Mapping[str, Any] | None): The ``--set`` values the conversion bound (the original is
            run with the same values).
        context (Sequence | None): The ``--context INPUT:K[:AXIS]`` specs the conversion carried.
        steps (int | None): Calls per stream, at least 2 (``--check-steps``). None: :data:`DEFAULT_STEPS`,
            fewer (down to 2, said in a note) when one call of the model takes so long that the check would
            exceed :data:`BUDGET_S`.
        seed (int): Seed of the generated frames. Defaults to 0.
        reference (str | os.PathLike | None): A recorded feed (``call{k}/{input}`` and
            ``call{k}/{output}`` arrays, one stream) that the step graph must reproduce.
        no_reference (str | None): Why the original is no reference although given (``--forward-only``
            changes the outputs by request): the streaming check is recorded as not run, with this reason.

    Returns:
        StepGraph: ``step`` with ``checks`` set (and a note when the model is one stream per batch).

    Raises:
        EquivalenceError: Streaming, a reset or the reference differ; names the step, output and op.
        ConfigError: ``steps`` < 2, or an unreadable reference.
    """
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 2):
        raise ConfigError(fmt(f"check steps {steps!r}", "Is not an integer >= 2",
                              "The check runs two sequences with a reset between them: --check-steps 8."))
    results: list[CheckResult] = []
    notes: list[str] = []
    batch_one = None
    big = sum(a.nbytes for a in step.external_data.values())
    if big > MAX_EXTERNAL_BYTES:
        reason = (f"the weights kept outside the model ({big / 2**20:.0f} MiB) would be held twice in memory; "
                  "run `rnnrt verify` on the written model")
        return _record(step, seed, steps or DEFAULT_STEPS, [_not_run("streaming", reason)], None)
    try:
        runner = _Runner(step.model, external=step.external_data)
        layout = _layout(step, runner, seed)
        if steps is None:
            steps = _affordable_steps(runner, layout, notes)
    except _NotRun as why:
        return _record(step, seed, steps or DEFAULT_STEPS, [_not_run("streaming", str(why))], None)
    except Exception as err:  # noqa: BLE001 - an ORT failure means "not checked", recorded as such
        reason = f"ONNX Runtime cannot run the step graph on generated frames: {err}"
        return _record(step, seed, steps or DEFAULT_STEPS, [_not_run("streaming", reason)], None)
    layout.steps = steps
    if no_reference:
        results.append(_not_run("streaming", no_reference))
    else:
        results.append(_run_streaming(step, runner, original, constants or {}, context or [], layout, seed, steps))
    try:
        batch, reset, batch_one = _batch_and_reset(step, runner, layout, seed, steps)
        results += [batch, reset]
    except EquivalenceError:
        raise
    except Exception as err:  # noqa: BLE001 - recorded as not checked
        results.append(_not_run("batch", f"could not run: {err}"))
    if reference is not None:
        results.append(_reference(step, runner, layout, reference))
    return _record(step, seed, steps, results, batch_one, notes)


def _affordable_steps(runner: _Runner, layout: _Layout, notes: list[str]) -> int:
    """:data:`DEFAULT_STEPS`, or fewer when one call is slow (a big net with a large fixed batch)."""
    import time

    frames = _frames(layout, 0, layout.rows, set())
    start = time.perf_counter()
    _stream(runner, layout, frames, {})
    per_call = time.perf_counter() - start
    affordable = int(BUDGET_S / max(per_call * _CALLS_PER_STEP, 1e-9))
    if affordable >= DEFAULT_STEPS:
        return DEFAULT_STEPS
    steps = max(2, affordable)
    notes.append(f"The equivalence check ran {steps} steps per stream, not {DEFAULT_STEPS}: one call of {layout.rows} "
                 f"stream(s) takes {per_call:.2g} s. --check-steps N runs N.")
    return steps


def _not_run(check: str, reason: str) -> CheckResult:
    return CheckResult(check=check, compared="-", passed=None, reason=reason)


def _record(step: StepGraph, seed: int, steps: int, results: list, batch_one: Optional[str],
            extra_notes: Sequence[str] = ()) -> StepGraph:
    record = ChecksRecord(seed=seed, steps=steps, results=results, batch_one=batch_one)
    notes = list(step.notes) + list(extra_notes)
    if batch_one:
        notes.append(f"One stream per batch only: {batch_one}. A StreamPool over more than one slot refuses it; run "
                     "one Session (batch_size=1) per stream.")
    return dataclasses.replace(step, checks=record, notes=notes)


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
