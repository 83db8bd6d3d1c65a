"""Constant inputs and folding: ``--set NAME=VALUE`` binds an input, then whatever became constant is folded.

Folding inlines ``If`` nodes whose condition is now known (Silero's ``If`` on ``sr``), so the step graph
that TensorRT sees keeps no ``If`` it does not need. ``If`` nodes whose condition depends only on shapes
(torch's export of ``x.squeeze(-1)`` on a dynamic dim: ``If(dim == 1, Squeeze, Identity)``) are
resolved when exactly one branch gives a graph that passes ONNX's strict shape inference (the other
branch feeds a tensor of the wrong rank to a later op, so the model could never run through it).

onnx-graphsurgeon prints its warnings with ``print``; :func:`quiet_third_party` routes them (and ONNX
Runtime's own warnings during folding) to the ``rnnrt.onnx.graphsurgeon`` logger instead.

::

    model = bind_constants(model, {"sr": "16000"})
    model, notes = fold(model)
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import yaml
from onnx import numpy_helper

from rnnrt.errors import ConfigError, ModelImportError, fmt
from rnnrt.ir.bindings import onnx_tensor_type

G_LOGGER = logging.getLogger("rnnrt.onnx")
GS_LOGGER = logging.getLogger("rnnrt.onnx.graphsurgeon")

__all__ = ["bind_constants", "const_value", "count_ifs", "fold", "parse_value", "quiet_third_party"]

_ONNX_TO_NP = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16,
               11: np.float64}
_SHAPE_ONLY = {"Shape", "Size"}


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Routes onnx-graphsurgeon's printed messages and ONNX Runtime's warnings to ``logging``.

    graphsurgeon's warnings go to ``rnnrt.onnx.graphsurgeon`` at DEBUG (they describe folding attempts
    that failed harmlessly: hundreds of lines on some real exports), its errors at WARNING.
    """
    logger = gs.logger.G_LOGGER
    levels = {logger.ULTRA_VERBOSE: logging.DEBUG, logger.VERBOSE: logging.DEBUG, logger.DEBUG: logging.DEBUG,
              logger.INFO: logging.DEBUG, logger.WARNING: logging.DEBUG, logger.ERROR: logging.WARNING,
              logger.CRITICAL: logging.ERROR}
    had = "log" in vars(logger)
    old = vars(logger).get("log")

    def log(message: Any, severity: int, mode: Any = None, stack_depth: int = 2) -> None:
        if not GS_LOGGER.isEnabledFor(levels.get(severity, logging.DEBUG)):
            return
        text = message() if callable(message) else str(message)
        GS_LOGGER.log(levels.get(severity, logging.DEBUG), "%s", text)

    logger.log = log  # type: ignore[method-assign]
    ort = None
    try:
        import onnxruntime as ort  # noqa: F811

        ort.set_default_logger_severity(3)
    except Exception:  # pragma: no cover - onnxruntime is a dependency
        ort = None
    try:
        yield
    finally:
        if had:
            logger.log = old  # type: ignore[method-assign]
        else:
            del logger.log
        if ort is not None:
            ort.set_default_logger_severity(2)


def parse_value(text: Any) -> Any:
    """A ``--set`` value: YAML syntax (``16000``, ``0.5``, ``[1, 2]``, ``true``)."""
    if not isinstance(text, str):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(fmt(f"Value {text!r}", f"Is not a number, list or boolean: {err}",
                              "Write --set NAME=16000, --set NAME=[1, 2] or --set NAME=true.")) from err


