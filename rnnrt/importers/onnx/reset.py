"""Continuation (``add_reset``, ``--add-reset``): an input ``cont`` [1, N] that zeroes a stream's state where
it is 0, added to every state pair of a step graph whatever declared it."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from rnnrt.errors import ModelImportError, fmt
from rnnrt.importers.onnx.describe import _spec
from rnnrt.importers.onnx.fold import quiet_third_party
from rnnrt.importers.onnx.shapes import _infer
from rnnrt.importers.onnx.wiring import _replace_input
from rnnrt.ir.stepgraph import Continuation, StatePair, StepGraph


def _with_reset(step: StepGraph, name: str, where: str) -> StepGraph:
    """Adds the continuation input to every state pair of ``step`` (whatever declared them)."""
    import dataclasses

    if not step.states:
        return dataclasses.replace(step, notes=step.notes + ["add_reset was ignored: the model has no recurrent state."])
    notes = list(step.notes)
    with quiet_third_party():
        graph = gs.import_onnx(step.model)
        continuation = _add_reset(graph, step.states, name, notes)
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        model = _infer(gs.export_onnx(graph, do_type_check=False))
    cont_vi = next(vi for vi in model.graph.input if vi.name == name)
    inputs = list(step.inputs) + [_spec(cont_vi, {name: continuation.batch_axis})]
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ModelImportError(fmt(f"Model {where!r}", f"The step graph is invalid ONNX: {err}")) from err
    return dataclasses.replace(step, model=model, inputs=inputs, continuation=continuation, notes=notes)


def _add_reset(graph: gs.Graph, states: list[StatePair], name: str, notes: list[str]) -> Continuation:
    """Adds ``name`` [1, N]: each state input is multiplied by it (reshaped to its batch axis)."""
    tensors = graph.tensors()
    if name in tensors:
        raise ModelImportError(fmt(f"Reset input {name!r}", "Is already a tensor of the model", "Choose another reset_name."))
    first = states[0]
    batch = first.shape[first.batch_axis]
    dtype = tensors[first.input].dtype or np.float32
    cont = gs.Variable(name, dtype=dtype, shape=[1, batch])
    graph.inputs.append(cont)
    for k, s in enumerate(states):
        var = tensors[s.input]
        consumers = list(var.outputs)
        target = [1] * len(s.shape)
        target[s.batch_axis] = -1
        mask = gs.Variable(f"{s.input}__mask", dtype=dtype)
        graph.layer(op="Reshape", inputs=[cont, gs.Constant(f"{s.input}__mask_shape", np.array(target, np.int64))], outputs=[mask])
        masked = gs.Variable(f"{s.input}__masked", dtype=var.dtype)
        graph.layer(op="Mul", inputs=[var, mask], outputs=[masked])
        for node in consumers:
            _replace_input(node, var, masked)
    notes.append(f"Added reset input {name!r} [1, N]: 0 zeroes that stream's state before this call's first frame.")
    return Continuation(input=name, batch_axis=1, time_axis=0)
