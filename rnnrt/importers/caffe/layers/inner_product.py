"""InnerProduct: ``y = flatten(x, axis) @ W^T + b`` (``W`` is ``(N, K)``, or ``(K, N)`` with ``transpose``)."""

from __future__ import annotations

import math

from rnnrt.importers.caffe.context import ImportContext, normalize_axis
from rnnrt.importers.caffe.registry import add_converter


@add_converter("caffe", "InnerProduct")
def _(layer, ctx: ImportContext) -> list:
    p = layer.param.inner_product_param
    (x,) = ctx.bottoms(layer, 1)
    shape = ctx.shape(x)
    axis = normalize_axis(layer, p.axis, len(shape))
    k, n = math.prod(shape[axis:]), int(p.num_output)
    blobs = ctx.weights(layer, [(k, n) if p.transpose else (n, k)] + ([(n,)] if p.bias_term else []))
    w = blobs[0] if p.transpose else blobs[0].T  # (K, N) for MatMul
    lead = shape[:axis]
    bax = ctx.batch_axis(x)
    if bax is not None and bax >= axis:
        ctx.cannot_follow(
            f"InnerProduct axis {axis} flattens the stream axis {bax} of its {list(shape)} input into the features",
            f"Set inner_product_param.axis past the stream axis (e.g. axis: {bax + 1}) or convert with a fixed batch.",
        )
    bax = bax if bax is not None and bax < axis else None
    x2 = ctx.reshape(x, lead + (k,), bax)
    y = ctx.op("MatMul", [x2, ctx.const(w, f"{layer.name}/W")], shape=lead + (n,), batch_axis=bax)
    if p.bias_term:
        y = ctx.op("Add", [y, ctx.const(blobs[1], f"{layer.name}/b")], shape=lead + (n,), batch_axis=bax)
    return [y]
