"""``time_steps`` (``--time-steps N|dynamic``): the time axis of a fixed-T export re-shaped."""

from __future__ import annotations

import copy
from typing import Union

import onnx

from rnnrt.errors import ConfigError, ModelImportError, fmt
from rnnrt.importers.onnx.axes import _rnn_axes
from rnnrt.importers.onnx.shapes import _infer, _set_dim


def _set_time_steps(model: onnx.ModelProto, time_steps: Union[int, str], where: str, notes: list[str]) -> onnx.ModelProto:
    """Re-shapes the time axis of the inputs and outputs that carry the recurrent nodes' time dim."""
    steps: Union[int, str]
    if isinstance(time_steps, str) and time_steps != "dynamic":
        try:
            steps = int(time_steps)
        except ValueError as err:
            raise ConfigError(fmt(f"--time-steps {time_steps}", "Is neither a positive number nor 'dynamic'")) from err
    else:
        steps = "time" if time_steps == "dynamic" else int(time_steps)
    if isinstance(steps, int) and steps < 1:
        raise ConfigError(fmt(f"--time-steps {time_steps}", "Is not a positive number of time steps"))
    _, times = _rnn_axes(model)
    hit = {n: a for n, a in times.items() if a is not None}
    if not hit:
        raise ModelImportError(fmt(f"Model {where!r}", "Has no input whose axis feeds the time axis of a recurrent node",
                                   "--time-steps re-shapes the time axis of models with LSTM/GRU/RNN nodes."))
    model = copy.deepcopy(model)
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.name in hit:
            _set_dim(vi, hit[vi.name], steps)
    del model.graph.value_info[:]
    model = _infer(model)
    notes.append(f"Time axis of {sorted(hit)} set to {steps!r} (--time-steps).")
    return model
