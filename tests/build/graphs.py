"""Tiny hand-built Caffe-style LSTM step graphs for the build tests (a helper, not a test module).

tests/build/test_precision.py rewrites them for fp16/bf16; tests/build/test_build.py builds TensorRT
engines from them.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper  # noqa: F401

# ---------------------------------------------------------------------------------------------------
# Tiny step graphs.
#
# "cell" (T=1):                                     "scan" (T>1):
#
#   data(1,N,I)  cont(1,N)  h0(N,H)  c0(N,H)          data(T,N,I) --MatMul W, +b--> xw(T,N,4H)
#      |            |  \______|________|                cont(T,N,1)     h0  c0
#   Squeeze     Transpose     Mul      Mul                   \    |      |   |
#      |            (N,1)      |        |                 Scan(body = cell on xw_t, cont_t)
#   MatMul W  +  MatMul R(h') + b -> Split i,f,o,g            |       |    |
#      sigmoid/tanh -> c = f*c' + i*g -> cT                    y      hT   cT
#                      h = o*tanh(c) -> hT, y = Unsqueeze(h)
#   optional head: logits = y @ Wo + bo -> prob = Softmax(logits)
# ---------------------------------------------------------------------------------------------------

OPSET = 17


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def _cell_nodes(prefix: str, x: str, cont: str, h: str, c: str, xw: str | None, H: int) -> tuple[list, str, str]:
    """Nodes of one Caffe LSTM step; returns (nodes, h_new, c_new). ``xw``: precomputed x@W + b."""
    p = prefix
    nodes = [
        helper.make_node("Mul", [h, cont], [f"{p}hc"]),
        helper.make_node("Mul", [c, cont], [f"{p}cc"]),
        helper.make_node("MatMul", [f"{p}hc", f"{p}R"], [f"{p}hr"]),
    ]
    if xw is None:
        nodes += [
            helper.make_node("MatMul", [x, f"{p}W"], [f"{p}xw0"]),
            helper.make_node("Add", [f"{p}xw0", f"{p}b"], [f"{p}xw"]),
        ]
        xw = f"{p}xw"
    nodes += [
        helper.make_node("Add", [xw, f"{p}hr"], [f"{p}g"]),
        helper.make_node("Split", [f"{p}g"], [f"{p}gi", f"{p}gf", f"{p}go", f"{p}gg"], axis=1, num_outputs=4)
        if OPSET >= 18
        else helper.make_node("Split", [f"{p}g", f"{p}split"], [f"{p}gi", f"{p}gf", f"{p}go", f"{p}gg"], axis=1),
        helper.make_node("Sigmoid", [f"{p}gi"], [f"{p}i"]),
        helper.make_node("Sigmoid", [f"{p}gf"], [f"{p}f"]),
        helper.make_node("Sigmoid", [f"{p}go"], [f"{p}o"]),
        helper.make_node("Tanh", [f"{p}gg"], [f"{p}u"]),
        helper.make_node("Mul", [f"{p}f", f"{p}cc"], [f"{p}fc"]),
        helper.make_node("Mul", [f"{p}i", f"{p}u"], [f"{p}iu"]),
        helper.make_node("Add", [f"{p}fc", f"{p}iu"], [f"{p}cn"]),
        helper.make_node("Tanh", [f"{p}cn"], [f"{p}tc"]),
        helper.make_node("Mul", [f"{p}o", f"{p}tc"], [f"{p}hn"]),
    ]
    return nodes, f"{p}hn", f"{p}cn"


def lstm_model(
    I: int = 5,
    H: int = 7,
    *,
    T: int = 1,
    batch: int | str = 1,
    head: int = 0,
    scan: bool = False,
    seed: int = 0,
    scale: float = 0.5,
) -> onnx.ModelProto:
    """A Caffe-style LSTM step graph named ``lstm1``: inputs data, cont, lstm1.h0, lstm1.c0; outputs
    lstm1 (or prob with a head), lstm1.hT, lstm1.cT. ``scan`` wraps the cell in an ONNX Scan over T."""
    rng = np.random.default_rng(seed)
    N = batch
    W = (rng.uniform(-scale, scale, (I, 4 * H))).astype(np.float32)
    R = (rng.uniform(-scale, scale, (H, 4 * H))).astype(np.float32)
    b = (rng.uniform(-scale, scale, (4 * H,))).astype(np.float32)
    inits = [_init("lstm1/split", np.array([H] * 4, np.int64))]
    ins = [
        helper.make_tensor_value_info("data", TensorProto.FLOAT, [T, N, I]),
        helper.make_tensor_value_info("cont", TensorProto.FLOAT, [T, N]),
        helper.make_tensor_value_info("lstm1.h0", TensorProto.FLOAT, [N, H]),
        helper.make_tensor_value_info("lstm1.c0", TensorProto.FLOAT, [N, H]),
    ]
    out_name = "lstm1" if not head else "lstm1.y"
    nodes: list = []
    if not scan:
        assert T == 1
        inits += [_init("lstm1/W", W), _init("lstm1/R", R), _init("lstm1/b", b), _init("axes0", np.array([0], np.int64))]
        nodes += [
            helper.make_node("Squeeze", ["data", "axes0"], ["x"]),
            helper.make_node("Transpose", ["cont"], ["cont_n1"], perm=[1, 0]),
        ]
        cell, hn, cn = _cell_nodes("lstm1/", "x", "cont_n1", "lstm1.h0", "lstm1.c0", None, H)
        nodes += cell
        nodes += [
            helper.make_node("Unsqueeze", [hn, "axes0"], [out_name]),
            helper.make_node("Identity", [hn], ["lstm1.hT"]),
            helper.make_node("Identity", [cn], ["lstm1.cT"]),
        ]
    else:
        inits += [_init("lstm1/W", W), _init("lstm1/R", R), _init("lstm1/b", b), _init("axes2", np.array([2], np.int64))]
        nodes += [
            helper.make_node("MatMul", ["data", "lstm1/W"], ["xw0"]),
            helper.make_node("Add", ["xw0", "lstm1/b"], ["xw"]),
            helper.make_node("Unsqueeze", ["cont", "axes2"], ["cont3"]),
        ]
        cell, hn, cn = _cell_nodes("lstm1/", "", "cont_t", "h_in", "c_in", "xw_t", H)
        cell += [
            helper.make_node("Identity", [hn], ["h_out"]),
            helper.make_node("Identity", [cn], ["c_out"]),
            helper.make_node("Identity", [hn], ["y_t"]),
        ]
        body = helper.make_graph(
            cell,
            "lstm1_body",
            [
                helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [N, H]),
                helper.make_tensor_value_info("c_in", TensorProto.FLOAT, [N, H]),
                helper.make_tensor_value_info("xw_t", TensorProto.FLOAT, [N, 4 * H]),
                helper.make_tensor_value_info("cont_t", TensorProto.FLOAT, [N, 1]),
            ],
            [
                helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [N, H]),
                helper.make_tensor_value_info("c_out", TensorProto.FLOAT, [N, H]),
                helper.make_tensor_value_info("y_t", TensorProto.FLOAT, [N, H]),
            ],
        )
        nodes.append(
            helper.make_node(
                "Scan",
                ["lstm1.h0", "lstm1.c0", "xw", "cont3"],
                ["lstm1.hT", "lstm1.cT", out_name],
                body=body,
                num_scan_inputs=2,
            )
        )
    outs = [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [T, N, H])]
    if head:
        Wo = rng.uniform(-scale, scale, (H, head)).astype(np.float32)
        bo = rng.uniform(-scale, scale, (head,)).astype(np.float32)
        inits += [_init("ip/W", Wo), _init("ip/b", bo)]
        nodes += [
            helper.make_node("MatMul", [out_name, "ip/W"], ["ip0"]),
            helper.make_node("Add", ["ip0", "ip/b"], ["ip"]),
            helper.make_node("Softmax", ["ip"], ["prob"], axis=2),
        ]
        outs = [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [T, N, head])]
    outs += [
        helper.make_tensor_value_info("lstm1.hT", TensorProto.FLOAT, [N, H]),
        helper.make_tensor_value_info("lstm1.cT", TensorProto.FLOAT, [N, H]),
    ]
    graph = helper.make_graph(nodes, "lstm_step", ins, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


STATE_IN = ["lstm1.h0", "lstm1.c0"]
STATE_OUT = ["lstm1.hT", "lstm1.cT"]


