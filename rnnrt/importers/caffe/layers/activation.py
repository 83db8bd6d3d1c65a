"""Element-wise activations: ReLU (leaky), Sigmoid, TanH, Dropout (identity at test), Power, AbsVal, Exp."""

from __future__ import annotations

import numpy as np

from rnnrt.importers.caffe.context import ImportContext
from rnnrt.importers.caffe.registry import add_converter


def _unary(layer, ctx: ImportContext, op: str, attrs: dict | None = None) -> list:
    (x,) = ctx.bottoms(layer, 1)
    return [ctx.op(op, [x], attrs, shape=ctx.shape(x), batch_axis=ctx.batch_axis(x), name=layer.tops[0])]


@add_converter("caffe", "ReLU")
def _(layer, ctx: ImportContext) -> list:
    slope = layer.param.relu_param.negative_slope
    if slope != 0.0:
        return _unary(layer, ctx, "LeakyRelu", {"alpha": float(slope)})
    return _unary(layer, ctx, "Relu")


@add_converter("caffe", "Sigmoid")
def _(layer, ctx: ImportContext) -> list:
    return _unary(layer, ctx, "Sigmoid")


@add_converter("caffe", "TanH")
def _(layer, ctx: ImportContext) -> list:
    return _unary(layer, ctx, "Tanh")


@add_converter("caffe", "AbsVal")
def _(layer, ctx: ImportContext) -> list:
    return _unary(layer, ctx, "Abs")


@add_converter("caffe", "Dropout")
def _(layer, ctx: ImportContext) -> list:
    # Caffe scales at train time (scale_train defaults to true), so at test time Dropout is identity.
    (x,) = ctx.bottoms(layer, 1)
    p = layer.param.dropout_param
    # BVLC has no scale_train; forks that add it (false) scale at test time instead.
    if "scale_train" in p.DESCRIPTOR.fields_by_name and not p.scale_train:
        keep = 1.0 - layer.param.dropout_param.dropout_ratio
        scale = ctx.const(np.array(keep, np.float32), f"{layer.name}/keep")
        return [ctx.op("Mul", [x, scale], shape=ctx.shape(x), batch_axis=ctx.batch_axis(x), name=layer.tops[0])]
    return [x]


@add_converter("caffe", "Power")
def _(layer, ctx: ImportContext) -> list:
    # y = (shift + scale * x) ^ power
    p = layer.param.power_param
    (x,) = ctx.bottoms(layer, 1)
    shape, axis = ctx.shape(x), ctx.batch_axis(x)
    y = x
    if p.scale != 1.0:
        y = ctx.op("Mul", [y, ctx.const(np.array(p.scale, np.float32), f"{layer.name}/scale")], shape=shape, batch_axis=axis)
    if p.shift != 0.0:
        y = ctx.op("Add", [y, ctx.const(np.array(p.shift, np.float32), f"{layer.name}/shift")], shape=shape, batch_axis=axis)
    if p.power != 1.0:
        y = ctx.op("Pow", [y, ctx.const(np.array(p.power, np.float32), f"{layer.name}/power")], shape=shape, batch_axis=axis)
    if y is x:
        y = ctx.op("Identity", [x], shape=shape, batch_axis=axis)
    return [y]
