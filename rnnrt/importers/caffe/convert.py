"""Caffe net → ONNX step graph.

::

    from rnnrt.importers.caffe.convert import convert_caffe
    step = convert_caffe("deploy.prototxt", "weights.caffemodel")
    onnx.save(step.model, "model.onnx")
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from rnnrt.importers.caffe import layers as _layers  # noqa: F401 (registers the built-in converters)
from rnnrt.importers.caffe.context import BATCH_DIM, ImportContext
from rnnrt.importers.caffe.registry import get_converter
from rnnrt.errors import ModelImportError, RnnrtError, fmt
from rnnrt.ir.stepgraph import Continuation, StepGraph, TensorSpec
from rnnrt.ir.weights import EMBED_LIMIT, model_from_graph

G_LOGGER = logging.getLogger("rnnrt.importers.caffe")

_RECURRENT = ("LSTM", "RNN")
# Layers whose tops keep the leading axes of their bottoms, so a top and its bottoms have the same
# batch axis.
_KEEPS_LEADING_AXES = {
    "ReLU", "Sigmoid", "TanH", "AbsVal", "Dropout", "Power", "Exp", "Log", "BNLL", "ELU", "PReLU", "Threshold",
    "Embed", "Eltwise", "Scale", "Bias", "Split", "Softmax", "InnerProduct", "Concat", "Slice", "Tile", "Flatten",
}
# Layers over N x C x H x W blobs: the batch (stream) axis is 0.
_IMAGE_LAYERS = {"Convolution", "Deconvolution", "Pooling", "LRN", "BatchNorm", "SPP", "Im2col"}


def _blob_versions(net: Any) -> list[tuple[list[str], list[str]]]:
    """Per layer, its bottoms and tops as blob *versions*: a top that rewrites a blob (in place, or a
    name used again) is ``name#k``, so that hints about the blob before and after it stay apart."""
    current: dict[str, str] = {name: name for name in net.inputs}
    count: dict[str, int] = {}
    out = []
    for layer in net.layers:
        bottoms = [current.get(b, b) for b in layer.bottoms]
        tops = []
        for t in layer.tops:
            if t in current:
                count[t] = count.get(t, 0) + 1
                current[t] = f"{t}#{count[t]}"
            else:
                current[t] = t
            tops.append(current[t])
        out.append((bottoms, tops))
    return out


def _batch_axis_hints(net: Any, versions: list[tuple[list[str], list[str]]]) -> dict[str, int]:
    """The axis on which the layers around each blob version read its streams, as far as the layer types tell.

    Recurrent layers read x and cont as T x N (axis 1), a static input and the state as N x ... and
    write T x N x H; image layers read and write N x C x H x W (axis 0); element-wise layers,
    InnerProduct, Concat, Slice and the like keep the leading axes, so their tops and bottoms share
    the axis (propagated both ways: the image feature added to an LSTM's output is T x N too).
    Reshapes are left to the converter, which follows the streams through them with these hints.
    """
    hints: dict[str, int] = {}
    for layer, (bottoms, tops) in zip(net.layers, versions):
        if layer.type in _RECURRENT:
            n_state = 2 if layer.type == "LSTM" else 1
            exposed = n_state if layer.param.recurrent_param.expose_hidden else 0
            static = len(bottoms) == 3 + exposed
            for i, b in enumerate(bottoms):
                hints.setdefault(b, 0 if (static and i == 2) else 1)
            for t in tops:
                hints.setdefault(t, 1)
    for layer, (bottoms, tops) in zip(net.layers, versions):
        if layer.type in _IMAGE_LAYERS:
            for b in bottoms + tops:
                hints.setdefault(b, 0)
    groups = [b + t for layer, (b, t) in zip(net.layers, versions) if layer.type in _KEEPS_LEADING_AXES]
    changed = True
    while changed:
        changed = False
        for blobs in reversed(groups):
            known = [hints[b] for b in blobs if b in hints]
            if known:
                for b in blobs:
                    if b not in hints:
                        hints[b] = known[0]
                        changed = True
    return hints


