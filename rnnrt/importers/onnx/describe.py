"""The step graph's description of a converted model: each binding's batch axis (symbolic, else probed),
its dynamic dims named, and the notes on a fixed batch or inputs shared by every stream."""

from __future__ import annotations

import copy
import os
from typing import Any, Mapping, Optional

import onnx

from rnnrt.errors import ModelImportError, fmt
from rnnrt.importers.onnx.axes import _batch_axes, _probe_axes
from rnnrt.importers.onnx.shapes import _dims_of, _set_dim
from rnnrt.ir.bindings import onnx_tensor_type
from rnnrt.ir.stepgraph import Continuation, StatePair, StepGraph, TensorSpec


def _describe(model: onnx.ModelProto, states: list[StatePair], continuation: Optional[Continuation], where: str,
              notes: list[str], known_axes: Optional[Mapping[str, Optional[int]]] = None) -> StepGraph:
    """The step graph's bindings: batch axes (symbolic, else numeric), dims named, config-valid shapes."""
    weights = {t.name for t in model.graph.initializer}
    if states and all(vi.name in {s.output for s in states} for vi in model.graph.output):
        model, states = _keep_state_outputs(model, states, notes)
    state_in = {s.input for s in states}
    state_out = {s.output for s in states}
    axes = dict(known_axes) if known_axes else _batch_axes(model)
    user_in = [vi.name for vi in model.graph.input if vi.name not in weights and vi.name not in state_in]
    if not known_axes and states and any(axes.get(n) is None for n in user_in + [vi.name for vi in model.graph.output if vi.name not in state_out]):
        probed = _probe_axes(model, states)
        if probed is not None:
            for name, axis in list(probed[0].items()) + list(probed[1].items()):
                if axes.get(name) is None:
                    axes[name] = axis
    for s in states:
        axes[s.input] = axes[s.output] = s.batch_axis
    if continuation is not None:
        axes[continuation.input] = continuation.batch_axis
    model = _name_dims(model, axes, states)
    inputs = [_spec(vi, axes) for vi in model.graph.input if vi.name not in weights and vi.name not in state_in]
    outputs = [_spec(vi, axes) for vi in model.graph.output if vi.name not in state_out]
    unbatched = [t.name for t in inputs if t.batch_axis is None and states]
    if states and all(isinstance(s.shape[s.batch_axis], int) for s in states):
        notes.append(f"The batch is fixed at {states[0].shape[states[0].batch_axis]} by the export: a Session runs that "
                     "many streams. Convert with --batch dynamic to pool streams (per-stream inputs get the batch axis).")
    elif unbatched:
        notes.append(f"Input(s) {unbatched} have no batch axis: they are the same for every stream. A Session feeds "
                     "them as they are, and a StreamPool needs their value once (StreamPool(session, shared={NAME: "
                     "VALUE})); a value that never changes (a rate, a flag) can instead be bound here with --set NAME=VALUE.")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ModelImportError(fmt(f"Model {where!r}", f"The step graph is invalid ONNX: {err}")) from err
    source: dict[str, Any] = {"format": "onnx"}
    if where != "<in-memory model>":
        source["model"] = os.path.abspath(where)
    return StepGraph(model=model, inputs=inputs, outputs=outputs, states=states, continuation=continuation,
                     source=source, notes=notes)


def _keep_state_outputs(model: onnx.ModelProto, states: list[StatePair], notes: list[str]) -> tuple[onnx.ModelProto, list[StatePair]]:
    """Every model output is a state output: they stay user outputs and the states get copies ``<out>.state``."""
    model = copy.deepcopy(model)
    names = {vi.name for vi in model.graph.input} | {vi.name for vi in model.graph.output}
    names |= {o for n in model.graph.node for o in n.output}
    new_states = []
    for s in states:
        vi = next(v for v in model.graph.output if v.name == s.output)
        copy_name = f"{s.output}.state"
        while copy_name in names:
            copy_name += "_"
        model.graph.node.append(onnx.helper.make_node("Identity", [s.output], [copy_name], name=f"{copy_name}__copy"))
        out_vi = copy.deepcopy(vi)
        out_vi.name = copy_name
        model.graph.output.append(out_vi)
        new_states.append(s.model_copy(update={"output": copy_name}))
    notes.append(f"Every model output is a state output; {[s.output for s in states]} stay in step() results and "
                 f"the state is carried through copies {[s.output for s in new_states]}.")
    return model, new_states


def _name_dims(model: onnx.ModelProto, axes: Mapping[str, Optional[int]], states: list[StatePair]) -> onnx.ModelProto:
    """Names every dynamic dim of the bindings: state dims as the pair's shape, the batch axis of the
    other bindings as the states' batch dim, other unnamed dims ``<tensor>_dim<axis>``."""
    model = copy.deepcopy(model)
    by_in = {s.input: s for s in states}
    by_out = {s.output: s for s in states}
    batch_names = {s.shape[s.batch_axis] for s in states if isinstance(s.shape[s.batch_axis], str)}
    batch_name = "batch" if "batch" in batch_names or not batch_names else sorted(batch_names)[0]
    weights = {t.name for t in model.graph.initializer}
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.name in weights or not vi.type.tensor_type.HasField("shape"):
            continue
        pair = by_in.get(vi.name) or by_out.get(vi.name)
        dims = _dims_of(vi)
        for a, d in enumerate(dims):
            if pair is not None and len(pair.shape) == len(dims):
                want = pair.shape[a]
                if isinstance(want, int) or not isinstance(d, int):
                    _set_dim(vi, a, want)
            elif isinstance(d, int):
                continue
            elif axes.get(vi.name) == a and batch_names:
                _set_dim(vi, a, batch_name)
            elif not d:
                _set_dim(vi, a, f"{vi.name}_dim{a}")
    return model


def _spec(vi: onnx.ValueInfoProto, axes: Mapping[str, Optional[int]]) -> TensorSpec:
    dtype, shape = onnx_tensor_type(vi)
    if dtype is None:
        raise ModelImportError(fmt(f"Tensor {vi.name!r}", f"Has element type {vi.type.tensor_type.elem_type}, which rnnrt cannot bind"))
    if shape is None:
        raise ModelImportError(fmt(f"Tensor {vi.name!r}", "Has no known shape", "Export the model with shapes for every graph input and output."))
    return TensorSpec(vi.name, dtype, shape, axes.get(vi.name))
