"""A stateless model: ``y = Relu(x @ W)``; x (B, 4), y (B, 3)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnrt.ir.stepgraph import StepGraph, TensorSpec
from tests.models.registry import TinyModel, register


@register("stateless")
def _(batch: int = 2, seed: int = 4) -> TinyModel:
    rng = np.random.default_rng(seed)
    W = rng.uniform(-1, 1, (4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Relu", ["xw"], ["y"])],
        "stateless",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(W, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.ir_version = 8
    onnx.checker.check_model(model)
    step = StepGraph(
        model=model,
        inputs=[TensorSpec("x", "float32", (batch, 4), 0)],
        outputs=[TensorSpec("y", "float32", (batch, 3), 0)],
        states=[],
        source={"format": "test", "model": "stateless"},
    )

    def reference(feeds, state):
        return {"y": np.maximum(np.asarray(feeds["x"], np.float64) @ W, 0)}, {}

    return TinyModel("stateless", step, {"W": W}, reference)
