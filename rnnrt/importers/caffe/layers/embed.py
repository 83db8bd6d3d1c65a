"""Embed: a lookup table; Caffe truncates the float indices to integers."""

from __future__ import annotations

import numpy as np

from rnnrt.importers.caffe.context import ImportContext
from rnnrt.importers.caffe.registry import add_converter


@add_converter("caffe", "Embed")
def _(layer, ctx: ImportContext) -> list:
    p = layer.param.embed_param
    (x,) = ctx.bottoms(layer, 1)
    shape, bax = ctx.shape(x), ctx.batch_axis(x)
    n, vocab = int(p.num_output), int(p.input_dim)
    blobs = ctx.weights(layer, [(vocab, n)] + ([(n,)] if p.bias_term else []))
    idx = ctx.op("Cast", [x], {"to": 7}, shape=shape, batch_axis=bax, dtype=np.int64)  # 7 = INT64, truncates
    y = ctx.op("Gather", [ctx.const(blobs[0], f"{layer.name}/W"), idx], {"axis": 0}, shape=shape + (n,), batch_axis=bax)
    if p.bias_term:
        y = ctx.op("Add", [y, ctx.const(blobs[1], f"{layer.name}/b")], shape=shape + (n,), batch_axis=bax)
    return [y]
