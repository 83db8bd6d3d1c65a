"""The reference check: the step graph streamed over a recorded feed (``call{k}/{name}`` .npz, the format
``rnnrt verify --feed`` reads) equals the outputs recorded there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

from rnnrt.errors import ConfigError, EquivalenceError, fmt
from rnnrt.importers.check.compare import _Tally
from rnnrt.importers.check.frames import _Layout, _stream
from rnnrt.importers.check.runner import _Runner
from rnnrt.ir.checks import CheckResult
from rnnrt.ir.stepgraph import StepGraph


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
