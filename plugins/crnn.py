"""Layer plugin for the Caffe forks that CRNN (text recognition) models are trained with.

Layer types (none is in BVLC Caffe):

- ``Permute`` (SSD fork): ``permute_param { order: 2 order: 0 order: 1 }`` transposes the axes;
  axes not listed keep their order after the listed ones. ONNX ``Transpose``.
- ``ContinuationIndicator`` (CRNN/CTC forks): no bottoms; ``continuation_indicator_param
  { time_step: T batch_size: N }`` makes the T x N ``cont`` blob of the recurrent layers,
  0 at t=0 and 1 after. A constant (an ``Expand`` to the stream count with ``--batch dynamic``).
- ``Reverse`` (OCR forks): ``reverse_param { axis: 0 }`` reverses the order along each given
  axis (default 0, time). ONNX ``Gather`` with reversed indices. Two LSTMs, one between two
  Reverse layers, concatenated on the channel axis make a bidirectional LSTM.

Streaming: ``ContinuationIndicator`` restarts the sequence at t=0 of *every* forward pass, as in
the fork, where one forward is one image. The step graph keeps that meaning: each
``Session.step(image)`` is a new sequence, the LSTM state inputs (``lstm1.h0`` ...) are multiplied
by 0 at t=0 and have no effect, and there is no continuation input to feed. To carry the state
across calls instead (a long line fed in chunks of T columns), replace the ContinuationIndicator
layer by an ``Input`` of shape T x N: rnnrt then fills it (0 only at t=0 after a ``reset``).

Field numbers: ``permute_param = 202`` as in SSD's caffe.proto; ``reverse_param = 157`` as in
the OCR forks; ``continuation_indicator_param = 150`` is not checked against a fork's
caffe.proto. Numbers only matter for binary prototxts: a caffemodel's weights are read by layer
name, and these layers have no weights.
"""

from __future__ import annotations

import numpy as np

from rnnrt.importers.caffe.context import ImportContext, normalize_axis
from rnnrt.importers.caffe.proto import ProtoExtension, ProtoField, ProtoMessage
from rnnrt.importers.caffe.registry import add_converter
from rnnrt.errors import ModelImportError, UnsupportedOpError, fmt

CAFFE_PROTO = ProtoExtension(
    messages=(
        ProtoMessage("PermuteParameter", (ProtoField("order", 1, "uint32", "repeated"),)),
        ProtoMessage(
            "ContinuationIndicatorParameter",
            (ProtoField("time_step", 1, "uint32", default=0), ProtoField("batch_size", 2, "uint32", default=0)),
        ),
        # Some forks declare one `optional int32 axis`; repeated reads the same text and wire format.
        ProtoMessage("ReverseParameter", (ProtoField("axis", 1, "int32", "repeated"),)),
    ),
    layer_fields=(
        ProtoField("permute_param", 202, "PermuteParameter"),
        ProtoField("continuation_indicator_param", 150, "ContinuationIndicatorParameter"),
        ProtoField("reverse_param", 157, "ReverseParameter"),
    ),
)


def permutation(layer, rank: int) -> list[int]:
    """The full axis order of a Permute layer: the listed axes, then the others in order."""
    order = [int(o) for o in layer.param.permute_param.order]
    for o in order:
        if o >= rank:
            raise ModelImportError(
                fmt(f"Layer {layer.name!r} (Permute)", f"order {o} is out of range for a {rank}-D input", f"Expected axes in [0, {rank}).")
            )
    if len(set(order)) != len(order):
        raise ModelImportError(fmt(f"Layer {layer.name!r} (Permute)", f"order {order} lists an axis twice"))
    return order + [a for a in range(rank) if a not in order]


@add_converter("caffe", "Permute")
def _(layer, ctx: ImportContext) -> list:
    (x,) = ctx.bottoms(layer, 1)
    shape, bax = ctx.shape(x), ctx.batch_axis(x)
    perm = permutation(layer, len(shape))
    if perm == list(range(len(shape))):
        return [x]
    out = tuple(shape[a] for a in perm)
    return [ctx.op("Transpose", [x], {"perm": perm}, shape=out, batch_axis=None if bax is None else perm.index(bax), name=layer.tops[0])]


