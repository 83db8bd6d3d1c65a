"""Caffe's LSTM and RNN layers, expanded into plain ONNX ops with explicit state.

Semantics (BVLC ``lstm_layer.cpp``, ``lstm_unit_layer.cpp``, ``rnn_layer.cpp``), with ``cont`` of shape T x N
multiplying the previous state so that ``cont = 0`` starts a new sequence::

    LSTM  g_t = W_xc x_t + b_c [+ W_xc_static x_static] + W_hc (cont_t * h_{t-1})
          i, f, o = sigmoid(g_t[blocks 0, 1, 2]); g = tanh(g_t[block 3])
          c_t = cont_t * f * c_{t-1} + i * g ;  h_t = o * tanh(c_t)
    RNN   h_t = tanh(W_xh x_t + b_h [+ W_xh_static x_static] + W_hh (cont_t * h_{t-1}))
          o_t = tanh(W_ho h_t + b_o)

The input projection of all T steps is one MatMul outside the recurrence. T = 1 emits the cell
directly; T > 1 wraps the cell in an ONNX Scan over (projected x, cont), which both ONNX Runtime and
TensorRT build. Without ``expose_hidden`` the initial state becomes a graph input ``<layer>.h0``
(``.c0``) and the final state a graph output ``<layer>.hT`` (``.cT``): the step graph. With
``expose_hidden`` the state is the layer's own bottoms/tops and nothing is carried.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from rnnrt.importers.caffe import checks
from rnnrt.importers.caffe.context import ImportContext, add_node
from rnnrt.importers.caffe.registry import add_converter
from rnnrt.errors import ModelImportError, fmt

# Caffe's LSTM gate blocks along the 4H axis are [i, f, o, g]; ONNX's LSTM op would want [i, o, f, c].
# We never use the ONNX LSTM op, so the blocks are split in Caffe's order.
_CAFFE_GATES = ("i", "f", "o", "g")


class _Emitter:
    """Emits nodes into one graph (the main graph or a Scan body) with names unique in the model."""

    def __init__(self, ctx: ImportContext, graph: gs.Graph, prefix: str) -> None:
        self.ctx, self.graph, self.prefix = ctx, graph, prefix

    def __call__(self, op: str, inputs: list, attrs: dict | None = None, *, out: gs.Variable | None = None, n_out: int = 1):
        outs = [out if out is not None and i == 0 else gs.Variable(self.ctx.unique(f"{self.prefix}/{op}")) for i in range(n_out)]
        add_node(self.graph, op, self.ctx.unique(f"{self.prefix}/{op}_node"), inputs, outs, attrs)
        return outs[0] if n_out == 1 else outs


def _lstm_cell(e: _Emitter, ctx: ImportContext, gx, cont, h, c, w_hc, hidden: int, h_out=None, c_out=None):
    hc = e("Mul", [h, cont])
    cc = e("Mul", [c, cont])
    gates = e("Add", [gx, e("MatMul", [hc, w_hc])])
    split = ctx.ints([hidden] * 4, f"{e.prefix}/gate_sizes")
    i, f, o, g = e("Split", [gates, split], {"axis": -1}, n_out=4)
    i, f, o, g = e("Sigmoid", [i]), e("Sigmoid", [f]), e("Sigmoid", [o]), e("Tanh", [g])
    c_new = e("Add", [e("Mul", [f, cc]), e("Mul", [i, g])], out=c_out)
    h_new = e("Mul", [o, e("Tanh", [c_new])], out=h_out)
    return h_new, c_new


def _rnn_cell(e: _Emitter, ctx: ImportContext, gx, cont, h, w_hh, h_out=None):
    hc = e("Mul", [h, cont])
    return e("Tanh", [e("Add", [gx, e("MatMul", [hc, w_hh])])], out=h_out)


def _check_shape(layer, what: str, found: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if tuple(found) != tuple(expected):
        raise ModelImportError(
            fmt(
                f"Layer {layer.name!r} ({layer.type}) {what}",
                f"Has shape {list(found)}",
                f"Expected {list(expected)}.",
            )
        )


def _recurrent(layer, ctx: ImportContext, kind: str) -> list:
    p = layer.param.recurrent_param
    n_state = 2 if kind == "LSTM" else 1
    expose = bool(p.expose_hidden)
    n_exposed = n_state if expose else 0
    xs = ctx.bottoms(layer, (2 + n_exposed, 3 + n_exposed))
    static = len(xs) == 3 + n_exposed
    x, cont = xs[0], xs[1]
    x_static = xs[2] if static else None
    h0s = xs[2 + static :]
    xshape = ctx.shape(x)
    if len(xshape) < 3:
        raise ModelImportError(
            fmt(f"Layer {layer.name!r} ({kind})", f"Input x {layer.bottoms[0]!r} has shape {list(xshape)}", "Expected T x N x ... (at least 3 axes).")
        )
    t, n = xshape[0], xshape[1]
    checks.positive(layer, f"T (dim 0 of bottom {layer.bottoms[0]!r})", t)
    checks.positive(layer, f"N (dim 1 of bottom {layer.bottoms[0]!r})", n)
    _check_shape(layer, f"cont {layer.bottoms[1]!r}", ctx.shape(cont), (t, n))
    if ctx.dynamic_batch and ctx.batch_axis(x) != 1:
        raise ModelImportError(
            fmt(
                f"Layer {layer.name!r} ({kind})",
                f"Input x {layer.bottoms[0]!r} does not carry the batch on axis 1 (it is on axis {ctx.batch_axis(x)})",
                "Dynamic batch needs x as T x N x ...: the streams must reach axis 1 through every layer before it.",
            )
        )
    # The streams of x, cont and the state are the N plain rows of axis 1.
    ctx.set_streams(n, f"Input x {layer.bottoms[0]!r} of {layer.name!r}")
    for b, var, axis in ((layer.bottoms[0], x, 1), (layer.bottoms[1], cont, 1)):
        rows = ctx.rows(var) if ctx.batch_axis(var) == axis else None
        if rows is not None and not ctx.decide(rows, (1, 1), f"{b!r}"):
            ctx.cannot_follow(
                f"Bottom {b!r} holds the streams folded with other axes (fold {rows.fold}) on axis {axis}",
                "A recurrent layer reads T x N x ...: reshape the folded rows to T x N first.",
            )
    hidden = int(p.num_output)
    if hidden <= 0:
        raise ModelImportError(fmt(f"Layer {layer.name!r} ({kind})", "recurrent_param.num_output is not set", "Expected a positive hidden size."))
    d = math.prod(xshape[2:])
    g = 4 * hidden if kind == "LSTM" else hidden
    expected = [(g, d), (g,)]
    if static:
        sshape = ctx.shape(x_static)
        if len(sshape) < 2 or sshape[0] != n:
            raise ModelImportError(
                fmt(f"Layer {layer.name!r} ({kind})", f"Static input {layer.bottoms[2]!r} has shape {list(sshape)}", f"Expected N x ... with N = {n}.")
            )
        ds = math.prod(sshape[1:])
        expected.append((g, ds))
    expected.append((g, hidden))
    if kind == "RNN":
        expected += [(hidden, hidden), (hidden,)]
    blobs = ctx.weights(layer, expected, kinds=["weight", "bias"] + ["weight"] * (static + 1) + (["weight", "bias"] if kind == "RNN" else []))
    w_x, b_x = blobs[0], blobs[1]
    w_static = blobs[2] if static else None
    w_h = blobs[2 + static]
    name = layer.name

    # Input projection of all time steps at once: (T, N, D) @ (D, G) + b.
    x3 = ctx.reshape(x, (t, n, d), 1, name=f"{name}/x")
    gx = ctx.op("MatMul", [x3, ctx.const(w_x.T, f"{name}/W_x")], shape=(t, n, g), batch_axis=1, name=f"{name}/Wx")
    gx = ctx.op("Add", [gx, ctx.const(b_x, f"{name}/b")], shape=(t, n, g), batch_axis=1, name=f"{name}/Wx_b")
    if static:
        xs2 = ctx.reshape(x_static, (n, ds), 0, name=f"{name}/x_static")
        gs_ = ctx.op("MatMul", [xs2, ctx.const(w_static.T.copy(), f"{name}/W_static")], shape=(n, g), batch_axis=0, name=f"{name}/Wstatic")
        gx = ctx.op("Add", [gx, gs_], shape=(t, n, g), batch_axis=1, name=f"{name}/Wx_static")
    cont3 = ctx.op("Unsqueeze", [cont, ctx.ints([2], f"{name}/axis2")], shape=(t, n, 1), batch_axis=1, name=f"{name}/cont")

    # Initial state: exposed bottoms (1 x N x H) or new state inputs (N x H); final state tensors.
    suffixes = ("h", "c")[:n_state]
    if expose:
        for b, h0 in zip(layer.bottoms[2 + static :], h0s):
            _check_shape(layer, f"initial state {b!r}", ctx.shape(h0), (1, n, hidden))
        init = [ctx.op("Squeeze", [h0, ctx.ints([0], f"{name}/axis0")], shape=(n, hidden), batch_axis=0) for h0 in h0s]
        finals = [ctx.variable(f"{name}/{s}T", (n, hidden), 0) for s in suffixes]
    else:
        init = [ctx.add_state(f"{name}.{s}0", f"{name}.{s}T", (n, hidden), 0) for s in suffixes]
        finals = [ctx.exact_variable(f"{name}.{s}T", (n, hidden), 0) for s in suffixes]
    w_h_t = ctx.const(w_h.T.copy(), f"{name}/W_h")

    if t == 1:
        e = _Emitter(ctx, ctx.graph, name)
        gx1 = ctx.op("Squeeze", [gx, ctx.ints([0], f"{name}/axis0")], shape=(n, g), batch_axis=0)
        c1 = ctx.op("Squeeze", [cont3, ctx.ints([0], f"{name}/axis0")], shape=(n, 1), batch_axis=0)
        if kind == "LSTM":
            _lstm_cell(e, ctx, gx1, c1, init[0], init[1], w_h_t, hidden, *finals)
        else:
            _rnn_cell(e, ctx, gx1, c1, init[0], w_h_t, finals[0])
        h_all = ctx.op("Unsqueeze", [finals[0], ctx.ints([0], f"{name}/axis0")], shape=(1, n, hidden), batch_axis=1)
    else:
        body = gs.Graph(opset=ctx.graph.opset, name=ctx.unique(f"{name}/scan_body"))
        e = _Emitter(ctx, body, f"{name}/step")
        st_in = [gs.Variable(ctx.unique(f"{name}/step/{s}_prev"), dtype=np.float32, shape=None) for s in suffixes]
        gx_t = gs.Variable(ctx.unique(f"{name}/step/gx"), dtype=np.float32)
        cont_t = gs.Variable(ctx.unique(f"{name}/step/cont"), dtype=np.float32)
        if kind == "LSTM":
            st_out = list(_lstm_cell(e, ctx, gx_t, cont_t, st_in[0], st_in[1], w_h_t, hidden))
        else:
            st_out = [_rnn_cell(e, ctx, gx_t, cont_t, st_in[0], w_h_t)]
        h_scan = e("Identity", [st_out[0]])
        for v in st_out + [h_scan]:
            v.dtype = np.float32
        body.inputs = st_in + [gx_t, cont_t]
        body.outputs = st_out + [h_scan]
        h_all = ctx.variable(f"{name}/h_all", (t, n, hidden), 1)
        add_node(ctx.graph, "Scan", ctx.unique(f"{name}/Scan"), init + [gx, cont3], finals + [h_all],
                 {"body": body, "num_scan_inputs": 2})

    if not expose:
        for pair, f in zip(ctx.states[-n_state:], finals):
            ctx.state_outputs[pair.output] = f
    if kind == "RNN":
        w_o, b_o = blobs[-2], blobs[-1]
        o = ctx.op("MatMul", [h_all, ctx.const(w_o.T, f"{name}/W_o")], shape=(t, n, hidden), batch_axis=1)
        o = ctx.op("Add", [o, ctx.const(b_o, f"{name}/b_o")], shape=(t, n, hidden), batch_axis=1)
        h_all = ctx.op("Tanh", [o], shape=(t, n, hidden), batch_axis=1, name=layer.tops[0])
    if expose:
        outs = [h_all] + [
            ctx.op("Unsqueeze", [f, ctx.ints([0], f"{name}/axis0")], shape=(1, n, hidden), batch_axis=1, name=top)
            for f, top in zip(finals, layer.tops[1:])
        ]
        if len(layer.tops) != 1 + n_state:
            raise ModelImportError(
                fmt(f"Layer {layer.name!r} ({kind})", f"Has {len(layer.tops)} tops with expose_hidden", f"Expected {1 + n_state}: output, then the final state.")
            )
        return outs
    if len(layer.tops) != 1:
        raise ModelImportError(fmt(f"Layer {layer.name!r} ({kind})", f"Has {len(layer.tops)} tops", "Expected 1 (set expose_hidden to get the final state as tops)."))
    return [h_all]


@add_converter("caffe", "LSTM")
def _(layer, ctx: ImportContext) -> list:
    return _recurrent(layer, ctx, "LSTM")


@add_converter("caffe", "RNN")
def _(layer, ctx: ImportContext) -> list:
    return _recurrent(layer, ctx, "RNN")