class _Context(ImportContext):
    def __init__(self, net: Any, **kw) -> None:
        super().__init__(net, **kw)
        versions = _blob_versions(net)
        self.hints = _batch_axis_hints(net, versions)
        self._top_versions = {id(layer): tops for layer, (_, tops) in zip(net.layers, versions)}

    def hint(self, blob: str) -> int | None:
        # The version of `blob` that the current layer writes (Reshape/Flatten ask about their top).
        tops = self._top_versions.get(id(self.layer), []) if self.layer is not None else []
        for name, version in zip(self.layer.tops if self.layer is not None else [], tops):
            if name == blob:
                return self.hints.get(version)
        return self.hints.get(blob)

    def input_batch_axis(self, name: str, shape: Sequence[int]) -> int | None:
        if not shape:
            return None
        tops = self._top_versions.get(id(self.layer), []) if self.layer is not None else []
        version = next((v for t, v in zip(self.layer.tops, tops) if t == name), name) if self.layer is not None else name
        axis = self.hints.get(version, 0)
        return axis if axis < len(shape) else 0


def convert_net(
    net: Any, *, dynamic_batch: bool = False, seed: int = 0, source: dict | None = None, embed_limit: int = EMBED_LIMIT
) -> StepGraph:
    """Converts a loaded CaffeNet (``rnnrt.importers.caffe.reader.load_net``) into a step graph.

    Args:
        net: The CaffeNet.
        dynamic_batch (bool): Emit a symbolic ``batch`` dim (streams) instead of the prototxt's N.
            Default: False.
        seed (int): Seed for random weights where the net has no caffemodel. Default: 0.
        source (dict | None): Provenance recorded in the config.
        embed_limit (int): Weights totalling more bytes stay out of the ModelProto
            (``StepGraph.external_data``; ``save_step_graph`` writes them to ``<name>.onnx.data``).
            Default: :data:`rnnrt.ir.weights.EMBED_LIMIT` (as much as protobuf can serialize).

    Returns:
        StepGraph: The ONNX model and its bindings.
    """
    ctx = _Context(net, dynamic_batch=dynamic_batch, seed=seed)
    for name, shape in net.inputs.items():
        if any(int(d) <= 0 for d in shape):
            raise ModelImportError(fmt(f"Net input {name!r}", f"Has shape {list(shape)}", "Expected every dim > 0."))
        ctx.blobs[name] = ctx.add_input(name, shape, ctx.input_batch_axis(name, shape))
    available: dict[str, None] = {name: None for name in net.inputs}
    for layer in net.layers:
        ctx.layer = layer
        reg = get_converter("caffe", layer.type, layer_name=layer.name)
        try:
            tops = reg.func(layer, ctx)
        except RnnrtError:
            raise
        except Exception as err:  # a converter bug or a plugin failure: name the layer
            raise ModelImportError(
                fmt(f"Layer {layer.name!r} ({layer.type})", f"Conversion failed ({reg.origin}): {type(err).__name__}: {err}")
            ) from err
        if len(tops) != len(layer.tops):
            raise ModelImportError(
                fmt(f"Layer {layer.name!r} ({layer.type})", f"Converter returned {len(tops)} tensors for {len(layer.tops)} tops")
            )
        for b in layer.bottoms:
            available.pop(b, None)
        for top, var in zip(layer.tops, tops):
            ctx.blobs[top] = var
            available[top] = None
    ctx.layer = None

    # Caffe's net outputs are the blobs nobody consumed, in std::set (sorted) order.
    out_names = sorted(available)
    if not out_names and not ctx.states:
        raise ModelImportError(fmt(f"Net {net.name!r}", "Has no outputs"))
    outputs, infos = [], {}
    tensors: dict[str, gs.Tensor] | None = None  # built once, on demand: per output it would be quadratic
    claimed: set[int] = set()  # outputs already named: a tensor two outputs share (Split tops) is copied
    for name in out_names:
        var = ctx.blobs[name]
        if id(var) in claimed:
            var = ctx.op("Identity", [var], shape=ctx.shape(var), batch_axis=ctx.batch_axis(var))
        claimed.add(id(var))
        if var.name != name:
            if var in ctx.graph.inputs or isinstance(var, gs.Constant):
                var = ctx.op("Identity", [var], shape=ctx.shape(var), batch_axis=ctx.batch_axis(var))
            if tensors is None:
                tensors = dict(ctx.graph.tensors())
            holder = tensors.get(name)
            if holder is not None:
                if holder in ctx.graph.inputs:
                    raise ModelImportError(
                        fmt(f"Blob {name!r}", "Is both a net input and, rewritten in place, a net output", "Give the in-place layer a new top name.")
                    )
                holder.name = ctx.unique(f"{name}__in")
                ctx.info[holder.name] = ctx.info.pop(name)
                tensors[holder.name] = tensors.pop(name)
            ctx.info[name] = ctx.info.pop(var.name)
            tensors.pop(var.name, None)
            var.name = name
            tensors[name] = var
        info = ctx.info[name]
        var.dtype = np.float32
        outputs.append(var)
        infos[name] = info
    _finish_rows(ctx, [v.name for v in ctx.graph_inputs] + out_names)
    for var in ctx.graph_inputs:
        info = ctx.info[var.name]
        var.shape = ctx.export_shape(info.shape, info.batch_axis, _fold_of(info))
    for name, var in zip(out_names, outputs):
        info = ctx.info[name]
        var.shape = ctx.export_shape(info.shape, info.batch_axis, _fold_of(info))
    state_outs = []
    for pair in ctx.states:
        var = ctx.state_outputs[pair.output]
        var.dtype = np.float32
        var.shape = list(pair.shape)
        state_outs.append(var)
    ctx.graph.outputs = outputs + state_outs
    ctx.graph.cleanup().toposort()
    # Exported and checked without serializing the weights; > 1 GiB of them stay external (numpy).
    model, external = model_from_graph(ctx.graph, subject=f"Net {net.name!r}", embed_limit=embed_limit)

    state_inputs = {p.input for p in ctx.states}

    def spec(name: str, info) -> TensorSpec:
        fold = _fold_of(info)
        axis = info.batch_axis
        if axis is not None and not ctx.dynamic_batch and fold is not None:
            # A fixed-batch step graph keeps T*N rows as they are (no stream axis to pool over).
            axis = None
        return TensorSpec(
            name, "float32", tuple(ctx.export_shape(info.shape, info.batch_axis, fold)), axis,
            batch_fold=fold if axis is not None else None,
        )

    inputs = [spec(v.name, ctx.info[v.name]) for v in ctx.graph_inputs if v.name not in state_inputs]
    outs = [spec(n, infos[n]) for n in out_names]
    continuation, notes = _continuation(net, ctx, {i.name for i in inputs})
    notes = ctx.notes + notes
    return StepGraph(model=model, inputs=inputs, outputs=outs, states=list(ctx.states), continuation=continuation,
                     source=dict(source or {}), notes=notes, external_data=external)


