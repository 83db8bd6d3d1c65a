"""BatchNorm (global or batch statistics, with Caffe's scale-factor blob), Scale, Bias, LRN, Softmax."""

from __future__ import annotations

import numpy as np

from rnnrt.importers.caffe import checks
from rnnrt.importers.caffe.context import ImportContext, normalize_axis, unsupported
from rnnrt.importers.caffe.registry import add_converter
from rnnrt.errors import ModelImportError, fmt


@add_converter("caffe", "Softmax")
def _(layer, ctx: ImportContext) -> list:
    (x,) = ctx.bottoms(layer, 1)
    shape = ctx.shape(x)
    axis = normalize_axis(layer, layer.param.softmax_param.axis, len(shape))
    if axis == ctx.batch_axis(x):
        ctx.cannot_follow(f"Softmax over axis {axis}, the stream axis, normalizes across the streams")
    return [ctx.op("Softmax", [x], {"axis": axis}, shape=shape, batch_axis=ctx.batch_axis(x))]


@add_converter("caffe", "BatchNorm")
def _(layer, ctx: ImportContext) -> list:
    p = layer.param.batch_norm_param
    (x,) = ctx.bottoms(layer, 1)
    shape, bax = ctx.shape(x), ctx.batch_axis(x)
    if len(shape) < 2:
        raise unsupported(layer, f"BatchNorm of a {len(shape)}-D input")
    c = shape[1]
    bcast = (1, c) + (1,) * (len(shape) - 2)
    eps = float(p.eps)
    # Caffe uses the stored statistics at test time unless use_global_stats says otherwise.
    use_global = p.use_global_stats if p.HasField("use_global_stats") else True
    if not use_global:
        if bax is not None:
            ctx.cannot_follow(
                "BatchNorm with use_global_stats: false normalizes with statistics over the stream axis",
                "Each stream's output would depend on the other streams; use the stored statistics "
                "(use_global_stats: true, Caffe's TEST default) or convert with a fixed batch.",
            )
        axes = [a for a in range(len(shape)) if a != 1]
        mean = ctx.op("ReduceMean", [x], {"axes": axes, "keepdims": 1}, shape=bcast, batch_axis=None)
        xc = ctx.op("Sub", [x, mean], shape=shape, batch_axis=bax)
        var = ctx.op("ReduceMean", [ctx.op("Mul", [xc, xc], shape=shape, batch_axis=bax)], {"axes": axes, "keepdims": 1}, shape=bcast, batch_axis=None)
        std = ctx.op("Sqrt", [ctx.op("Add", [var, ctx.const(np.array(eps, np.float32), f"{layer.name}/eps")], shape=bcast, batch_axis=None)], shape=bcast, batch_axis=None)
        return [ctx.op("Div", [xc, std], shape=shape, batch_axis=bax)]
    mean, var, factor = ctx.weights(layer, [(c,), (c,), (1,)], kinds=["mean", "variance", "factor"])
    f = 0.0 if factor[0] == 0 else 1.0 / float(factor[0])
    mean = (mean.astype(np.float32) * np.float32(f)).reshape(bcast)
    std = np.sqrt(var.astype(np.float32) * np.float32(f) + np.float32(eps)).reshape(bcast)
    xc = ctx.op("Sub", [x, ctx.const(mean, f"{layer.name}/mean")], shape=shape, batch_axis=bax)
    return [ctx.op("Div", [xc, ctx.const(std.astype(np.float32), f"{layer.name}/std")], shape=shape, batch_axis=bax)]


