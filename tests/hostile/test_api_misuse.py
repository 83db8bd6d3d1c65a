"""Wrong argument types through the importer APIs: typed errors, not TypeError from deep inside."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
import numpy as np

from rnnrt.errors import ConfigError, RnnrtError
from rnnrt.importers.onnx.importer import convert_onnx


def _lstm_onnx(path) -> None:
    hidden, inp = 3, 2
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, inp)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32), "R")
    node = helper.make_node("LSTM", ["x", "W", "R"], ["y", "y_h", "y_c"], hidden_size=hidden)
    graph = helper.make_graph(
        [node], "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, inp])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, hidden])], [w, r],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


@pytest.mark.parametrize("override", [[1, 2], 3.5, b"state: []", object()])
def test_convert_onnx_override_of_the_wrong_type(tmp_path, override):
    _lstm_onnx(tmp_path / "lstm.onnx")
    assert convert_onnx(tmp_path / "lstm.onnx").states  # the model itself converts
    with pytest.raises(ConfigError, match=r"Override \| Is a \w+: .*\nNote: Expected a YAML file path or a mapping") as info:
        convert_onnx(tmp_path / "lstm.onnx", override=override)
    assert isinstance(info.value, RnnrtError)


def test_convert_onnx_override_file_not_utf8(tmp_path):
    _lstm_onnx(tmp_path / "lstm.onnx")
    (tmp_path / "fix.yaml").write_bytes(b"state: []\n# \xff\n")
    with pytest.raises(ConfigError, match=r"Override '.*fix.yaml' \| Is not UTF-8 text"):
        convert_onnx(tmp_path / "lstm.onnx", override=tmp_path / "fix.yaml")
