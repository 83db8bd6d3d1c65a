"""A snapshot's model identity covers the weights, also when they live in an external-data file."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnrt.runtime.snapshot import model_digest


def _write_external(tmp_path, weights: np.ndarray) -> str:
    w = numpy_helper.from_array(weights, "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    model = helper.make_model(graph)
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    return str(path)


def test_digest_changes_with_external_weights(tmp_path):
    path = _write_external(tmp_path, np.eye(4, dtype=np.float32))
    before = model_digest(path)
    assert model_digest(path) == before  # stable
    data = tmp_path / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF  # same graph file, other weights
    data.write_bytes(bytes(raw))
    assert model_digest(path) != before


def test_digest_of_a_plain_file_is_its_bytes(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"not an onnx model")
    b.write_bytes(b"not an onnx model")
    assert model_digest(a) == model_digest(b)
