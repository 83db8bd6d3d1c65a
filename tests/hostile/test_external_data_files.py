"""Models saved with external data travel with their data file (Triton export); hostile locations are refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rnnrt.ir.config import load_config, save_step_graph
from rnnrt.errors import ConfigError
from rnnrt.importers.caffe.convert import convert_caffe
from rnnrt.ir.weights import external_data_files
from rnnrt.serve.triton import export_triton
from tests.hostile.helpers import input_layer, tree


def _big(tmp_path):
    text = input_layer("data", 1, 8) + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "y" inner_product_param { num_output: 64 } }\n'
    (tmp_path / "net.prototxt").write_text(text)
    return save_step_graph(convert_caffe(tmp_path / "net.prototxt", embed_limit=0), tmp_path / "out")


def test_export_triton_copies_the_data_file(tmp_path):
    yaml_path = _big(tmp_path)
    assert [str(p) for p in external_data_files(tmp_path / "out" / "model.onnx")] == ["model.onnx.data"]
    model_dir = export_triton(load_config(yaml_path), tmp_path / "repo", engine="onnx")
    files = tree(model_dir)
    data = [f for f in files if f.endswith("model.onnx.data")]
    assert data and files[data[0]] == (tmp_path / "out" / "model.onnx.data").stat().st_size, files


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_locations_outside_the_folder_are_refused(tmp_path, location):
    t = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4, 4], data_location=TensorProto.EXTERNAL)
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [t])
    (tmp_path / "m").mkdir()
    onnx.save_model(helper.make_model(graph, ir_version=8), str(tmp_path / "m" / "model.onnx"))
    with pytest.raises(ConfigError, match=r"tensor 'W' \| Its external data location .* leaves the model's folder"):
        external_data_files(tmp_path / "m" / "model.onnx")
