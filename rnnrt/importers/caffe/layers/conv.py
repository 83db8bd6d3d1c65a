"""Convolution (2-D; group, pad/stride/kernel incl. ``_h``/``_w``, dilation, bias)."""

from __future__ import annotations

from rnnrt.importers.caffe import checks
from rnnrt.importers.caffe.context import ImportContext, unsupported
from rnnrt.importers.caffe.registry import add_converter
from rnnrt.errors import ModelImportError, fmt


def spatial_param(p, name: str, default: int | None) -> tuple[int, int]:
    """Reads a Caffe 2-D spatial parameter: ``name_h``/``name_w`` win over the repeated ``name``."""
    if p.HasField(f"{name}_h") or p.HasField(f"{name}_w"):
        return int(getattr(p, f"{name}_h")), int(getattr(p, f"{name}_w"))
    field = "kernel_size" if name == "kernel" else name
    fdesc = p.DESCRIPTOR.fields_by_name[field]
    # protobuf >= 6 has is_repeated; older versions only label.
    repeated = fdesc.is_repeated if hasattr(fdesc, "is_repeated") else fdesc.label == fdesc.LABEL_REPEATED
    if repeated:
        values = list(getattr(p, field))
    else:
        values = [getattr(p, field)] if p.HasField(field) else []
    if not values:
        if default is None:
            raise ValueError(name)
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    return int(values[0]), int(values[1])


def kernel_param(layer, p) -> tuple[int, int]:
    """The 2-D kernel size of a Convolution or Pooling layer, naming the layer if it has none."""
    try:
        return spatial_param(p, "kernel", None)
    except ValueError:
        raise ModelImportError(fmt(f"Layer {layer.name!r} ({layer.type})", "Has no kernel size")) from None


@add_converter("caffe", "Convolution")
def _(layer, ctx: ImportContext) -> list:
    p = layer.param.convolution_param
    (x,) = ctx.bottoms(layer, 1)
    shape, bax = ctx.shape(x), ctx.batch_axis(x)
    if len(shape) != 4:
        raise unsupported(layer, f"Convolution of a {len(shape)}-D input (only 4-D N x C x H x W)")
    if p.axis != 1:
        raise unsupported(layer, f"Convolution with axis {p.axis}")
    kh, kw = kernel_param(layer, p)
    ph, pw = spatial_param(p, "pad", 0)
    sh, sw = spatial_param(p, "stride", 1)
    dils = list(p.dilation) or [1]
    dh, dw = (int(dils[0]), int(dils[-1]))
    group, n_out = int(p.group), int(p.num_output)
    n, c, h, w = shape
    checks.positive(layer, "kernel_size", kh, kw)
    checks.positive(layer, "stride", sh, sw)
    checks.positive(layer, "dilation", dh, dw)
    checks.positive(layer, "num_output", n_out)
    if ph < 0 or pw < 0:
        raise ModelImportError(fmt(f"Layer {layer.name!r} (Convolution)", f"pad is [{ph}, {pw}]", "Expected pad >= 0."))
    checks.divides(layer, "group", group, **{"input channels": c, "num_output": n_out})
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    checks.window_fits(layer, (h, w), (oh, ow), (dh * (kh - 1) + 1, dw * (kw - 1) + 1), (ph, pw))
    blobs = ctx.weights(layer, [(n_out, c // group, kh, kw)] + ([(n_out,)] if p.bias_term else []))
    inputs = [x, ctx.const(blobs[0], f"{layer.name}/W")]
    if p.bias_term:
        inputs.append(ctx.const(blobs[1], f"{layer.name}/b"))
    attrs = {
        "kernel_shape": [kh, kw],
        "pads": [ph, pw, ph, pw],
        "strides": [sh, sw],
        "dilations": [dh, dw],
        "group": group,
    }
    return [ctx.op("Conv", inputs, attrs, shape=(n, n_out, oh, ow), batch_axis=bax)]
