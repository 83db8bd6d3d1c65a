"""A stand-in device engine for GPU tests: Caffe LSTM/RNN nets computed with torch (test-only).

TensorRT cannot run on the lent H100 (TensorRT-RTX refuses sm90; full TensorRT is not installable), so
the GPU Session is proven with this engine instead. It implements
:class:`rnnrt.engines.base.BaseDeviceEngine` exactly like :class:`rnnrt.engines.trt.TrtEngine`: it reads
the device pointers the Session binds (wrapped as torch tensors through ``__cuda_array_interface__``),
writes its outputs into the Session's buffers, and only enqueues on the Session's stream
(``torch.cuda.ExternalStream``). Every intermediate lives in per-context workspaces allocated on the
first run, and every op writes with ``out=``/in place, so a run allocates nothing and can be captured
into a CUDA graph by the Session.

Supported layers: Input, LSTM, RNN (with static input, not expose_hidden), InnerProduct, Softmax.
Bindings follow the Caffe converter: inputs are the net inputs plus ``<layer>.h0``/``<layer>.c0``,
outputs the unconsumed tops plus ``<layer>.hT``/``<layer>.cT``.

With ``device="cpu"`` the same math runs on CPU tensors through :meth:`StandinEngine.forward` (used to
check it against the golden data on machines without a GPU).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from rnnrt.importers.caffe.reader import load_net
from rnnrt.engines.base import BaseDeviceEngine, Binding, DeviceTensor
from rnnrt.errors import UnsupportedOpError, fmt

_TORCH_DTYPES: dict = {}


class _Layer:
    __slots__ = ("name", "type", "bottoms", "tops", "w", "axis", "hidden")

    def __init__(self, name: str, type_: str, bottoms: list, tops: list, w: list, axis: int = 1, hidden: int = 0):
        self.name, self.type, self.bottoms, self.tops, self.w = name, type_, bottoms, tops, w
        self.axis, self.hidden = axis, hidden


class _Context:
    def __init__(self) -> None:
        self.wrapped: dict[tuple, Any] = {}
        self.work: dict[tuple, dict] = {}
        self.streams: dict[int, Any] = {}


class StandinEngine(BaseDeviceEngine):
    """Computes a Caffe LSTM/RNN net with torch on the GPU, over the Session's device buffers.

    Args:
        prototxt (str | os.PathLike): The deploy prototxt.
        caffemodel (str | os.PathLike): Its weights.
        device (str): ``"cuda"`` (default) or ``"cpu"`` (math checks only; no device bindings).
        name (str | None): Name for messages.
    """

    def __init__(self, prototxt: Any, caffemodel: Any, device: str = "cuda", name: Optional[str] = None) -> None:
        super().__init__(name)
        self.prototxt, self.caffemodel, self.device = prototxt, caffemodel, device
        self.layers: list[_Layer] = []
        self._inputs: list[Binding] = []
        self._outputs: list[Binding] = []
        self._input_shapes: dict[str, tuple] = {}

    # Lifecycle.
    def activate_impl(self) -> None:
        import torch

        self._torch = torch
        net = load_net(self.prototxt, self.caffemodel)
        consumed: set = set()
        self.layers = []
        inputs = {n: tuple(int(d) for d in shape) for n, shape in net.inputs.items()}
        for layer in net.layers:
            if layer.type == "Input":
                shapes = layer.param.input_param.shape
                for k, top in enumerate(layer.tops):
                    inputs[top] = tuple(int(d) for d in shapes[min(k, len(shapes) - 1)].dim)
                continue
            if layer.type not in ("LSTM", "RNN", "InnerProduct", "Softmax"):
                raise UnsupportedOpError(fmt(f"Layer {layer.name!r}", f"Type {layer.type!r} is not supported by the "
                                             "stand-in engine", "Supported: LSTM, RNN, InnerProduct, Softmax."))
            w = [torch.as_tensor(np.ascontiguousarray(b, dtype=np.float32)).to(self.device) for b in layer.blobs]
            axis, hidden = 1, 0
            if layer.type in ("LSTM", "RNN"):
                rp = layer.param.recurrent_param
                if rp.expose_hidden:
                    raise UnsupportedOpError(fmt(f"Layer {layer.name!r}", "expose_hidden is not supported by the stand-in"))
                hidden = int(rp.num_output)
            elif layer.type == "InnerProduct":
                ip = layer.param.inner_product_param
                axis = int(ip.axis)
                if ip.transpose:
                    w[0] = w[0].t().contiguous()
                if not ip.bias_term:
                    w = [w[0], torch.zeros(w[0].shape[0], device=self.device)]
            else:
                axis = int(layer.param.softmax_param.axis)
            self.layers.append(_Layer(layer.name, layer.type, list(layer.bottoms), list(layer.tops), w, axis, hidden))
            consumed.update(layer.bottoms)
        self._input_shapes = inputs
        f32 = np.dtype(np.float32)
        self._inputs = [Binding(n, f32, s) for n, s in self._input_shapes.items()]
        shapes = self._infer(self._input_shapes)
        tops = [t for l in self.layers for t in l.tops if t not in consumed]
        self._outputs = [Binding(t, f32, shapes[t]) for t in tops]
        for l in self.layers:
            if l.type in ("LSTM", "RNN"):
                n = self._input_shapes[l.bottoms[1]][1] if l.bottoms[1] in self._input_shapes else shapes[l.bottoms[1]][1]
                names = ("h", "c") if l.type == "LSTM" else ("h",)
                for k in names:
                    self._inputs.append(Binding(f"{l.name}.{k}0", f32, (n, l.hidden)))
                    self._outputs.append(Binding(f"{l.name}.{k}T", f32, (n, l.hidden)))

    def deactivate_impl(self) -> None:
        self.layers = []

    def input_bindings_impl(self) -> list[Binding]:
        return list(self._inputs)

    def output_bindings_impl(self) -> list[Binding]:
        return list(self._outputs)

    def create_context_impl(self) -> _Context:
        return _Context()

    def destroy_context_impl(self, context: _Context) -> None:
        context.wrapped.clear()
        context.work.clear()
        context.streams.clear()

    # Shapes.
    def _infer(self, input_shapes: Mapping[str, tuple]) -> dict[str, tuple]:
        shapes = dict(input_shapes)
        for l in self.layers:
            x = shapes[l.bottoms[0]]
            if l.type in ("LSTM", "RNN"):
                shapes[l.tops[0]] = (x[0], x[1], l.hidden)
            elif l.type == "InnerProduct":
                shapes[l.tops[0]] = tuple(x[: l.axis]) + (int(l.w[0].shape[0]),)
            else:
                shapes[l.tops[0]] = tuple(x)
        return shapes

    def output_shapes_impl(self, context: Any, input_shapes: Mapping[str, tuple]) -> dict[str, tuple]:
        shapes = self._infer({n: tuple(input_shapes[n]) for n in self._input_shapes})
        out = {b.name: shapes[b.name] for b in self._outputs if b.name in shapes}
        for b in self._outputs:
            if b.name not in out:
                out[b.name] = tuple(input_shapes[b.name[:-1] + "0"])
        return out

    # Running.
    def _wrap(self, context: _Context, t: DeviceTensor) -> Any:
        key = (t.ptr, tuple(t.shape), np.dtype(t.dtype).str)
        tensor = context.wrapped.get(key)
        if tensor is None:
            from rnnrt.cuda import DeviceArray

            tensor = self._torch.as_tensor(DeviceArray(t.ptr, t.dtype, t.shape), device="cuda")
            context.wrapped[key] = tensor
        return tensor

    def enqueue_impl(self, context: _Context, feeds: Mapping[str, DeviceTensor], outputs: Mapping[str, DeviceTensor],
                     stream: int) -> None:
        torch = self._torch
        ext = context.streams.get(stream)
        if ext is None:
            ext = context.streams[stream] = torch.cuda.ExternalStream(stream)
        ins = {n: self._wrap(context, t) for n, t in feeds.items()}
        outs = {n: self._wrap(context, t) for n, t in outputs.items()}
        with torch.cuda.stream(ext):
            self.forward(ins, outs, context.work)

    def forward(self, ins: Mapping[str, Any], outs: Mapping[str, Any], work: Optional[dict] = None) -> None:
        """Runs the net: reads ``ins`` (inputs and state inputs), writes into ``outs`` (every output).

        Args:
            ins (Mapping[str, torch.Tensor]): Every input binding.
            outs (Mapping[str, torch.Tensor]): Every output binding's destination.
            work (dict | None): Workspace cache (keyed by shapes); reusing it makes runs allocation-free.
        """
        torch = self._torch
        work = {} if work is None else work
        key = tuple((n, tuple(t.shape)) for n, t in ins.items())
        ws = work.get(key)
        first = ws is None
        if first:
            ws = work[key] = {}
        blobs = dict(ins)

        def buf(name: str, shape: tuple) -> Any:
            if first:
                ws[name] = torch.empty(shape, dtype=torch.float32, device=next(iter(ins.values())).device)
            return ws[name]

        for l in self.layers:
            x = blobs[l.bottoms[0]]
            top = l.tops[0]
            if l.type in ("LSTM", "RNN"):
                T, N, H = int(x.shape[0]), int(x.shape[1]), l.hidden
                y = outs[top] if top in outs else buf(f"{top}:y", (T, N, H))
                cont = blobs[l.bottoms[1]]
                static = blobs[l.bottoms[2]] if len(l.bottoms) > 2 else None
                if l.type == "LSTM":
                    self._lstm(l, x.reshape(T * N, -1), cont, static, ins[f"{l.name}.h0"], ins[f"{l.name}.c0"], y,
                               outs[f"{l.name}.hT"], outs[f"{l.name}.cT"], buf, T, N, H)
                else:
                    self._rnn(l, x.reshape(T * N, -1), cont, static, ins[f"{l.name}.h0"], y, outs[f"{l.name}.hT"],
                              buf, T, N, H)
                blobs[top] = y
            elif l.type == "InnerProduct":
                rows = int(np.prod(x.shape[: l.axis]))
                K = int(l.w[0].shape[0])
                y = outs[top] if top in outs else buf(f"{top}:y", tuple(x.shape[: l.axis]) + (K,))
                torch.addmm(l.w[1], x.reshape(rows, -1), l.w[0].t(), out=y.view(rows, K))
                blobs[top] = y
            else:
                y = outs[top] if top in outs else buf(f"{top}:y", tuple(x.shape))
                red = list(x.shape)
                red[l.axis] = 1
                m = buf(f"{top}:max", tuple(red))
                s = buf(f"{top}:sum", tuple(red))
                torch.amax(x, dim=l.axis, keepdim=True, out=m)
                torch.sub(x, m, out=y)
                y.exp_()
                torch.sum(y, dim=l.axis, keepdim=True, out=s)
                y.div_(s)
                blobs[top] = y

    def _gates_x(self, l: _Layer, x2: Any, static: Any, bias: Any, w_x: Any, w_s: Any, buf: Any, T: int, N: int,
                 G: int) -> Any:
        torch = self._torch
        gx = buf(f"{l.name}:gx", (T * N, G))
        torch.addmm(bias, x2, w_x.t(), out=gx)
        if static is not None:
            gs = buf(f"{l.name}:gs", (N, G))
            torch.mm(static.reshape(N, -1), w_s.t(), out=gs)
            gx.view(T, N, G).add_(gs)
        return gx.view(T, N, G)

    def _lstm(self, l: _Layer, x2: Any, cont: Any, static: Any, h0: Any, c0: Any, y: Any, hT: Any, cT: Any, buf: Any,
              T: int, N: int, H: int) -> None:
        # Caffe LSTM blobs: W_xc (4H x I), b_c (4H), [W_xc_static (4H x S)], W_hc (4H x H); gates i, f, o, g.
        torch = self._torch
        w_x, b = l.w[0], l.w[1]
        w_s = l.w[2] if static is not None else None
        w_h = l.w[-1]
        gx = self._gates_x(l, x2, static, b, w_x, w_s, buf, T, N, 4 * H)
        hc, g, tmp, tc = (buf(f"{l.name}:{k}", s) for k, s in (("hc", (N, H)), ("g", (N, 4 * H)), ("tmp", (N, H)),
                                                                ("tc", (N, H))))
        sig, tg = buf(f"{l.name}:sig", (N, 3 * H)), buf(f"{l.name}:tg", (N, H))
        cbuf = buf(f"{l.name}:c", (2, N, H))
        h_prev, c_prev = h0, c0
        for t in range(T):
            ct = cont[t].reshape(N, 1)
            torch.mul(h_prev, ct, out=hc)
            torch.addmm(gx[t], hc, w_h.t(), out=g)
            torch.sigmoid(g[:, : 3 * H], out=sig)
            torch.tanh(g[:, 3 * H:], out=tg)
            c_new = cbuf[t % 2]
            torch.mul(c_prev, ct, out=c_new)
            c_new.mul_(sig[:, H: 2 * H])
            torch.mul(sig[:, :H], tg, out=tmp)
            c_new.add_(tmp)
            torch.tanh(c_new, out=tc)
            torch.mul(sig[:, 2 * H:], tc, out=y[t])
            h_prev, c_prev = y[t], c_new
        hT.copy_(h_prev)
        cT.copy_(c_prev)

    def _rnn(self, l: _Layer, x2: Any, cont: Any, static: Any, h0: Any, y: Any, hT: Any, buf: Any, T: int, N: int,
             H: int) -> None:
        # Caffe RNN blobs: W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o.
        torch = self._torch
        w_x, b_h = l.w[0], l.w[1]
        w_s = l.w[2] if static is not None else None
        w_hh, w_ho, b_o = l.w[-3], l.w[-2], l.w[-1]
        gx = self._gates_x(l, x2, static, b_h, w_x, w_s, buf, T, N, H)
        hc = buf(f"{l.name}:hc", (N, H))
        hs = buf(f"{l.name}:hs", (T, N, H))
        h_prev = h0
        for t in range(T):
            torch.mul(h_prev, cont[t].reshape(N, 1), out=hc)
            torch.addmm(gx[t], hc, w_hh.t(), out=hs[t])
            hs[t].tanh_()
            h_prev = hs[t]
        torch.addmm(b_o, hs.view(T * N, H), w_ho.t(), out=y.view(T * N, H))
        y.tanh_()
        hT.copy_(h_prev)


class PerturbedStandinEngine(StandinEngine):
    """The stand-in with ``delta`` added to output ``output`` from the ``step``-th enqueue of a context on
    (a deliberately wrong engine: ``rnnrt verify`` must fail at that step and output)."""

    def __init__(self, *args: Any, step: int = 0, output: str = "", delta: float = 1e-2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.perturb_step, self.perturb_output, self.delta = int(step), output, float(delta)
        self.capturable = False  # the step count lives on the host

    def enqueue_impl(self, context: _Context, feeds: Mapping[str, DeviceTensor], outputs: Mapping[str, DeviceTensor],
                     stream: int) -> None:
        super().enqueue_impl(context, feeds, outputs, stream)
        count = getattr(context, "count", 0)
        context.count = count + 1
        if count >= self.perturb_step and self.perturb_output in outputs:
            with self._torch.cuda.stream(context.streams[stream]):
                self._wrap(context, outputs[self.perturb_output]).add_(self.delta)


def verify_engine(config: Any, step: Optional[str] = None, output: Optional[str] = None, delta: str = "1e-2",
                  device: str = "cuda") -> Any:
    """``rnnrt verify --backends tests.engines.standin:verify_engine[:step=K:output=NAME]``: a factory of the
    stand-in GPU engine for a config converted from Caffe (the prototxt and caffemodel come from the
    config's ``source``); with ``step``/``output`` the perturbed stand-in."""
    src = config.source
    if src.get("format") != "caffe" or "prototxt" not in src or "caffemodel" not in src:
        raise UnsupportedOpError(fmt("Stand-in engine", "Needs a config converted from Caffe (source.prototxt/caffemodel)"))
    proto, weights = src["prototxt"], src["caffemodel"]
    if step is not None or output is not None:
        return lambda: PerturbedStandinEngine(proto, weights, step=int(step or 0), output=output or "", delta=float(delta),
                                              device=device)
    return lambda: StandinEngine(proto, weights, device=device)