def _fold_of(info) -> tuple[int, int] | None:
    """The fold of a tensor's batch axis for the config: None when the axis is the streams alone."""
    if info.batch_axis is None or info.rows is None:
        return None
    fold = info.rows.find().fold
    return None if fold in (None, (1, 1)) else tuple(fold)


def _finish_rows(ctx: ImportContext, names: Sequence[str]) -> None:
    """Decides the row layout of every graph input and output still undecided (they hold the streams alone)."""
    for name in names:
        info = ctx.info[name]
        if info.rows is None:
            continue
        rows = info.rows.find()
        if rows.fold is not None:
            continue
        n = ctx.streams if ctx.streams is not None else rows.size
        if rows.size == n:
            ctx.decide(rows, (1, 1), f"Tensor {name!r}")
            continue
        if ctx.dynamic_batch:
            raise ModelImportError(
                fmt(
                    f"Tensor {name!r}",
                    f"Has {rows.size} entries on its batch axis {info.batch_axis} (shape {list(info.shape)}) but the net "
                    f"runs {n} streams, and no layer tells how those entries map to the streams",
                    "Dynamic batch needs each batch axis to be the streams or T*N time-major rows that a Reshape "
                    "splits into T x N; convert with a fixed batch.",
                )
            )
        info.batch_axis, info.rows = None, None


