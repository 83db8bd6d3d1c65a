"""Eltwise: PROD, SUM (with per-bottom coefficients) and MAX of equally shaped bottoms."""

from __future__ import annotations

import numpy as np

from rnnrt.importers.caffe.context import ImportContext
from rnnrt.importers.caffe.registry import add_converter
from rnnrt.errors import ModelImportError, fmt

# EltwiseParameter.EltwiseOp values.
_PROD, _SUM, _MAX = 0, 1, 2


@add_converter("caffe", "Eltwise")
def _(layer, ctx: ImportContext) -> list:
    p = layer.param.eltwise_param
    xs = ctx.bottoms(layer)
    if len(xs) < 2:
        raise ModelImportError(fmt(f"Layer {layer.name!r} (Eltwise)", f"Has {len(xs)} bottom", "Expected at least 2."))
    shape, bax = ctx.shape(xs[0]), ctx.batch_axis(xs[0])
    for b, x in zip(layer.bottoms, xs):
        if ctx.shape(x) != shape:
            raise ModelImportError(
                fmt(
                    f"Layer {layer.name!r} (Eltwise)",
                    f"Bottom {b!r} has shape {list(ctx.shape(x))}",
                    f"All bottoms must have the shape of the first: {list(shape)}.",
                )
            )
    coeffs = list(p.coeff)
    if coeffs and len(coeffs) != len(xs):
        raise ModelImportError(
            fmt(f"Layer {layer.name!r} (Eltwise)", f"Has {len(coeffs)} coeff for {len(xs)} bottoms", "Give one per bottom.")
        )
    if p.operation == _PROD:
        op = "Mul"
    elif p.operation == _MAX:
        op = "Max"
    else:
        op = "Add"
        if coeffs and any(c != 1.0 for c in coeffs):
            xs = [
                x if c == 1.0 else ctx.op("Mul", [x, ctx.const(np.array(c, np.float32), f"{layer.name}/coeff")], shape=shape, batch_axis=bax)
                for x, c in zip(xs, coeffs)
            ]
    y = xs[0]
    for x in xs[1:]:
        y = ctx.op(op, [y, x], shape=shape, batch_axis=bax)
    return [y]
