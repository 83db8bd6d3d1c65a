"""Caffe-style LSTM step graphs (cont multiplies h and c; gate order i, f, o, g).

T=1 cell form (``lstm_t1``, ``lstm_dynamic_batch``, ``lstm2_bench``)::

    data (1,B,I) --Squeeze--> x (B,I)            cont (1,B) --Transpose--> cu (B,1)
    lstm1.h0 * cu -> hp    lstm1.c0 * cu -> cp
    gates = x @ W^T + hp @ R^T + b  --Split(4)--> i f o g
    c = sig(f)*cp + sig(i)*tanh(g) -> lstm1.cT      h = sig(o)*tanh(c) -> lstm1.hT
    h --Unsqueeze--> lstm1 (1,B,H)                  (layer 2 reads h of layer 1)

Sequence form (``lstm_scan``): the same cell is the body of one ONNX Scan over (data, cont) with the
states as Scan state variables.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnrt.ir.stepgraph import Continuation, StatePair, StepGraph, TensorSpec
from tests.models.registry import TinyModel, register

OPSET = 17

Dim = Union[int, str]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _weights(input_size: int, hidden: list[int], seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    layers = []
    in_size = input_size
    for h in hidden:
        scale = 1.0 / np.sqrt(h)
        layers.append(
            {
                "W": rng.uniform(-scale, scale, (4 * h, in_size)).astype(np.float32),
                "b": rng.uniform(-scale, scale, (4 * h,)).astype(np.float32),
                "R": rng.uniform(-scale, scale, (4 * h, h)).astype(np.float32),
            }
        )
        in_size = h
    return layers


def _cell_nodes(
    prefix: str, x: str, cu: str, h_in: str, c_in: str, h_out: str, c_out: str, w: dict, hidden: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    p = prefix
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(w["W"].T), f"{p}/WT"),
        numpy_helper.from_array(np.ascontiguousarray(w["R"].T), f"{p}/RT"),
        numpy_helper.from_array(w["b"], f"{p}/b"),
        numpy_helper.from_array(np.array([hidden] * 4, np.int64), f"{p}/split"),
    ]
    n = helper.make_node
    nodes = [
        n("Mul", [h_in, cu], [f"{p}/hp"]),
        n("Mul", [c_in, cu], [f"{p}/cp"]),
        n("MatMul", [x, f"{p}/WT"], [f"{p}/xw"]),
        n("MatMul", [f"{p}/hp", f"{p}/RT"], [f"{p}/hr"]),
        n("Add", [f"{p}/xw", f"{p}/hr"], [f"{p}/g0"]),
        n("Add", [f"{p}/g0", f"{p}/b"], [f"{p}/gates"]),
        n("Split", [f"{p}/gates", f"{p}/split"], [f"{p}/i", f"{p}/f", f"{p}/o", f"{p}/g"], axis=1),
        n("Sigmoid", [f"{p}/i"], [f"{p}/si"]),
        n("Sigmoid", [f"{p}/f"], [f"{p}/sf"]),
        n("Sigmoid", [f"{p}/o"], [f"{p}/so"]),
        n("Tanh", [f"{p}/g"], [f"{p}/tg"]),
        n("Mul", [f"{p}/sf", f"{p}/cp"], [f"{p}/fc"]),
        n("Mul", [f"{p}/si", f"{p}/tg"], [f"{p}/ig"]),
        n("Add", [f"{p}/fc", f"{p}/ig"], [c_out]),
        n("Tanh", [c_out], [f"{p}/tc"]),
        n("Mul", [f"{p}/so", f"{p}/tc"], [h_out]),
    ]
    return nodes, inits


def _reference(layers: list[dict], names: list[str]):
    def run(feeds: dict, state: dict | None):
        x = np.asarray(feeds["data"], np.float64)
        cont = np.asarray(feeds["cont"], np.float64)
        T, B = x.shape[0], x.shape[1]
        st = {}
        for name, w in zip(names, layers):
            H = w["R"].shape[1]
            for k in ("h0", "c0"):
                v = None if state is None else state.get(f"{name}.{k}")
                st[f"{name}.{k}"] = np.zeros((B, H)) if v is None else np.asarray(v, np.float64)
        ys = []
        for t in range(T):
            inp = x[t]
            cu = cont[t][:, None]
            for name, w in zip(names, layers):
                hp = st[f"{name}.h0"] * cu
                cp = st[f"{name}.c0"] * cu
                g = inp @ w["W"].T.astype(np.float64) + hp @ w["R"].T.astype(np.float64) + w["b"]
                i, f, o, gg = np.split(g, 4, axis=1)
                c = _sigmoid(f) * cp + _sigmoid(i) * np.tanh(gg)
                h = _sigmoid(o) * np.tanh(c)
                st[f"{name}.h0"], st[f"{name}.c0"] = h, c
                inp = h
            ys.append(inp)
        return {names[-1]: np.stack(ys)}, st

    return run


def lstm_step_graph(
    input_size: int = 5,
    hidden: tuple[int, ...] = (7,),
    batch: Dim = 1,
    time: Dim = 1,
    scan: bool = False,
    seed: int = 0,
    name: str = "lstm",
) -> TinyModel:
    """Builds a stacked Caffe-style LSTM step graph.

    Args:
        input_size (int): Features per frame. Defaults to 5.
        hidden (tuple[int, ...]): Hidden size of each layer (layers are named lstm1, lstm2 ...).
        batch (int | str): Batch dim; a string makes it dynamic. Defaults to 1.
        time (int | str): Time steps per call; must be 1 unless ``scan``. Defaults to 1.
        scan (bool): Wrap the cell in an ONNX Scan over time. Defaults to False.
        seed (int): Weight seed.
        name (str): Registry name recorded on the TinyModel.
    """
    if not scan and time != 1:
        raise ValueError("the cell form has T=1; use scan=True for T>1")
    layers = _weights(input_size, list(hidden), seed)
    names = [f"lstm{i + 1}" for i in range(len(hidden))]
    f32 = TensorProto.FLOAT
    vi = helper.make_tensor_value_info
    n = helper.make_node
    state_inputs, state_outputs, states = [], [], []
    for nm, h in zip(names, hidden):
        for k, kout in (("h0", "hT"), ("c0", "cT")):
            state_inputs.append(vi(f"{nm}.{k}", f32, [batch, h]))
            state_outputs.append(vi(f"{nm}.{kout}", f32, [batch, h]))
            states.append(StatePair(f"{nm}.{k}", f"{nm}.{kout}", (batch, h), "float32", 0))
    out_name = names[-1]
    inputs = [vi("data", f32, [time, batch, input_size]), vi("cont", f32, [time, batch])]
    outputs = [vi(out_name, f32, [time, batch, hidden[-1]])]

    if not scan:
        nodes = [
            n("Squeeze", ["data", "axes0"], ["x"]),
            n("Transpose", ["cont"], ["cu"], perm=[1, 0]),
        ]
        inits = [numpy_helper.from_array(np.array([0], np.int64), "axes0")]
        x = "x"
        for nm, h, w in zip(names, hidden, layers):
            cn, ci = _cell_nodes(nm, x, "cu", f"{nm}.h0", f"{nm}.c0", f"{nm}.hT", f"{nm}.cT", w, h)
            nodes += cn
            inits += ci
            x = f"{nm}.hT"
        nodes.append(n("Unsqueeze", [x, "axes0"], [out_name]))
    else:
        body_nodes = [n("Unsqueeze", ["cont_t", "axes1"], ["cu"])]
        body_inits = [numpy_helper.from_array(np.array([1], np.int64), "axes1")]
        x = "x_t"
        body_in, body_out = [], []
        for nm, h, w in zip(names, hidden, layers):
            cn, ci = _cell_nodes(nm, x, "cu", f"{nm}/h_in", f"{nm}/c_in", f"{nm}/h_out", f"{nm}/c_out", w, h)
            body_nodes += cn
            body_inits += ci
            body_in += [vi(f"{nm}/h_in", f32, [batch, h]), vi(f"{nm}/c_in", f32, [batch, h])]
            body_out += [vi(f"{nm}/h_out", f32, [batch, h]), vi(f"{nm}/c_out", f32, [batch, h])]
            x = f"{nm}/h_out"
        body_nodes.append(n("Identity", [x], ["y_t"]))
        body = helper.make_graph(
            body_nodes,
            "cell",
            body_in + [vi("x_t", f32, [batch, input_size]), vi("cont_t", f32, [batch])],
            body_out + [vi("y_t", f32, [batch, hidden[-1]])],
            body_inits,
        )
        nodes = [
            n(
                "Scan",
                [s.input for s in states] + ["data", "cont"],
                [s.output for s in states] + [out_name],
                body=body,
                num_scan_inputs=2,
            )
        ]
        inits = []
    graph = helper.make_graph(nodes, name, inputs + state_inputs, outputs + state_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    model.ir_version = 8
    onnx.checker.check_model(model)
    step = StepGraph(
        model=model,
        inputs=[
            TensorSpec("data", "float32", (time, batch, input_size), 1),
            TensorSpec("cont", "float32", (time, batch), 1),
        ],
        outputs=[TensorSpec(out_name, "float32", (time, batch, hidden[-1]), 1)],
        states=states,
        continuation=Continuation("cont", batch_axis=1, time_axis=0),
        source={"format": "test", "model": name},
    )
    return TinyModel(name, step, {nm: w for nm, w in zip(names, layers)}, _reference(layers, names))


@register("lstm_t1")
def _(batch: int = 1, input_size: int = 5, hidden: int = 7, seed: int = 0) -> TinyModel:
    return lstm_step_graph(input_size, (hidden,), batch=batch, seed=seed, name="lstm_t1")


@register("lstm_scan")
def _(batch: int = 3, time: Dim = 4, input_size: int = 5, hidden: int = 7, seed: int = 1) -> TinyModel:
    return lstm_step_graph(input_size, (hidden,), batch=batch, time=time, scan=True, seed=seed, name="lstm_scan")


@register("lstm_dynamic_batch")
def _(input_size: int = 5, hidden: int = 7, seed: int = 2) -> TinyModel:
    return lstm_step_graph(input_size, (hidden,), batch="batch", seed=seed, name="lstm_dynamic_batch")


@register("lstm2_bench")
def _(batch: Dim = 1, input_size: int = 256, hidden: int = 512, seed: int = 3) -> TinyModel:
    return lstm_step_graph(input_size, (hidden, hidden), batch=batch, seed=seed, name="lstm2_bench")