def _continuation(net: Any, ctx: ImportContext, input_names: set[str]) -> tuple[Continuation | None, list[str]]:
    notes: list[str] = []
    conts, read = [], set()
    for index, layer in enumerate(net.layers):
        if layer.type in _RECURRENT and len(layer.bottoms) > 1:
            conts.append(_source_input(net, index, layer.bottoms[1], input_names))
            read.add(layer.bottoms[1])
    if not conts:
        return None, notes
    sources = sorted({c for c in conts if c is not None})
    if len(sources) == 1 and all(c == sources[0] for c in conts):
        name = sources[0]
        info = ctx.info[name]
        fold = _fold_of(info)
        if name in read and fold is None:
            return Continuation(input=name, batch_axis=1, time_axis=0), notes
        if (
            info.batch_axis is not None
            and fold is not None
            and fold[1] == 1
            and math.prod(info.shape) == info.shape[info.batch_axis]
        ):
            # Clip markers fed as T*N time-major rows (LRCN): time and streams share one axis, and the
            # first time step is rows 0..N-1.
            notes.append(
                f"The continuation {name!r} holds T*N time-major rows (row t*N + n) on axis {info.batch_axis}; "
                "the Session fills it (0 at the first time step of reset slots) when it is not fed."
            )
            return Continuation(input=name, batch_axis=info.batch_axis, time_axis=info.batch_axis), notes
    direct = sorted({c for c in conts if c in input_names})
    if direct:
        notes.append(
            f"The recurrent layers take their continuation from several blobs {sorted(read)}; "
            f"the Session does not fill the net inputs among them ({direct}): feed them on every step."
        )
    else:
        notes.append(
            f"The continuation blobs {sorted(read)} are computed inside the net, so the Session has no "
            "continuation input to fill; sequence starts are whatever the net computes them to be."
        )
    return None, notes


# Layers that only rearrange or pass on a blob: a continuation read through them is still the net input.
_PASS_THROUGH = {"Reshape", "Flatten", "Split", "Dropout"}


def _source_input(net: Any, index: int, blob: str, input_names: set[str]) -> str | None:
    """The net input that the blob read by layer ``index`` comes from, through reshapes; None if computed."""
    for layer in reversed(net.layers[:index]):
        if blob in layer.tops:
            if layer.type in ("Input", "DummyData"):
                break
            if layer.type not in _PASS_THROUGH or len(layer.bottoms) != 1:
                return None
            blob = layer.bottoms[0]
    return blob if blob in input_names else None


def convert_caffe(
    prototxt: str | os.PathLike,
    caffemodel: str | os.PathLike | None = None,
    *,
    batch: str | None = None,
    seed: int = 0,
    phase: str = "TEST",
    schema: Any = None,
    progress: bool = False,
    embed_limit: int = EMBED_LIMIT,
) -> StepGraph:
    """Reads a Caffe deploy prototxt (and caffemodel) and converts it into a step graph.

    Args:
        prototxt (str | os.PathLike): The deploy prototxt.
        caffemodel (str | os.PathLike | None): Trained weights. When None, weights are drawn at random
            (seeded) from the layers' fillers: useful to check a net converts and builds.
        batch (str | None): ``"dynamic"`` for a symbolic batch (stream) dim; None keeps the prototxt's N.
        seed (int): Seed of the random weights. Default: 0.
        phase (str): Caffe phase for include/exclude rules. Default: ``"TEST"``.
        schema: A ``CaffeSchema`` with plugin extensions, if any.
        progress (bool): Show a progress bar while reading big weights.
        embed_limit (int): See :func:`convert_net`; ``rnnrt convert`` passes
            :data:`rnnrt.ir.weights.FILE_EMBED_LIMIT` so that big weights are never copied into a ModelProto.

    Returns:
        StepGraph: The ONNX step graph with its bindings.

    Example::

        step = convert_caffe("deploy.prototxt", "weights.caffemodel", batch="dynamic")
    """
    from rnnrt.importers.caffe.reader import load_net

    if batch not in (None, "dynamic"):
        raise ModelImportError(fmt("Option batch", f"Got {batch!r}", "Expected None or 'dynamic'."))
    net = load_net(prototxt, caffemodel, phase=phase, schema=schema, progress=progress)
    source = {
        "format": "caffe",
        "prototxt": os.path.abspath(os.fspath(prototxt)),
        "caffemodel": os.path.abspath(os.fspath(caffemodel)) if caffemodel else None,
    }
    if caffemodel is None:
        source["random_weights_seed"] = seed
    return convert_net(net, dynamic_batch=batch == "dynamic", seed=seed, source=source, embed_limit=embed_limit)


__all__ = ["BATCH_DIM", "convert_caffe", "convert_net"]
