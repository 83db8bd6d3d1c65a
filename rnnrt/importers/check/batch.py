"""The batch and reset checks: streams with different data in one batch equal each stream alone (else the
model is one stream per batch, the op that mixes the rows named), and a stream reset in the middle equals a
fresh stream fed the same frames."""

from __future__ import annotations

from typing import Optional

from rnnrt.errors import EquivalenceError, fmt
from rnnrt.importers.check.compare import _not_run, _Tally
from rnnrt.importers.check.culprit import _batch_culprit, _label
from rnnrt.importers.check.frames import _frames, _Layout, _row, _stream
from rnnrt.importers.check.runner import _Runner
from rnnrt.ir.checks import CheckResult
from rnnrt.ir.stepgraph import StepGraph


ROW_MIXING_OPS: dict[str, str] = {
    "DynamicQuantizeLinear": "dynamic quantization computes one scale over the whole batch",
    "DynamicQuantizeLSTM": "dynamic quantization computes one scale over the whole batch",
    "DynamicQuantizeMatMul": "dynamic quantization computes one scale over the whole batch",
    "BatchNormalization": "it normalizes with statistics of the whole batch",
}
"""Ops known to mix the rows of a batch, and why (for the ``batch_one`` reason)."""


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
