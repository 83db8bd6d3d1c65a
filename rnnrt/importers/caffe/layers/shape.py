"""Layers that move data around: Concat, Slice, Split, Reshape, Flatten, Tile, Silence."""

from __future__ import annotations

import math

from rnnrt.importers.caffe.context import ImportContext, Rows, normalize_axis
from rnnrt.importers.caffe.registry import add_converter
from rnnrt.errors import ModelImportError, fmt


@add_converter("caffe", "Concat")
def _(layer, ctx: ImportContext) -> list:
    p = layer.param.concat_param
    xs = ctx.bottoms(layer)
    shape = ctx.shape(xs[0])
    # The legacy concat_dim wins when present, as in Caffe.
    axis = normalize_axis(layer, p.concat_dim if p.HasField("concat_dim") else p.axis, len(shape))
    total = 0
    for b, x in zip(layer.bottoms, xs):
        s = ctx.shape(x)
        if len(s) != len(shape) or any(d != e for i, (d, e) in enumerate(zip(s, shape)) if i != axis):
            raise ModelImportError(
                fmt(
                    f"Layer {layer.name!r} (Concat)",
                    f"Bottom {b!r} has shape {list(s)}",
                    f"All bottoms must match {list(shape)} except on axis {axis}.",
                )
            )
        total += s[axis]
    if len(xs) == 1:
        return [xs[0]]
    out = shape[:axis] + (total,) + shape[axis + 1 :]
    bax = ctx.batch_axis(xs[0])
    if bax is not None and bax == axis:
        return [_concat_streams(layer, ctx, xs, axis, out)]
    if any(ctx.batch_axis(x) != bax for x in xs):
        ctx.cannot_follow(f"Concatenates bottoms whose stream axes differ ({[ctx.batch_axis(x) for x in xs]})")
    return [ctx.op("Concat", xs, {"axis": axis}, shape=out, batch_axis=bax)]


def _concat_streams(layer, ctx: ImportContext, xs: list, axis: int, out: tuple[int, ...]):
    # Concat along the stream axis stacks time steps: bottoms of T_k*N time-major rows (N plain rows
    # being T_k = 1) give (sum T_k)*N time-major rows, row t*N + n. (A CRNN cuts an image into column
    # strips and stacks them on the batch axis before the LSTM.)
    outers = []
    for x in xs:
        rows = ctx.rows(x) if ctx.batch_axis(x) == axis else None
        if rows is not None and rows.fold is None:
            n = ctx.streams if ctx.streams is not None else rows.size
            if rows.size == n:
                ctx.decide(rows, (1, 1), f"Bottom of Concat {layer.name!r}")
        fold = rows.fold if rows is not None else None
        if fold is None or fold[1] != 1:
            ctx.cannot_follow(
                f"Concatenates along the stream axis {axis} bottoms that are not time-major rows of the streams",
                "Only stacking whole time steps (T_k*N rows, row t*N + n) on the stream axis keeps the streams apart.",
            )
            return ctx.op("Concat", xs, {"axis": axis}, shape=out, batch_axis=None)
        outers.append(fold[0])
    return ctx.op("Concat", xs, {"axis": axis}, shape=out, batch_axis=axis, rows=Rows(out[axis], (sum(outers), 1)))


