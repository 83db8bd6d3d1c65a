"""The host executor's smaller contracts that the stream tests do not reach (found by mutation testing of
rnnrt/runtime/host.py, docs/testing.md): the state-memory guard, input buffers of dynamic inputs."""

from __future__ import annotations

import os

import numpy as np
import pytest

import rnnrt
from rnnrt.errors import BindingError, ConfigError
from rnnrt.runtime import host
from tests.models import MODELS


def test_physical_memory_is_this_machines():
    total = host._physical_memory()
    assert total == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") and total > 2**26


def test_state_larger_than_half_the_memory_is_refused(tmp_path, monkeypatch):
    path = MODELS["lstm_dynamic_batch"]().save(tmp_path)
    # lstm1.h0 and lstm1.c0: (B, 7) float32 each, the second at a 256-byte aligned offset. Two arenas:
    # B = 36: 2 x (1024 + 1008) = 4064 bytes; B = 37: 2 x (1280 + 1036) = 4632 bytes.
    monkeypatch.setattr(host, "_physical_memory", lambda: 4096)
    with rnnrt.load(path, backend="onnxruntime", threads=1, batch_size=36) as s:
        assert s.state["lstm1.h0"].shape == (36, 7)
    with pytest.raises(ConfigError, match=r"Session \| The state needs 2 x 0\.0 GiB for this batch size, more than "
                                          r"this machine's 0\.0 GiB\.\nNote: Use a smaller batch_size\."):
        rnnrt.load(path, backend="onnxruntime", threads=1, batch_size=37)
    monkeypatch.setattr(host, "_physical_memory", lambda: None)  # unknown: no limit
    rnnrt.load(path, backend="onnxruntime", threads=1, batch_size=4096).close()


def test_input_buffers_of_a_dynamic_input_need_its_shape(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "samples"])
    h = helper.make_tensor_value_info("h_in", TensorProto.FLOAT, ["batch", 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])
    h_out = helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["batch", 1])
    graph = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["s"], axes=[1], keepdims=1),
                               helper.make_node("Add", ["s", "h_in"], ["h_out"]),
                               helper.make_node("Identity", ["h_out"], ["y"])], "g", [x, h], [y, h_out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    from rnnrt.ir.config import save_step_graph
    from rnnrt.importers.onnx.importer import convert_onnx

    src = tmp_path / "sum.onnx"
    src.write_bytes(model.SerializeToString())
    yaml = save_step_graph(convert_onnx(src), tmp_path / "out")
    with rnnrt.load(yaml, backend="onnxruntime", threads=1, batch_size=3) as s:
        assert s.io.cont is None
        with pytest.raises(BindingError, match=r"Input 'x' \| Has dynamic dims .*\nNote: Pass its full shape in "
                                               r"shapes=\{name: shape\}\."):
            s.input_buffers()
        bufs = s.input_buffers({"x": (3, 4)})
        assert bufs["x"].shape == (3, 4) and bufs["x"].dtype == np.float32
        assert s.input_buffers({"x": (3, 4)})["x"] is bufs["x"], "the same buffers for the same shapes"
        assert s.input_buffers({"x": (3, 5)})["x"].shape == (3, 5)
        bufs["x"][...] = np.arange(12, dtype=np.float32).reshape(3, 4)
        np.testing.assert_array_equal(s.step(bufs)["y"], [[6], [22], [38]])
        np.testing.assert_array_equal(s.step(bufs)["y"], [[12], [44], [76]])