def bind_constants(model: onnx.ModelProto, values: Mapping[str, Any]) -> onnx.ModelProto:
    """Replaces graph inputs by constants (initializers of the input's dtype); subgraphs see them too.

    Args:
        model (onnx.ModelProto): The model; not modified.
        values (Mapping[str, Any]): Input name -> value (a number, a nested list, or a string in YAML syntax).

    Returns:
        onnx.ModelProto: The model with those inputs bound.

    Raises:
        ConfigError: An unknown input, a value that does not fit the input's dtype or shape.
    """
    if not values:
        return model
    model = copy.deepcopy(model)
    weights = {t.name for t in model.graph.initializer}
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in weights}
    for name, raw in values.items():
        if name not in inputs:
            raise ConfigError(fmt(f"--set {name}", "Is not an input of the model", f"Inputs: {sorted(inputs)}."))
        vi = inputs[name]
        t = vi.type.tensor_type
        np_dtype = _ONNX_TO_NP.get(t.elem_type)
        if np_dtype is None:
            raise ConfigError(fmt(f"--set {name}", f"The input has element type {t.elem_type}, which cannot be set"))
        value = parse_value(raw)
        try:
            arr = np.asarray(value)
            if np.issubdtype(np_dtype, np.integer) and arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
                raise ValueError("not an integer")
            arr = arr.astype(np_dtype)
        except (TypeError, ValueError) as err:
            raise ConfigError(fmt(f"--set {name}={raw}", f"Cannot be made a {np.dtype(np_dtype).name} value: {err}")) from err
        if t.HasField("shape"):
            dims = [d if isinstance(d, int) else None for d in onnx_tensor_type(vi)[1]]
            if arr.ndim != len(dims) and not (arr.ndim == 0 and all(d == 1 for d in dims)):
                raise ConfigError(fmt(f"--set {name}={raw}", f"Has shape {list(arr.shape)} but the input has rank "
                                      f"{len(dims)} (shape {[d if d is not None else '?' for d in dims]})",
                                      "Give a value of the input's shape."))
            if arr.ndim == 0 and dims:
                arr = arr.reshape([1] * len(dims))
            bad = [a for a, d in enumerate(dims) if d is not None and d != arr.shape[a]]
            if bad:
                raise ConfigError(fmt(f"--set {name}={raw}", f"Has shape {list(arr.shape)} but the input is "
                                      f"{[d if d is not None else '?' for d in dims]}"))
        model.graph.input.remove(vi)
        model.graph.initializer.append(numpy_helper.from_array(arr, name))
    return model


def _infer(model: onnx.ModelProto, strict: bool = False) -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(model, strict_mode=strict, data_prop=True)


def _try_infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return _infer(model)
    except Exception as err:
        G_LOGGER.debug("Shape inference failed: %s", err)
        return model


def count_ifs(graph: gs.Graph) -> int:
    """``If`` nodes in the graph and its subgraphs."""
    n = 0
    for node in graph.nodes:
        n += node.op == "If"
        for value in node.attrs.values():
            for sub in value if isinstance(value, list) else [value]:
                if isinstance(sub, gs.Graph):
                    n += count_ifs(sub)
    return n