def continuation(time_step: int, batch_size: int) -> np.ndarray:
    """The fork's ContinuationIndicator output: T x N, 0 at t=0 and 1 after."""
    cont = np.ones((time_step, batch_size), np.float32)
    cont[0] = 0.0
    return cont


@add_converter("caffe", "ContinuationIndicator")
def _(layer, ctx: ImportContext) -> list:
    ctx.bottoms(layer, 0)
    p = layer.param.continuation_indicator_param
    t, n = int(p.time_step), int(p.batch_size)
    if t <= 0 or n <= 0:
        raise ModelImportError(
            fmt(f"Layer {layer.name!r} (ContinuationIndicator)", f"time_step is {t} and batch_size is {n}", "Both must be positive.")
        )
    if len(layer.tops) != 1:
        raise ModelImportError(fmt(f"Layer {layer.name!r} (ContinuationIndicator)", f"Has {len(layer.tops)} tops", "Expected 1."))
    ctx.notes.append(
        f"Layer {layer.name!r} (ContinuationIndicator) makes the continuation blob {layer.tops[0]!r} inside the net "
        "(0 at t=0, 1 after) on every call: each Session.step() starts a new sequence, as each forward() does in "
        "the Caffe fork; the recurrent state inputs have no effect. Replace the layer by an Input of shape T x N "
        "to carry the state across calls."
    )
    ref = _batch_reference(ctx) if ctx.dynamic_batch else None
    if ref is None:
        return [ctx.const(continuation(t, n), f"{layer.name}/cont")]
    # A symbolic stream count: expand a T x 1 column to T x N, N read from an input's batch dim.
    var, bax = ref
    dims = ctx.op("Shape", [var], shape=(len(ctx.shape(var)),), batch_axis=None, dtype=np.int64, name=f"{layer.name}/shape")
    n_dim = ctx.op("Gather", [dims, ctx.ints([bax], f"{layer.name}/batch_axis")], {"axis": 0}, shape=(1,), batch_axis=None,
                   dtype=np.int64, name=f"{layer.name}/streams")
    target = ctx.op("Concat", [ctx.ints([t], f"{layer.name}/time_step"), n_dim], {"axis": 0}, shape=(2,), batch_axis=None,
                    dtype=np.int64, name=f"{layer.name}/cont_shape")
    column = ctx.const(continuation(t, 1), f"{layer.name}/column")
    return [ctx.op("Expand", [column, target], shape=(t, n), batch_axis=1, name=layer.tops[0])]


def _batch_reference(ctx: ImportContext):
    for var in ctx.graph_inputs:
        bax = ctx.batch_axis(var)
        if bax is not None:
            return var, bax
    return None


@add_converter("caffe", "Reverse")
def _(layer, ctx: ImportContext) -> list:
    (x,) = ctx.bottoms(layer, 1)
    shape, bax = ctx.shape(x), ctx.batch_axis(x)
    axes = [normalize_axis(layer, int(a), len(shape)) for a in layer.param.reverse_param.axis] or [0]
    if len(set(axes)) != len(axes):
        raise ModelImportError(fmt(f"Layer {layer.name!r} (Reverse)", f"reverse_param.axis {axes} names an axis twice"))
    out = x
    for axis in axes:
        if ctx.dynamic_batch and axis == bax:
            raise UnsupportedOpError(
                fmt(f"Layer {layer.name!r} (Reverse)", f"Reversing the dynamic batch (stream) axis {axis} is not supported",
                    "Streams are independent; convert with a fixed batch to reverse them.")
            )
        if shape[axis] == 1:
            continue
        index = ctx.ints(np.arange(shape[axis] - 1, -1, -1), f"{layer.name}/reversed")
        out = ctx.op("Gather", [out, index], {"axis": axis}, shape=shape, batch_axis=bax, name=layer.tops[0])
    return [out]
