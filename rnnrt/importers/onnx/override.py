"""Explicit corrections of what the ONNX importer detected: state pairs, batch axes, continuation.

An override is a small YAML file (or mapping) checked against the step graph's ONNX model::

    state:                                   # replaces every detected pair
      - {input: h_in, output: h_out, batch_axis: 0}
    inputs:
      - {name: x, batch_axis: 0}             # fixes one binding's batch axis (null: none)
    outputs:
      - {name: y, batch_axis: 0}
    continuation: {input: reset, batch_axis: 0, time_axis: null}   # or null to drop it; fill: auto|never

Only the description changes; the graph is left as it is. The entries use the binding classes of
:mod:`rnnrt.ir.bindings` (``continuation`` is a :class:`~rnnrt.ir.bindings.Continuation`); the file is
read with :func:`rnnrt.ir.files.read_yaml`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from rnnrt.errors import ConfigError, fmt
from rnnrt.ir.bindings import Axis, Continuation, StatePair, TensorName, TensorSpec, format_validation_errors, graph_bindings
from rnnrt.ir.files import read_yaml
from rnnrt.ir.stepgraph import StepGraph

__all__ = ["OverrideConfig", "apply_override", "load_override"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class StateOverride(BaseModel):
    """One recurrent state pair declared by hand."""

    model_config = _STRICT

    input: TensorName = Field(description="Graph input that receives the previous state.")
    output: TensorName = Field(description="Graph output that carries the next state.")
    batch_axis: Optional[Axis] = Field(default=None, description="Slot axis; null: the detected one, else 0.")


class BindingOverride(BaseModel):
    """The batch axis of one user input or output."""

    model_config = _STRICT

    name: TensorName = Field(description="Graph input or output name.")
    batch_axis: Optional[Axis] = Field(description="Axis that indexes streams; null if none.")


class OverrideConfig(BaseModel):
    """Corrections applied after detection; every key is optional."""

    model_config = _STRICT

    state: Optional[list[StateOverride]] = Field(default=None, description="Replaces every detected state pair.")
    inputs: list[BindingOverride] = Field(default_factory=list, description="Batch axes of user inputs.")
    outputs: list[BindingOverride] = Field(default_factory=list, description="Batch axes of user outputs.")
    continuation: Optional[Continuation] = Field(
        default=None, description="Replaces the detected continuation input; null removes it."
    )


def load_override(source: Union[str, os.PathLike, Mapping[str, Any]]) -> tuple[OverrideConfig, set[str], str]:
    """Reads and validates an override; returns it, the keys it set, and a label for messages."""
    if isinstance(source, Mapping):
        data, label = dict(source), "Override"
    elif not isinstance(source, (str, os.PathLike)):
        raise ConfigError(fmt("Override", f"Is a {type(source).__name__}: {source!r:.80}",
                              "Expected a YAML file path or a mapping with keys state, inputs, outputs, continuation."))
    else:
        path = Path(source)
        label = f"Override {str(path)!r}"
        data = read_yaml(path, "Override")
        data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(fmt(label, f"Top level is a {type(data).__name__}", "Expected a mapping with keys state, inputs, outputs, continuation."))
    try:
        cfg = OverrideConfig.model_validate(data)
    except pydantic.ValidationError as err:
        raise ConfigError(fmt(label, f"Invalid override: {format_validation_errors(err)}", "Keys: state, inputs, outputs, continuation (see docs/onnx.md).")) from err
    return cfg, set(data), label


def _graph_bindings(model: Any, role: str) -> dict[str, tuple[str, list]]:
    # Element types rnnrt does not bind are reported as float32 here; the config check names them later.
    return {name: (dtype or "float32", shape or []) for name, (dtype, shape) in graph_bindings(model, role).items()}


def apply_override(step: StepGraph, source: Union[str, os.PathLike, Mapping[str, Any]]) -> StepGraph:
    """Applies an override (see the module doc) to a step graph's description.

    Args:
        step (StepGraph): What the importer detected.
        source (str | os.PathLike | Mapping): The override YAML file, or its content as a mapping.

    Returns:
        StepGraph: A new step graph with the same ONNX model and the corrected bindings.

    Raises:
        ConfigError: The override is malformed or names a tensor, axis or pairing the model does not have.
    """
    cfg, keys, label = load_override(source)
    g_in = _graph_bindings(step.model, "input")
    g_out = _graph_bindings(step.model, "output")
    known_axes = {t.name: t.batch_axis for t in step.inputs + step.outputs}
    known_axes.update({s.input: s.batch_axis for s in step.states})
    known_axes.update({s.output: s.batch_axis for s in step.states})

    states = list(step.states)
    if cfg.state is not None:
        states = []
        for k, s in enumerate(cfg.state):
            where = f"{label}: state[{k}]"
            if s.input not in g_in:
                raise ConfigError(fmt(f"{where} input {s.input!r}", "Is not a graph input of the model", f"Graph inputs: {sorted(g_in)}."))
            if s.output not in g_out:
                raise ConfigError(fmt(f"{where} output {s.output!r}", "Is not a graph output of the model", f"Graph outputs: {sorted(g_out)}."))
            (dt_in, sh_in), (dt_out, sh_out) = g_in[s.input], g_out[s.output]
            if dt_in != dt_out or len(sh_in) != len(sh_out) or any(
                a != b for a, b in zip(sh_in, sh_out) if isinstance(a, int) and isinstance(b, int)
            ):
                raise ConfigError(fmt(where, f"Input {s.input!r} is {dt_in}{sh_in} but output {s.output!r} is {dt_out}{sh_out}",
                                      "A state pair carries one tensor: same dtype and shape."))
            axis = s.batch_axis if s.batch_axis is not None else (known_axes.get(s.input) or 0)
            if axis >= len(sh_in):
                raise ConfigError(fmt(where, f"batch_axis {axis} is out of range for shape {sh_in}"))
            dynamic = [a for a, d in enumerate(sh_in) if isinstance(d, str) and a != axis]
            if dynamic:
                hint = (f"Only the batch dim of a state may be dynamic. If dim {dynamic[0]} is the stream (batch) axis, "
                        f"add the missing field: {{input: {s.input}, output: {s.output}, batch_axis: {dynamic[0]}}}"
                        if s.batch_axis is None and len(dynamic) == 1 else
                        "Only the batch dim of a state may be dynamic; re-export with fixed state dims.")
                raise ConfigError(fmt(where, f"Dim {dynamic[0]} of {s.input!r} {sh_in} is dynamic and batch_axis is {axis}",
                                      hint))
            states.append(StatePair(s.input, s.output, tuple(sh_in), dt_in, axis))
        used = [n for p in states for n in (p.input, p.output)]
        dupes = sorted({n for n in used if used.count(n) > 1})
        if dupes:
            raise ConfigError(fmt(f"{label}: state", f"Names {dupes[0]!r} in more than one pair", "Each tensor belongs to one pair."))

    batch_names = {p.shape[p.batch_axis] for p in states if isinstance(p.shape[p.batch_axis], str)}
    s_in = {p.input for p in states}
    s_out = {p.output for p in states}
    fixes_in = {b.name: b.batch_axis for b in cfg.inputs}
    fixes_out = {b.name: b.batch_axis for b in cfg.outputs}

    def specs(bindings: dict, skip: set, fixes: dict, role: str) -> list[TensorSpec]:
        for name in fixes:
            if name not in bindings or name in skip:
                raise ConfigError(fmt(f"{label}: {role}s {name!r}", f"Is not a user {role} of the model",
                                      f"User {role}s: {sorted(set(bindings) - skip)}."))
        out = []
        for name, (dtype, shape) in bindings.items():
            if name in skip:
                continue
            axis = fixes[name] if name in fixes else known_axes.get(name)
            if axis is None and name not in fixes:
                # Completed from the state: the axis that carries the states' batch dim name.
                shared = [a for a, d in enumerate(shape) if isinstance(d, str) and d in batch_names]
                axis = shared[0] if shared else None
            if axis is not None and axis >= len(shape):
                raise ConfigError(fmt(f"{label}: {role}s {name!r}", f"batch_axis {axis} is out of range for shape {shape}"))
            out.append(TensorSpec(name, dtype, tuple(shape), axis))
        return out

    inputs = specs(g_in, s_in, fixes_in, "input")
    outputs = specs(g_out, s_out, fixes_out, "output")

    continuation = step.continuation
    if "continuation" in keys:
        continuation = None
        if cfg.continuation is not None:
            c = cfg.continuation
            by_name = {t.name: t for t in inputs}
            if c.input not in by_name:
                raise ConfigError(fmt(f"{label}: continuation input {c.input!r}", "Is not a user input of the model",
                                      f"User inputs: {sorted(by_name)}."))
            rank = len(by_name[c.input].shape)
            for key, axis in (("batch_axis", c.batch_axis), ("time_axis", c.time_axis)):
                if axis is not None and axis >= rank:
                    raise ConfigError(fmt(f"{label}: continuation {key}", f"{axis} is out of range for shape {list(by_name[c.input].shape)}"))
            continuation = c
    elif continuation is not None and continuation.input not in {t.name for t in inputs}:
        continuation = None

    notes = list(step.notes) + [f"{label} applied ({', '.join(sorted(keys)) or 'nothing'})."]
    return dataclasses.replace(step, inputs=inputs, outputs=outputs, states=states, continuation=continuation, notes=notes)