def _inline_constant_ifs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Replaces every top-level ``If`` whose condition is an initializer by the nodes of the taken branch."""
    consts = {t.name: t for t in model.graph.initializer}
    nodes = list(model.graph.node)
    if not any(n.op_type == "If" and n.input[0] in consts for n in nodes):
        return model, 0
    model = copy.deepcopy(model)
    consts = {t.name: t for t in model.graph.initializer}
    new_nodes: list[onnx.NodeProto] = []
    inlined = 0
    for node in model.graph.node:
        if node.op_type != "If" or node.input[0] not in consts:
            new_nodes.append(node)
            continue
        cond = bool(numpy_helper.to_array(consts[node.input[0]]).reshape(-1)[0])
        branch = next(a.g for a in node.attribute if a.name == ("then_branch" if cond else "else_branch"))
        model.graph.initializer.extend(branch.initializer)
        new_nodes.extend(branch.node)
        model.graph.value_info.extend(branch.value_info)
        for inner, outer in zip(branch.output, node.output):
            if outer:
                new_nodes.append(onnx.helper.make_node("Identity", [inner.name], [outer],
                                                       name=f"{node.name or 'If'}__{outer}__inlined"))
        inlined += 1
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return model, inlined


def _fold_ranks(graph: gs.Graph) -> None:
    """``Size(Shape(x))`` is the rank of ``x``: a constant once the rank is known (graphsurgeon skips it)."""
    for node in graph.nodes:
        if node.op != "Size" or not node.inputs or len(node.inputs[0].inputs) != 1:
            continue
        shape_node = node.inputs[0].inputs[0]
        x = shape_node.inputs[0] if shape_node.op == "Shape" and shape_node.inputs else None
        if x is None or x.shape is None or shape_node.attrs.get("start") is not None or shape_node.attrs.get("end") is not None:
            continue
        out = node.outputs[0]
        const = gs.Constant(f"{out.name}__rank", np.array(len(x.shape), np.int64))
        for consumer in list(out.outputs):
            for k, t in enumerate(consumer.inputs):
                if t is out:
                    consumer.inputs[k] = const
        for k, o in enumerate(graph.outputs):
            if o is out:
                graph.outputs[k] = gs.Variable(out.name, dtype=out.dtype, shape=out.shape)


def _fold_once(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = gs.import_onnx(_try_infer(model))
    _fold_ranks(graph)
    graph.fold_constants(flatten_subgraphs=False, error_ok=True).cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    out, _ = _inline_constant_ifs(out)
    return _try_infer(out)


def _signature(model: onnx.ModelProto) -> tuple:
    return (len(model.graph.node), sum(len(n.attribute) for n in model.graph.node), len(model.graph.initializer))


def const_value(t: gs.Tensor) -> Optional[np.ndarray]:
    """The value of a constant tensor (an initializer or a Constant node's output); None otherwise."""
    if isinstance(t, gs.Constant):
        return np.asarray(t.values)
    if len(t.inputs) == 1 and t.inputs[0].op == "Constant" and "value" in t.inputs[0].attrs:
        return np.asarray(t.inputs[0].attrs["value"].values)
    return None


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``name_1``, ``name_2`` ... the first not in ``used``; adds it to ``used``."""
    out, k = name, 1
    while out in used:
        out, k = f"{name}_{k}", k + 1
    used.add(out)
    return out


def value_sources(t: gs.Tensor) -> set[str]:
    """Names of the producer-less variables (graph inputs, outer-scope names) whose values, not just
    shapes, reach ``t``: dependencies through Shape/Size only are not counted."""
    found: set[str] = set()
    seen: set[int] = set()
    stack = [t]
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, gs.Variable) and not cur.inputs:
            found.add(cur.name)
        for node in cur.inputs:
            if node.op in _SHAPE_ONLY:
                continue
            stack.extend(i for i in node.inputs if i.name)
    return found


def _strict_ok(model: onnx.ModelProto) -> bool:
    try:
        _infer(model, strict=True)
        onnx.checker.check_model(model)
        return True
    except Exception as err:
        G_LOGGER.debug("Candidate branch rejected by strict shape inference: %s", err)
        return False


def _resolve_shape_ifs(model: onnx.ModelProto, notes: list[str]) -> Optional[onnx.ModelProto]:
    """Resolves one top-level ``If`` whose condition depends on shapes only; None if none can be."""
    graph = gs.import_onnx(model)
    graph_inputs = {v.name for v in graph.inputs}
    for index, node in enumerate(graph.nodes):
        if node.op != "If" or value_sources(node.inputs[0]) & graph_inputs:
            continue
        viable = []
        for branch in (True, False):
            g = gs.import_onnx(model)
            target = g.nodes[index]
            target.inputs[0] = gs.Constant(f"{target.name}__cond_{branch}", np.array(branch))
            candidate = gs.export_onnx(g, do_type_check=False)
            for _ in range(8):
                sig = _signature(candidate)
                candidate = _fold_once(candidate)
                if _signature(candidate) == sig:
                    break
            if _strict_ok(candidate):
                viable.append((branch, candidate))
        if len(viable) == 1:
            branch, candidate = viable[0]
            notes.append(f"If node {node.name!r} tests shapes only; its {'then' if branch else 'else'} branch is "
                         "the only one the rest of the graph accepts, so it was inlined.")
            return candidate
    return None


def fold(model: onnx.ModelProto, where: str = "<model>") -> tuple[onnx.ModelProto, list[str]]:
    """Folds constants and inlines ``If`` nodes whose condition is known (see the module doc).

    Args:
        model (onnx.ModelProto): The model, constants already bound.
        where (str): The model's name for messages.

    Returns:
        tuple[onnx.ModelProto, list[str]]: The folded model and notes on what was inlined.
    """
    notes: list[str] = []
    with quiet_third_party():
        before = count_ifs(gs.import_onnx(model))
        try:
            for _ in range(8):
                sig = _signature(model)
                model = _fold_once(model)
                if _signature(model) == sig:
                    resolved = _resolve_shape_ifs(model, notes)
                    if resolved is None:
                        break
                    model = _fold_once(resolved)
        except Exception as err:
            raise ModelImportError(fmt(f"Model {where!r}", f"Constant folding failed: {err}")) from err
        after = count_ifs(gs.import_onnx(model))
    if before and after < before:
        notes.append(f"Folded {before - after} of {before} If node(s) whose condition became known"
                     + (f"; {after} remain" if after else "") + ".")
    return model, notes
