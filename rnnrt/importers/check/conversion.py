"""The convert-time check's driver: :func:`check_conversion` runs the checks within a time budget and records
their results in the step graph (``checks:`` in the model YAML)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional, Sequence, Union

from rnnrt.errors import ConfigError, EquivalenceError, fmt
from rnnrt.importers.check.batch import _batch_and_reset
from rnnrt.importers.check.compare import _not_run
from rnnrt.importers.check.frames import _frames, _Layout, _layout, _stream
from rnnrt.importers.check.reference import _reference
from rnnrt.importers.check.runner import _NotRun, _Runner
from rnnrt.importers.check.streaming import _PathOrModel, _run_streaming
from rnnrt.ir.checks import CheckResult, ChecksRecord
from rnnrt.ir.stepgraph import StepGraph


DEFAULT_STEPS = 8
"""Calls per stream: two sequences of ``steps // 2`` and the rest, a reset between them."""

MAX_EXTERNAL_BYTES = 128 << 20
"""Weights kept outside the model (big Caffe nets) up to which the check runs (ONNX Runtime copies them)."""

BUDGET_S = 10.0
"""Seconds the check may take by default; a slower model runs fewer steps (see ``check_conversion``)."""

_CALLS_PER_STEP = 7  # model calls per step over every run of the check (streamed, batched, alone, fresh ...)


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


def _record(step: StepGraph, seed: int, steps: int, results: list, batch_one: Optional[str],
            extra_notes: Sequence[str] = ()) -> StepGraph:
    record = ChecksRecord(seed=seed, steps=steps, results=results, batch_one=batch_one)
    notes = list(step.notes) + list(extra_notes)
    if batch_one:
        notes.append(f"One stream per batch only: {batch_one}. A StreamPool over more than one slot refuses it; run "
                     "one Session (batch_size=1) per stream.")
    return dataclasses.replace(step, checks=record, notes=notes)
