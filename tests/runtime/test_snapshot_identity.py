"""A snapshot's model identity covers the weights, also when they live in an external-data file."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rnnrt.errors import ConfigError
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
    model = helper.make_model(graph, ir_version=8)
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


def test_digest_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "m.bin"
    path.write_bytes(b"\x01\x02" * 1000)
    assert model_digest(path) == "sha256:" + hashlib.sha256(b"\x01\x02" * 1000).hexdigest()


def test_an_unreadable_model_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "missing.onnx"
    with pytest.raises(ConfigError, match=re.escape(f"Model {str(path)!r} | Cannot be read: No such file")) as err:
        model_digest(path)
    assert isinstance(err.value.__cause__, FileNotFoundError)


def _padded_to(path: str, size: int) -> None:
    """Rewrites the graph file to exactly ``size`` bytes (a doc string), its external weights untouched."""
    model = onnx.load(path, load_external_data=False)
    model.doc_string = "x" * (size - model.ByteSize())
    while model.ByteSize() != size:  # the doc string's length prefix grew
        model.doc_string = model.doc_string[: len(model.doc_string) + size - model.ByteSize()]
    with open(path, "wb") as f:
        f.write(model.SerializeToString())


def test_the_graph_size_up_to_which_external_weights_are_digested(tmp_path):
    """A graph file of up to 64 MiB is parsed for external-data files; a larger one is taken to hold its weights."""
    limit = 64 << 20
    for size, covered in ((limit, True), (limit + 1, False)):
        folder = tmp_path / str(size)
        folder.mkdir()
        path = _write_external(folder, np.eye(4, dtype=np.float32))
        _padded_to(path, size)
        graph = (folder / "model.onnx").read_bytes()
        assert len(graph) == size
        weights = (folder / "model.onnx.data").read_bytes()
        expected = hashlib.sha256(graph + weights if covered else graph).hexdigest()
        assert model_digest(path) == "sha256:" + expected
