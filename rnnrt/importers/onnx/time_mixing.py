"""The time-mixing check: streaming one time step per call equals the whole-sequence run, else a warning
(``strict``: an error) that an op after the recurrence mixes time steps."""

from __future__ import annotations

import logging

import numpy as np

from rnnrt.errors import ModelImportError, fmt
from rnnrt.importers.onnx.axes import _prober, _rnn_axes
from rnnrt.importers.onnx.rnn_ops import RECURRENT_OPS
from rnnrt.importers.onnx.shapes import _dims_of
from rnnrt.ir.stepgraph import StepGraph

G_LOGGER = logging.getLogger("rnnrt.onnx")


def _check_time_mixing(step: StepGraph, strict: bool, where: str) -> None:
    """Warns (``strict``: raises) when streaming one step per call differs from the whole-sequence run."""
    if not step.states or not any(n.op_type in RECURRENT_OPS for n in step.model.graph.node):
        return
    _, times = _rnn_axes(step.model)
    cont = step.continuation.input if step.continuation is not None else None
    timed = {t.name: times[t.name] for t in step.inputs if times.get(t.name) is not None and t.name != cont}
    if not timed:
        return
    dims = {vi.name: _dims_of(vi) for vi in step.model.graph.input}
    if any(isinstance(dims[n][a], int) for n, a in timed.items()):
        return  # a fixed time axis: the model is fed exactly that many steps per call
    prober = _prober(step.model, {})
    if prober is None:
        return
    steps = 4
    rng = np.random.default_rng(5)
    whole: dict[str, np.ndarray] = {}
    for t in step.inputs:
        shape = [steps if timed.get(t.name) == a else (1 if t.batch_axis == a else (d if isinstance(d, int) else 2))
                 for a, d in enumerate(dims[t.name])]
        value = np.ones(shape) if t.name == cont else rng.standard_normal(shape)
        whole[t.name] = value.astype(t.dtype)
    state = {s.input: np.zeros([1 if a == s.batch_axis else d for a, d in enumerate(s.shape)], s.dtype) for s in step.states}
    full = prober.run({**whole, **state})
    if full is None:
        return
    parts: list[dict] = []
    cur = dict(state)
    for k in range(steps):
        feeds = {n: (np.take(v, [k], axis=timed[n]) if n in timed else v) for n, v in whole.items()}
        out = prober.run({**feeds, **cur})
        if out is None:
            return
        parts.append(out)
        cur = {s.input: out[s.output] for s in step.states}
    worst, worst_name = 0.0, None
    for t in step.outputs:
        a, one = full[t.name], parts[0][t.name]
        axis = next((k for k in range(a.ndim) if a.ndim == one.ndim and a.shape[k] == steps and one.shape[k] == 1), None)
        if axis is None or not np.issubdtype(a.dtype, np.floating):
            continue
        streamed = np.concatenate([p[t.name] for p in parts], axis=axis)
        if streamed.shape == a.shape and a.size:
            err = float(np.max(np.abs(streamed - a)))
            if err > worst:
                worst, worst_name = err, t.name
    if worst > 1e-4:
        msg = fmt(f"Output {worst_name!r} of {where!r}", f"Streamed one time step per call, it differs from the "
                  f"whole-sequence run by up to {worst:.3g}: an op after the recurrence mixes time steps (e.g. a Conv "
                  "along time)", "Streaming cannot equal the whole-sequence run with this head; feed whole sequences "
                  "per call, or change the head. --strict makes this an error.")
        if strict:
            raise ModelImportError(msg)
        G_LOGGER.warning("%s", msg)
        step.notes.append("Warning: " + msg.replace("\n", " "))
