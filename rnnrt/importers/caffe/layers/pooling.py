"""Pooling: MAX, AVE and STOCHASTIC (test phase), global, with Caffe's ceil-mode output size and AVE divisor."""

from __future__ import annotations

import math

import numpy as np

from rnnrt.importers.caffe import checks
from rnnrt.importers.caffe.context import ImportContext, unsupported
from rnnrt.importers.caffe.layers.conv import kernel_param, spatial_param
from rnnrt.importers.caffe.registry import add_converter
from rnnrt.errors import ModelImportError, RnnrtInternalError, fmt

# PoolingParameter.PoolMethod values.
_MAX, _AVE, _STOCHASTIC = 0, 1, 2
# FLT_MIN: Caffe's StoPoolForwardTest starts its window sum there (no 0/0 for all-zero windows).
_FLT_MIN = np.float32(np.finfo(np.float32).tiny)


def _pooled(size: int, k: int, p: int, s: int) -> int:
    # Caffe rounds up, then drops a last window that would start inside the padding.
    out = int(math.ceil((size + 2 * p - k) / s)) + 1
    if p and (out - 1) * s >= size + p:
        out -= 1
    return out


def _ave_correction(h: int, w: int, oh: int, ow: int, kh: int, kw: int, ph: int, pw: int, sh: int, sw: int) -> np.ndarray:
    # Caffe divides each window by its size clipped to the padded input (not beyond it); ONNX
    # AveragePool with count_include_pad divides by kh*kw. This factor turns one into the other.
    def sizes(out, size, k, p, s):
        starts = np.arange(out) * s - p
        ends = np.minimum(starts + k, size + p)
        return ends - starts

    pool = np.outer(sizes(oh, h, kh, ph, sh), sizes(ow, w, kw, pw, sw)).astype(np.float64)
    return (kh * kw / pool).astype(np.float32).reshape(1, 1, oh, ow)


@add_converter("caffe", "Pooling")
def _(layer, ctx: ImportContext) -> list:
    p = layer.param.pooling_param
    (x,) = ctx.bottoms(layer, 1)
    shape, bax = ctx.shape(x), ctx.batch_axis(x)
    if len(shape) != 4:
        raise unsupported(layer, f"Pooling of a {len(shape)}-D input (only 4-D N x C x H x W)")
    if p.pool not in (_MAX, _AVE, _STOCHASTIC):
        raise unsupported(layer, f"Pooling method {p.pool}")
    n, c, h, w = shape
    if p.global_pooling:
        kh, kw, ph, pw, sh, sw = h, w, 0, 0, 1, 1
    else:
        kh, kw = kernel_param(layer, p)
        ph, pw = spatial_param(p, "pad", 0)
        sh, sw = spatial_param(p, "stride", 1)
        checks.positive(layer, "kernel_size", kh, kw)
        checks.positive(layer, "stride", sh, sw)
        checks.pad_below_kernel(layer, (ph, pw), (kh, kw))
    oh, ow = _pooled(h, kh, ph, sh), _pooled(w, kw, pw, sw)
    checks.window_fits(layer, (h, w), (oh, ow), (kh, kw), (ph, pw))
    # Explicit end padding reproduces Caffe's ceil-mode size with ONNX's floor rule.
    eh = max(0, (oh - 1) * sh + kh - h - ph)
    ew = max(0, (ow - 1) * sw + kw - w - pw)
    if (h + ph + eh - kh) // sh + 1 != oh or (w + pw + ew - kw) // sw + 1 != ow:
        raise RnnrtInternalError(f"pooling size mismatch in {layer.name!r}")
    attrs = {"kernel_shape": [kh, kw], "pads": [ph, pw, eh, ew], "strides": [sh, sw]}
    out_shape = (n, c, oh, ow)
    if p.pool == _STOCHASTIC:
        if ph or pw:
            raise ModelImportError(
                fmt(f"Layer {layer.name!r} (Pooling)", f"STOCHASTIC pooling with pad {ph}x{pw}",
                    "Caffe implements padding only for MAX and AVE pooling (PoolingLayer::LayerSetUp refuses it).")
            )
        return [_stochastic_test(layer, ctx, x, attrs, out_shape, kh * kw, bax)]
    if p.pool == _MAX:
        return [ctx.op("MaxPool", [x], attrs, shape=out_shape, batch_axis=bax)]
    y = ctx.op("AveragePool", [x], {**attrs, "count_include_pad": 1}, shape=out_shape, batch_axis=bax)
    corr = _ave_correction(h, w, oh, ow, kh, kw, ph, pw, sh, sw)
    if not np.all(corr == 1.0):
        y = ctx.op("Mul", [y, ctx.const(corr, f"{layer.name}/divisor")], shape=out_shape, batch_axis=bax)
    return [y]


def _stochastic_test(layer, ctx: ImportContext, x, attrs: dict, out_shape: tuple, window: int, bax):
    # Test-phase STOCHASTIC pooling, Caffe's StoPoolForwardTest (pooling_layer.cu; the CPU path is not
    # implemented): each window, clipped to the input (no padding), gives the probability-weighted
    # average sum(x^2) / (FLT_MIN + sum(x)). The window sums are AVE pools over zero end padding times
    # the kernel area.
    area = ctx.const(np.array(window, np.float32), f"{layer.name}/window")
    sum_x = ctx.op("Mul", [ctx.op("AveragePool", [x], {**attrs, "count_include_pad": 1}, shape=out_shape, batch_axis=bax), area],
                   shape=out_shape, batch_axis=bax)
    sq = ctx.op("Mul", [x, x], shape=ctx.shape(x), batch_axis=bax)
    sum_sq = ctx.op("Mul", [ctx.op("AveragePool", [sq], {**attrs, "count_include_pad": 1}, shape=out_shape, batch_axis=bax), area],
                    shape=out_shape, batch_axis=bax)
    denom = ctx.op("Add", [sum_x, ctx.const(np.array(_FLT_MIN, np.float32), f"{layer.name}/flt_min")], shape=out_shape, batch_axis=bax)
    return ctx.op("Div", [sum_sq, denom], shape=out_shape, batch_axis=bax)
