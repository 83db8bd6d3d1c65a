"""Layers that bring data into the net: Input and DummyData."""

from __future__ import annotations

from rnnrt.importers.caffe import checks
from rnnrt.importers.caffe.context import ImportContext
from rnnrt.importers.caffe.registry import add_converter
from rnnrt.errors import ModelImportError, fmt


def _blob_shape(msg) -> tuple[int, ...]:
    return tuple(int(d) for d in msg.dim)


@add_converter("caffe", "Input")
def _(layer, ctx: ImportContext) -> list:
    shapes = list(layer.param.input_param.shape)
    if len(shapes) not in (1, len(layer.tops)):
        raise ModelImportError(
            fmt(
                f"Layer {layer.name!r} (Input)",
                f"Declares {len(shapes)} shapes for {len(layer.tops)} tops",
                "Give one shape for all tops or one per top.",
            )
        )
    outs = []
    for i, top in enumerate(layer.tops):
        shape = _blob_shape(shapes[0] if len(shapes) == 1 else shapes[i])
        checks.dims_positive(layer, f"Top {top!r}", shape)
        outs.append(ctx.add_input(top, shape, ctx.input_batch_axis(top, shape)))
    return outs


@add_converter("caffe", "DummyData")
def _(layer, ctx: ImportContext) -> list:
    # In a deploy net DummyData stands for data fed at run time (e.g. precomputed features), so its
    # tops become graph inputs rather than constants.
    p = layer.param.dummy_data_param
    if len(p.shape):
        shapes = [_blob_shape(s) for s in p.shape]
    else:
        shapes = [
            (int(n), int(c), int(h), int(w)) for n, c, h, w in zip(p.num, p.channels, p.height, p.width)
        ]
    if len(shapes) == 1 and len(layer.tops) > 1:
        shapes = shapes * len(layer.tops)
    if len(shapes) != len(layer.tops):
        raise ModelImportError(
            fmt(f"Layer {layer.name!r} (DummyData)", f"Declares {len(shapes)} shapes for {len(layer.tops)} tops")
        )
    ctx.notes.append(
        f"DummyData layer {layer.name!r}: its tops {list(layer.tops)} are graph inputs (deploy nets fill "
        "DummyData blobs from the caller before each forward)."
    )
    for top, shape in zip(layer.tops, shapes):
        checks.dims_positive(layer, f"Top {top!r}", shape)
    return [ctx.add_input(top, shape, ctx.input_batch_axis(top, shape)) for top, shape in zip(layer.tops, shapes)]