@add_converter("caffe", "Slice")
def _(layer, ctx: ImportContext) -> list:
    p = layer.param.slice_param
    (x,) = ctx.bottoms(layer, 1)
    shape, bax = ctx.shape(x), ctx.batch_axis(x)
    axis = normalize_axis(layer, p.slice_dim if p.HasField("slice_dim") else p.axis, len(shape))
    n, size = len(layer.tops), shape[axis]
    points = list(p.slice_point)
    if points:
        if len(points) != n - 1 or points != sorted(points) or points[0] <= 0 or points[-1] >= size:
            raise ModelImportError(
                fmt(
                    f"Layer {layer.name!r} (Slice)",
                    f"slice_point {points} does not split axis {axis} of size {size} into {n} parts",
                    f"Expected {n - 1} increasing points inside (0, {size}).",
                )
            )
        bounds = [0] + points + [size]
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    else:
        if size % n:
            raise ModelImportError(
                fmt(f"Layer {layer.name!r} (Slice)", f"Axis {axis} of size {size} cannot be split evenly into {n} tops")
            )
        sizes = [size // n] * n
    if n == 1:
        return [x]
    if bax is not None and axis == bax:
        ctx.cannot_follow(f"Slices the stream axis {axis}", "A Slice along the stream axis would separate the streams.")
        bax = None
    outs = [(top, shape[:axis] + (s,) + shape[axis + 1 :], bax) for top, s in zip(layer.tops, sizes)]
    return ctx.op_multi("Split", [x, ctx.ints(sizes, f"{layer.name}/split")], {"axis": axis}, outs)


@add_converter("caffe", "Split")
def _(layer, ctx: ImportContext) -> list:
    (x,) = ctx.bottoms(layer, 1)
    return [x] * len(layer.tops)


@add_converter("caffe", "Silence")
def _(layer, ctx: ImportContext) -> list:
    ctx.bottoms(layer)
    return []


def reshape_target(layer, in_shape: tuple[int, ...], dims: list[int], axis: int, num_axes: int) -> tuple[int, ...]:
    """Caffe's Reshape rule: dims replace ``in_shape[axis:axis+num_axes]``; 0 copies, -1 infers.

    (Caffe's ``ReshapeLayer::LayerSetUp``/``Reshape`` in ``reshape_layer.cpp``.)
    """
    rank = len(in_shape)
    start = axis if axis >= 0 else rank + axis + 1
    if not 0 <= start <= rank:
        raise ModelImportError(fmt(f"Layer {layer.name!r} (Reshape)", f"axis {axis} is out of range for a {rank}-D input"))
    end = rank if num_axes == -1 else start + num_axes
    if end > rank:
        raise ModelImportError(fmt(f"Layer {layer.name!r} (Reshape)", f"axis {axis} + num_axes {num_axes} exceed the input rank {rank}"))
    out = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= rank:
                raise ModelImportError(fmt(f"Layer {layer.name!r} (Reshape)", f"dim {i} is 0 (copy) but the input has no axis {start + i}"))
            out.append(in_shape[start + i])
        else:
            out.append(d)
    if out.count(-1) > 1:
        raise ModelImportError(fmt(f"Layer {layer.name!r} (Reshape)", "More than one dim is -1"))
    full = list(in_shape[:start]) + out + list(in_shape[end:])
    if -1 in full:
        known = math.prod(d for d in full if d != -1)
        total = math.prod(in_shape)
        if known == 0 or total % known:
            raise ModelImportError(
                fmt(f"Layer {layer.name!r} (Reshape)", f"Cannot reshape {list(in_shape)} to {full}", "The -1 dim has no integer solution.")
            )
        full[full.index(-1)] = total // known
    if math.prod(full) != math.prod(in_shape):
        raise ModelImportError(
            fmt(f"Layer {layer.name!r} (Reshape)", f"Cannot reshape {list(in_shape)} ({math.prod(in_shape)} values) to {full}")
        )
    return tuple(full)


def _literal_dims(in_shape: tuple[int, ...], dims: list[int], axis: int, num_axes: int) -> list[bool]:
    """Per output dim of a Caffe Reshape: whether the prototxt wrote it as a number (not 0 or -1)."""
    rank = len(in_shape)
    start = axis if axis >= 0 else rank + axis + 1
    end = rank if num_axes == -1 else start + num_axes
    return [False] * start + [d > 0 for d in dims] + [False] * (rank - end)


@add_converter("caffe", "Reshape")
def _(layer, ctx: ImportContext) -> list:
    p = layer.param.reshape_param
    (x,) = ctx.bottoms(layer, 1)
    shape = ctx.shape(x)
    dims = [int(d) for d in p.shape.dim]
    out = reshape_target(layer, shape, dims, int(p.axis), int(p.num_axes))
    literal = _literal_dims(shape, dims, int(p.axis), int(p.num_axes))
    return [ctx.reshape(x, out, ctx.hint(layer.tops[0]), name=layer.tops[0], literal=literal)]


@add_converter("caffe", "Flatten")
def _(layer, ctx: ImportContext) -> list:
    p = layer.param.flatten_param
    (x,) = ctx.bottoms(layer, 1)
    shape = ctx.shape(x)
    start = normalize_axis(layer, p.axis, len(shape))
    end = normalize_axis(layer, p.end_axis, len(shape), "end_axis")
    out = shape[:start] + (math.prod(shape[start : end + 1]),) + shape[end + 1 :]
    return [ctx.reshape(x, out, ctx.hint(layer.tops[0]), name=layer.tops[0])]


@add_converter("caffe", "Tile")
def _(layer, ctx: ImportContext) -> list:
    p = layer.param.tile_param
    (x,) = ctx.bottoms(layer, 1)
    shape, bax = ctx.shape(x), ctx.batch_axis(x)
    axis = normalize_axis(layer, p.axis, len(shape))
    if p.tiles < 1:
        raise ModelImportError(fmt(f"Layer {layer.name!r} (Tile)", f"tiles is {p.tiles}", "Expected 1 or more."))
    reps = [1] * len(shape)
    reps[axis] = int(p.tiles)
    out = shape[:axis] + (shape[axis] * int(p.tiles),) + shape[axis + 1 :]
    if bax is not None and bax == axis and p.tiles > 1:
        ctx.cannot_follow(f"Tiles the stream axis {axis}", "Repeating the stream axis would mix copies of the streams.")
        bax = None
    return [ctx.op("Tile", [x, ctx.ints(reps, f"{layer.name}/repeats")], shape=out, batch_axis=bax)]
