"""Embed: a lookup table; Caffe truncates the float indices to integers."""

from __future__ import annotations

import numpy as np

from rnnrt.importers.caffe import checks
from rnnrt.importers.caffe.context import ImportContext
from rnnrt.importers.caffe.registry import add_converter


@add_converter("caffe", "Embed")
def _(layer, ctx: ImportContext) -> list:
    p = layer.param.embed_param
    (x,) = ctx.bottoms(layer, 1)
    shape, bax = ctx.shape(x), ctx.batch_axis(x)
    n, vocab = int(p.num_output), int(p.input_dim)
    blobs = ctx.weights(layer, [(vocab, n)] + ([(n,)] if p.bias_term else []))
    checks.positive(layer, "input_dim", vocab)
    checks.positive(layer, "num_output", n)
    idx = ctx.op("Cast", [x], {"to": 7}, shape=shape, batch_axis=bax, dtype=np.int64)  # 7 = INT64, truncates
    # Caffe rejects ids outside [0, input_dim); ONNX Gather would wrap a negative id silently. A
    # negative id becomes input_dim, out of range like any id >= input_dim: the engine fails the
    # step (ONNX Runtime: "indices element out of data bounds"; the Session's state stays as it was).
    neg = ctx.op("Less", [idx, ctx.ints([0], f"{layer.name}/zero")], shape=shape, batch_axis=bax, dtype=np.bool_)
    idx = ctx.op("Where", [neg, ctx.ints([vocab], f"{layer.name}/input_dim"), idx], shape=shape, batch_axis=bax, dtype=np.int64)
    y = ctx.op("Gather", [ctx.const(blobs[0], f"{layer.name}/W"), idx], {"axis": 0}, shape=shape + (n,), batch_axis=bax)
    if p.bias_term:
        y = ctx.op("Add", [y, ctx.const(blobs[1], f"{layer.name}/b")], shape=shape + (n,), batch_axis=bax)
    return [y]