def _scale_like(layer, ctx: ImportContext, p, *, with_scale: bool) -> list:
    xs = ctx.bottoms(layer, (1, 2))
    x = xs[0]
    shape, bax = ctx.shape(x), ctx.batch_axis(x)
    axis = normalize_axis(layer, p.axis, len(shape)) if shape else 0
    if len(xs) == 2:
        pshape = ctx.shape(xs[1])
    else:
        num_axes = int(p.num_axes)
        if num_axes < -1:
            raise ModelImportError(fmt(f"Layer {layer.name!r} ({layer.type})", f"num_axes {num_axes} is invalid", "Expected -1 or more."))
        pshape = shape[axis:] if num_axes == -1 else shape[axis : axis + num_axes]
    if tuple(shape[axis : axis + len(pshape)]) != tuple(pshape):
        raise ModelImportError(
            fmt(
                f"Layer {layer.name!r} ({layer.type})",
                f"Parameter shape {list(pshape)} does not match input dims {list(shape[axis:axis + len(pshape)])} from axis {axis}",
            )
        )
    bcast = tuple(pshape) + (1,) * (len(shape) - axis - len(pshape))
    bias_term = bool(p.bias_term) if with_scale else True
    learned = []
    if len(xs) == 1 and with_scale:
        learned.append(("weight", pshape))
    if bias_term and (with_scale or len(xs) == 1):
        learned.append(("bias", pshape))
    blobs = ctx.weights(layer, [s for _, s in learned], kinds=[k for k, _ in learned]) if learned else []
    y = x
    if with_scale:
        if len(xs) == 2:
            s = xs[1]
            s = ctx.reshape(s, bcast, None) if len(bcast) != len(pshape) else s
        else:
            s = ctx.const(blobs.pop(0).reshape(bcast), f"{layer.name}/scale")
        y = ctx.op("Mul", [y, s], shape=shape, batch_axis=bax)
    if bias_term:
        if not with_scale and len(xs) == 2:
            b = ctx.reshape(xs[1], bcast, None) if len(bcast) != len(pshape) else xs[1]
        else:
            b = ctx.const(blobs.pop(0).reshape(bcast), f"{layer.name}/bias")
        y = ctx.op("Add", [y, b], shape=shape, batch_axis=bax)
    return [y]


@add_converter("caffe", "Scale")
def _(layer, ctx: ImportContext) -> list:
    return _scale_like(layer, ctx, layer.param.scale_param, with_scale=True)


@add_converter("caffe", "Bias")
def _(layer, ctx: ImportContext) -> list:
    return _scale_like(layer, ctx, layer.param.bias_param, with_scale=False)


@add_converter("caffe", "LRN")
def _(layer, ctx: ImportContext) -> list:
    p = layer.param.lrn_param
    (x,) = ctx.bottoms(layer, 1)
    shape, bax = ctx.shape(x), ctx.batch_axis(x)
    checks.positive(layer, "local_size", p.local_size)
    checks.odd(layer, "local_size", p.local_size)
    size = int(p.local_size)
    if p.norm_region == 0:  # ACROSS_CHANNELS: k + alpha/size * sum of squares over `size` channels
        attrs = {"size": size, "alpha": float(p.alpha), "beta": float(p.beta), "bias": float(p.k)}
        return [ctx.op("LRN", [x], attrs, shape=shape, batch_axis=bax)]
    # WITHIN_CHANNEL, as Caffe's LRNLayer::LayerSetUp builds it (lrn_layer.cpp): x * (1 + alpha *
    # AVE-pool(x^2))^-beta, the AVE pool over size x size windows padded by (size - 1) / 2 with stride 1.
    # Caffe's AVE pool divides by the window clipped to the padded input, which for these windows is
    # always size * size (count_include_pad). k is not used in this mode.
    if len(shape) != 4:
        raise unsupported(layer, f"LRN WITHIN_CHANNEL of a {len(shape)}-D input (only 4-D N x C x H x W)")
    pad = (size - 1) // 2
    sq = ctx.op("Mul", [x, x], shape=shape, batch_axis=bax)
    pool_attrs = {"kernel_shape": [size, size], "pads": [pad] * 4, "strides": [1, 1], "count_include_pad": 1}
    avg = ctx.op("AveragePool", [sq], pool_attrs, shape=shape, batch_axis=bax)
    scaled = ctx.op("Mul", [avg, ctx.const(np.array(p.alpha, np.float32), f"{layer.name}/alpha")], shape=shape, batch_axis=bax)
    base = ctx.op("Add", [scaled, ctx.const(np.array(1.0, np.float32), f"{layer.name}/one")], shape=shape, batch_axis=bax)
    scale = ctx.op("Pow", [base, ctx.const(np.array(-p.beta, np.float32), f"{layer.name}/neg_beta")], shape=shape, batch_axis=bax)
    return [ctx.op("Mul", [x, scale], shape=shape, batch_axis=bax)]
