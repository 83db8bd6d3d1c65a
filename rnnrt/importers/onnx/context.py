"""Input context as state: the last K samples of an input carried to the next call by graph surgery.

Silero VAD's wrapper prepends the last 64 samples of the previous chunk to each new 512-sample chunk;
streaming convolution front-ends need the same. ``--context input:64`` rewrites the graph so that

* the user feeds only the new samples: input ``input`` becomes ``[..., chunk]``;
* a new state input ``input.context`` ``[..., 64]`` (zeros at the start and after a reset) is
  concatenated in front of them along the last axis, and what the model saw as ``input`` is that
  concatenation;
* the new state output ``input.context_next`` is the last 64 samples of the concatenation.

When the input's first axis is a dynamic frame axis and it has no batch axis (Silero's sequence model:
``input [frames, 576]``), each row is a chunk: row t gets the last K samples of row t-1, row 0 those of
the previous call.

``--context INPUT:K:AXIS`` carries K entries along another axis: the time axis of a spectrogram
(DeepFilterNet3's ``feat_erb [1, 1, S, 32]``: ``--context feat_erb:2:2``). Where the input feeds a causal
window on that axis (a Pad of K zeros in front and a Conv of kernel K+1, or a Conv padded in front),
the padding is what the carried frames replace: it is removed, and a zero context at the start equals
it. :func:`find_window` reads such windows; convert inserts their context by itself on a known time axis,
and refuses a window that looks ahead.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import onnx_graphsurgeon as gs

from rnnrt.errors import ConfigError, UnsupportedOpError, fmt
from rnnrt.importers.onnx.fold import const_value, unique_name
from rnnrt.ir.stepgraph import StatePair

__all__ = ["Window", "add_context", "find_window", "parse_context"]

_INT_MAX = np.iinfo(np.int64).max


def parse_context(spec: Any) -> tuple[str, int, Optional[int]]:
    """``"input:64"`` -> ``("input", 64, None)`` (the last axis); ``"feat_erb:2:2"`` -> ``("feat_erb", 2, 2)``;
    or a mapping ``{"input": ..., "samples": ..., "axis": ...}``."""
    axis: Any = None
    if isinstance(spec, dict):
        name, k, axis = spec.get("input"), spec.get("samples"), spec.get("axis")
    else:
        text = str(spec)
        head, _, tail = text.rpartition(":")
        name, _, mid = head.rpartition(":")
        if name and _is_int(mid) and _is_int(tail):
            k, axis = mid, tail
        else:
            name, k = head, tail
    try:
        k = int(k)
        axis = None if axis is None else int(axis)
    except (TypeError, ValueError):
        k = -1
    if not name or k <= 0:
        raise ConfigError(fmt(f"--context {spec!r}", "Is not INPUT:K or INPUT:K:AXIS with K a positive number of samples",
                              "Example: --context input:64 carries the last 64 samples of 'input' (its last axis) to "
                              "the next call; --context feat:2:2 the last 2 entries along axis 2."))
    return str(name), k, axis


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


class Window:
    """A causal window along ``axis`` of input ``name``: ``k`` past entries, the padding that stands for them."""

    def __init__(self, name: str, axis: int, k: int, pads: list[tuple[gs.Node, int]], label: str) -> None:
        self.name = name
        self.axis = axis
        self.k = k
        self.pads = pads  # (Pad or Conv node, spatial position of the axis in its pads) to zero in front
        self.label = label

    def remove_padding(self, graph: gs.Graph) -> None:
        for node, pos in self.pads:
            if node.op == "Pad":
                values = np.array(_pad_values(graph, node), np.int64)
                values[pos] = 0
                node.inputs[1] = gs.Constant(f"{node.name or node.outputs[0].name}__pads_streamed", values)
            else:
                pads = list(node.attrs["pads"])
                pads[pos] = 0
                node.attrs["pads"] = pads


def _pad_values(graph: gs.Graph, node: gs.Node) -> Optional[list[int]]:
    """The ``pads`` of a Pad node (opset >= 11: its second input, folded from constants)."""
    if "pads" in node.attrs:
        return list(node.attrs["pads"])
    if len(node.inputs) < 2:
        return None
    src = node.inputs[1]
    if isinstance(src, gs.Constant):
        return [int(v) for v in np.asarray(src.values).reshape(-1)]
    g = graph.copy()
    out = g.tensors()[node.outputs[0].name]
    g.fold_constants(error_ok=True)
    node2 = out.inputs[0] if out.inputs else None
    if node2 is None or not isinstance(node2.inputs[1], gs.Constant):
        return None
    return [int(v) for v in np.asarray(node2.inputs[1].values).reshape(-1)]


def _label(node: gs.Node) -> str:
    return f"{node.op} node {node.name!r}" if node.name else f"{node.op} node (outputs {[t.name for t in node.outputs]})"


def find_window(graph: gs.Graph, name: str, axis: int) -> Optional[Window]:
    """The causal window input ``name`` feeds along ``axis``: a chain ``[Cast/Identity] [Pad] Conv`` that
    is its only consumer. None when there is none (or the chain is not one of these).

    Raises:
        UnsupportedOpError: The window looks ahead (padding behind the frames, or SAME padding), strides
            along the axis, or is padded in front by other than kernel-1 frames: streaming cannot equal
            the whole-sequence run.
    """
    x = next((v for v in graph.inputs if v.name == name), None)
    if x is None or x.shape is None:
        return None
    rank = len(x.shape)
    axis = axis % rank
    cur, front, back, pads, last = x, 0, 0, [], None
    while len(cur.outputs) == 1:
        node = cur.outputs[0]
        if node.op in ("Identity", "Cast"):
            cur = node.outputs[0]
            continue
        if node.op == "Pad":
            values = _pad_values(graph, node)
            mode = node.attrs.get("mode", "constant")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            fill = node.inputs[2] if len(node.inputs) > 2 else None
            if values is None or len(values) != 2 * rank:
                return None
            if values[axis] or values[rank + axis]:
                value = const_value(fill) if fill is not None and fill.name else np.zeros(1)
                nonzero = value is None or bool(np.any(value))
                if mode != "constant" or nonzero:
                    raise UnsupportedOpError(fmt(_label(node), f"Pads axis {axis} of {name!r} (the time axis) in mode "
                                                 f"{mode!r} or with a value other than 0, which carried context cannot stand for",
                                                 "Export the model with zero padding along time, or stream whole sequences."))
                front, back = front + values[axis], back + values[rank + axis]
                pads.append((node, axis))
                last = node
            cur = node.outputs[0]
            continue
        if node.op == "Conv" and axis >= 2:
            return _conv_window(node, name, axis, rank, front, back, pads)
        break
    if front or back:
        raise UnsupportedOpError(fmt(_label(last), f"Pads the time axis {axis} of {name!r} ({front} in front, {back} behind) "
                                     "before ops rnnrt cannot read as one causal window",
                                     "Give the context by hand (--context INPUT:K:AXIS) if the model needs K past frames."))
    return None


def _conv_window(node: gs.Node, name: str, axis: int, rank: int, front: int, back: int,
                 pads: list[tuple[gs.Node, int]]) -> Optional[Window]:
    label = _label(node)
    spatial = axis - 2
    weight = node.inputs[1]
    kernels = node.attrs.get("kernel_shape") or (list(weight.shape[2:]) if weight.shape is not None else None)
    if kernels is None:
        return None
    kernel = int(kernels[spatial])
    dilation = int((node.attrs.get("dilations") or [1] * (rank - 2))[spatial])
    stride = int((node.attrs.get("strides") or [1] * (rank - 2))[spatial])
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    conv_pads = list(node.attrs.get("pads") or [0] * (2 * (rank - 2)))
    span = dilation * (kernel - 1)
    if span == 0 and not (front or back or conv_pads[spatial] or conv_pads[rank - 2 + spatial]):
        return None
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        raise UnsupportedOpError(fmt(label, f"Pads the time axis {axis} of {name!r} with auto_pad={auto_pad}, which centres "
                                     "its window on the frame: it looks ahead", "Only causal windows (all padding in "
                                     "front) can stream; re-export with causal padding."))
    front += conv_pads[spatial]
    back += conv_pads[rank - 2 + spatial]
    if conv_pads[spatial]:
        pads.append((node, spatial))
    if back:
        raise UnsupportedOpError(fmt(label, f"Has a window of {kernel} along the time axis {axis} of {name!r} that looks "
                                     f"{back} frame(s) ahead (padding behind the frames): frame t needs frames up to t+{back}",
                                     "A look-ahead window cannot stream frame by frame exactly; re-export the model causal "
                                     "(all padding in front), or feed whole sequences per call."))
    if stride != 1:
        raise UnsupportedOpError(fmt(label, f"Strides by {stride} along the time axis {axis} of {name!r}",
                                     "A strided window along time cannot stream one frame per call."))
    if front != span:
        raise UnsupportedOpError(fmt(label, f"Has a window of {span + 1} frames along the time axis {axis} of {name!r} but "
                                     f"{front} frame(s) of padding in front: its output has another number of frames than its input",
                                     "Streaming needs all of a window's past frames padded in front (kernel-1); re-export causal."))
    return Window(name, axis, span, pads, label)


def add_context(graph: gs.Graph, name: str, k: int, batch_axis: Optional[int], used: set[str],
                notes: list[str], axis: Optional[int] = None) -> StatePair:
    """Rewrites ``graph`` in place (see the module doc) and returns the new state pair.

    ``axis`` (default: the last) is the axis the context is carried along; a causal window the input
    feeds along it (:func:`find_window`) must span K past entries, and its padding is removed.
    """
    inputs = {v.name: v for v in graph.inputs}
    spec = f"--context {name}:{k}" + (f":{axis}" if axis is not None else "")
    if name not in inputs:
        raise ConfigError(fmt(spec, "Is not an input of the model", f"Inputs: {sorted(inputs)}."))
    x = inputs[name]
    shape = list(x.shape or [])
    if not shape:
        raise ConfigError(fmt(spec, "The input has no known shape or is a scalar",
                              "Context is carried along an axis (by default the last) of an input of rank >= 1."))
    if axis is not None and not -len(shape) <= axis < len(shape):
        raise ConfigError(fmt(spec, f"The input {shape} has no axis {axis}", f"AXIS is in 0..{len(shape) - 1}."))
    ax = len(shape) - 1 if axis is None else axis % len(shape)
    if ax == batch_axis:
        raise ConfigError(fmt(spec, f"Axis {ax} is the batch (stream) axis of {name!r}", "Carry context along the time or sample axis."))
    window = find_window(graph, name, ax) if axis is not None else None
    if window is not None and window.k != k:
        raise ConfigError(fmt(spec, f"{window.label} reads {window.k} past entries along axis {ax} of {name!r}, not {k}",
                              f"Use --context {name}:{window.k}:{ax} (or leave it out: convert inserts it by itself)."))
    last = shape[ax]
    if isinstance(last, int) and last <= k and window is None:
        along = "samples along its last axis" if axis is None else f"entries along axis {ax}"
        raise ConfigError(fmt(spec, f"The input has only {last} {along}",
                              f"K must be smaller than the input's dim {last} along that axis."))
    others = [a for a in range(len(shape)) if a != ax]
    dynamic = [a for a in others if not isinstance(shape[a], int) and a != batch_axis]
    rows = False
    if dynamic:
        if dynamic == [0] and batch_axis is None and len(shape) == 2 and ax == 1:
            rows = True
        else:
            raise ConfigError(fmt(spec, f"Dims {dynamic} of {name!r} {shape} are dynamic and not its batch axis",
                                  "The carried context needs a fixed shape apart from the batch dim."))
    if window is not None:
        window.remove_padding(graph)
    dtype = x.dtype or np.float32
    if window is not None:
        chunk: Any = last  # the frames of this call; the window's padding is what the context replaces
    else:
        chunk = last - k if isinstance(last, int) else ("chunk" if ax == len(shape) - 1 else last or "chunk")

    def at(dims: list, value: Any) -> list:
        return [value if a == ax else d for a, d in enumerate(dims)]

    full_dim = (last + k if window is not None else last) if isinstance(last, int) else None
    full = gs.Variable(f"{name}.with_context", dtype=dtype, shape=at(shape, full_dim))
    for node in list(x.outputs):
        for idx, t in enumerate(node.inputs):
            if t is x:
                node.inputs[idx] = full
    # Subgraphs that read the input by name.
    _rename_in_subgraphs(graph, name, full.name)
    new_x = gs.Variable(name, dtype=dtype, shape=at(shape, chunk))
    graph.inputs[graph.inputs.index(x)] = new_x

    ctx_shape = at(shape, k)
    if rows:
        ctx_shape[0] = 1
    elif batch_axis is not None and not isinstance(ctx_shape[batch_axis], int):
        ctx_shape[batch_axis] = ctx_shape[batch_axis] or "batch"
    in_name, out_name = unique_name(f"{name}.context", used), unique_name(f"{name}.context_next", used)
    ctx = gs.Variable(in_name, dtype=dtype, shape=ctx_shape)
    graph.inputs.append(ctx)
    i64 = lambda n, v: gs.Constant(f"{in_name}__{n}", np.array(v, np.int64))  # noqa: E731
    nxt = gs.Variable(out_name, dtype=dtype, shape=ctx_shape)
    if rows:
        # Row t of the call gets the last K samples of row t-1; row 0 those of the previous call.
        tails = gs.Variable(f"{in_name}__tails", dtype=dtype)
        graph.layer(op="Slice", inputs=[new_x, i64("tail_s", [-k]), i64("tail_e", [_INT_MAX]), i64("tail_a", [1])], outputs=[tails])
        prev = gs.Variable(f"{in_name}__prev_tails", dtype=dtype)
        graph.layer(op="Slice", inputs=[tails, i64("prev_s", [0]), i64("prev_e", [-1]), i64("prev_a", [0])], outputs=[prev])
        ctxs = gs.Variable(f"{in_name}__rows", dtype=dtype)
        graph.layer(op="Concat", inputs=[ctx, prev], outputs=[ctxs], attrs={"axis": 0})
        graph.layer(op="Concat", inputs=[ctxs, new_x], outputs=[full], attrs={"axis": 1})
        graph.layer(op="Slice", inputs=[tails, i64("last_s", [-1]), i64("last_e", [_INT_MAX]), i64("last_a", [0])], outputs=[nxt])
    else:
        graph.layer(op="Concat", inputs=[ctx, new_x], outputs=[full], attrs={"axis": ax})
        graph.layer(op="Slice", inputs=[full, i64("s", [-k]), i64("e", [_INT_MAX]), i64("a", [ax])], outputs=[nxt])
    graph.outputs.append(nxt)
    where = "" if axis is None else f" along axis {ax}"
    replaced = f"; it replaces the padding of {window.label}" if window is not None else ""
    notes.append(f"Context: the last {k} entries of {name!r}{where} are carried to the next call as state "
                 f"{in_name!r} -> {out_name!r}{replaced}; feed only the new ones ({name!r} is now "
                 f"{[d if d is not None else 'batch' for d in at(shape, chunk)]}).")
    return StatePair(in_name, out_name, tuple(ctx_shape), np.dtype(dtype).name, 0 if rows else (batch_axis if batch_axis is not None else 0))


def _rename_in_subgraphs(graph: gs.Graph, old: str, new: str) -> None:
    for node in graph.nodes:
        for value in node.attrs.values():
            for sub in value if isinstance(value, list) else [value]:
                if isinstance(sub, gs.Graph):
                    for inner in sub.nodes:
                        for idx, t in enumerate(inner.inputs):
                            if t.name == old and not t.inputs:
                                t.name = new
                    _rename_in_subgraphs(sub, old, new)
