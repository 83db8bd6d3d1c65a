"""Plain ONNX models (not step graphs) that tests feed to the ONNX importer."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import helper as oh


def shared_sr_onnx(batch: object = "N") -> onnx.ModelProto:
    """y = stateN = tanh((x W + state U) * sr / 32000): a state pair and an int64 scalar ``sr``."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    u = rng.standard_normal((3, 3)).astype(np.float32)
    nodes = [
        oh.make_node("MatMul", ["x", "W"], ["xw"]), oh.make_node("MatMul", ["state", "U"], ["hu"]),
        oh.make_node("Add", ["xw", "hu"], ["pre"]),
        oh.make_node("Cast", ["sr"], ["srf"], to=TP.FLOAT), oh.make_node("Div", ["srf", "k"], ["scale"]),
        oh.make_node("Mul", ["pre", "scale"], ["pre2"]),
        oh.make_node("Tanh", ["pre2"], ["stateN"]), oh.make_node("Identity", ["stateN"], ["y"]),
    ]
    graph = oh.make_graph(
        nodes, "shared_sr",
        [oh.make_tensor_value_info("x", TP.FLOAT, [batch, 4]), oh.make_tensor_value_info("state", TP.FLOAT, [batch, 3]),
         oh.make_tensor_value_info("sr", TP.INT64, [])],
        [oh.make_tensor_value_info("y", TP.FLOAT, [batch, 3]), oh.make_tensor_value_info("stateN", TP.FLOAT, [batch, 3])],
        [onnx.numpy_helper.from_array(w, "W"), onnx.numpy_helper.from_array(u, "U"),
         onnx.numpy_helper.from_array(np.array(32000, np.float32), "k")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
