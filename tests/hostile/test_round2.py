"""Issue 22, second hostile round: each raw exception found is a typed error now (defects 8-11 and 13;
the pool and snapshot defects are in tests/runtime/test_pool_concurrency.py and test_snapshot_integrity.py,
safe writes in tests/hostile/test_safe_write.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import rnnrt
from rnnrt.importers.options import load_import_config
from rnnrt.ir.config import load_config, save_step_graph
from rnnrt.errors import ConfigError, ModelImportError
from rnnrt.importers.caffe.convert import convert_caffe
from rnnrt.importers.onnx.importer import convert_onnx
from rnnrt.importers.onnx.override import load_override
from tests.hostile.helpers import ROOT, input_layer

_LSTM_NET = (input_layer("x", 1, 1, 2) + input_layer("cont", 1, 1)
             + 'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param { num_output: 2 } }\n')


@pytest.fixture(scope="module")
def lstm_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lstm")
    (folder / "net.prototxt").write_text(_LSTM_NET)
    return save_step_graph(convert_caffe(folder / "net.prototxt", batch="dynamic"), folder / "out")


# Defect 8: a YAML file with NUL or another control character.
@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f"])
def test_yaml_with_a_control_character_is_a_config_error(tmp_path, lstm_model, char):
    text = lstm_model.read_text()
    cut = text.index("\n", len(text) // 2) + 1
    bad = tmp_path / "model.yaml"
    bad.write_text(text[:cut] + char + text[cut:])
    line = text[:cut].count("\n") + 1
    match = f"Has the control character U\\+{ord(char):04X} at line {line}, column 1"
    for read in (load_config, rnnrt.load, load_import_config, lambda p: load_override(p)):
        with pytest.raises(ConfigError, match=match):
            read(bad)


# Defect 9: a Split whose tops are both net outputs.
def test_split_into_two_net_outputs_converts_and_runs(tmp_path):
    net = tmp_path / "split.prototxt"
    net.write_text(input_layer("x", 3, 5, 6)
                   + 'layer { name: "abs" type: "AbsVal" bottom: "x" top: "y" }\n'
                   + 'layer { name: "sp" type: "Split" bottom: "y" top: "a" top: "b" }\n')
    step = convert_caffe(net)
    assert [o.name for o in step.outputs] == ["a", "b"]
    x = np.random.default_rng(0).uniform(-1, 1, (3, 5, 6)).astype(np.float32)
    with rnnrt.load(save_step_graph(step, tmp_path / "out"), backend="onnxruntime") as s:
        out = s.step({"x": x})
    np.testing.assert_array_equal(out["a"], np.abs(x))
    np.testing.assert_array_equal(out["b"], np.abs(x))


# Defect 10: a cyclic graph, a tensor with two producers, a recursive local function.
def _model(nodes, inputs=("x",), functions=(), opsets=(("", 17),)):
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in inputs]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph(nodes, "g", vi, [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets],
                             functions=list(functions), ir_version=8)


def test_cyclic_graph_is_a_model_import_error():
    model = _model([helper.make_node("Add", ["x", "y"], ["y"], name="loop")])
    with pytest.raises(ModelImportError, match=r"node 'loop' \(Add\) \| Is on a cycle: 'loop' \(Add\) -> 'loop'"):
        convert_onnx(model)


def test_longer_cycle_names_its_nodes():
    model = _model([helper.make_node("Relu", ["x2"], ["y"], name="c"), helper.make_node("Neg", ["y"], ["x1"], name="a"),
                    helper.make_node("Abs", ["x1"], ["x2"], name="b")])
    with pytest.raises(ModelImportError, match="Is on a cycle: .*'a' \\(Neg\\).*'b' \\(Abs\\).*'c' \\(Relu\\)"):
        convert_onnx(model)


def test_tensor_with_two_producers_is_a_model_import_error():
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="one"), helper.make_node("Neg", ["x"], ["y"], name="two")])
    with pytest.raises(ModelImportError, match="node 'two' \\(Neg\\) \\| Produces tensor 'y', which 'one'"):
        convert_onnx(model)


def test_recursive_local_function_is_a_model_import_error():
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    f = helper.make_function("local", "F", ["a"], ["b"], [helper.make_node("G", ["a"], ["b"], domain="local")], opsets)
    g = helper.make_function("local", "G", ["a"], ["b"], [helper.make_node("F", ["a"], ["b"], domain="local")], opsets)
    model = _model([helper.make_node("F", ["x"], ["y"], domain="local")], functions=[f, g],
                   opsets=(("", 17), ("local", 1)))
    with pytest.raises(ModelImportError, match="Calls itself: local.F -> local.G -> local.F"):
        convert_onnx(model)


# Defect 11: declared sizes no streaming step can have (raw MemoryError while probing).
def _lstm(inp, hidden, weights_as_inputs, w_dims=None):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", 1, inp])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", 1, 1, hidden])
    inputs, inits = [x], []
    if weights_as_inputs:
        inputs += [helper.make_tensor_value_info("W", TensorProto.FLOAT, w_dims or [1, 4 * hidden, inp]),
                   helper.make_tensor_value_info("R", TensorProto.FLOAT, w_dims or [1, 4 * hidden, hidden])]
    else:
        inits += [numpy_helper.from_array(np.zeros((1, 4 * hidden, inp), np.float32), "W"),
                  numpy_helper.from_array(np.zeros((1, 4 * hidden, hidden), np.float32), "R")]
    node = helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=hidden, name="lstm")
    graph = helper.make_graph([node], "g", inputs, [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("model,match", [
    (_lstm(2**40, 2, True), "input 'x' \\| Declares shape \\['\\?', 1, 1099511627776\\]"),
    (_lstm(3, 2**31 - 1, True), "input 'W' \\| Declares shape \\[1, 8589934588, 3\\]"),
    (_lstm(3, 2**31 - 1, True, w_dims=["a", "b", "c"]), "node 'lstm' \\(LSTM\\) \\| Has hidden_size 2147483647"),
])
def test_huge_declared_sizes_are_model_import_errors(model, match):
    with pytest.raises(ModelImportError, match=match):
        convert_onnx(model)


def test_normal_lstm_still_converts():
    assert convert_onnx(_lstm(3, 4, False)).states


# Defect 13: a batch size the process's address-space limit cannot hold.
def test_load_with_huge_batch_under_an_address_space_limit_is_a_config_error(lstm_model):
    script = textwrap.dedent(f"""
        import resource, sys
        import rnnrt
        from rnnrt.errors import ConfigError
        limit = 2 << 30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            rnnrt.load({str(lstm_model)!r}, backend="onnxruntime", batch_size=10**8)
        except ConfigError as err:
            print("TYPED", err)
            sys.exit(0)
        print("LOADED")
    """)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "TYPED" in run.stdout and "address-space limit (RLIMIT_AS)" in run.stdout, run.stdout
