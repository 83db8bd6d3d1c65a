"""State anywhere: models with explicit state, an If on a rate input, fixed-T exports, time-mixing heads.

The torch models (``models_stateful.py``, legacy exporter ``dynamo=False``) stream one step per call
through the Session and must equal the torch module run on the whole sequence (atol 1e-5).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import rnnrt
from rnnrt.ir.config import load_config, save_step_graph
from rnnrt.errors import ConfigError, ModelImportError
from rnnrt.importers.onnx.explicit import names_match
from rnnrt.importers.onnx.importer import convert_onnx

torch = pytest.importorskip("torch", reason="torch (CPU) exports the test models")

from tests.importers.onnx import models_stateful as M  # noqa: E402

ATOL = 1e-5
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stateful")


def _load(step, where: Path, batch: int):
    return rnnrt.load(save_step_graph(step, where), backend="onnxruntime", batch_size=batch)


def test_silero_like_if_on_rate_is_folded_and_streams(out_dir):
    path, net = M.silero_like(out_dir)
    step = convert_onnx(path, constants={"sr": 16000}, context="input:8")
    ops = {n.op_type for n in step.model.graph.node}
    assert "If" not in ops
    assert {(s.input, s.output) for s in step.states} == {("state", "stateN"), ("input.context", "input.context_next")}
    rng = np.random.default_rng(0)
    chunks = [rng.standard_normal((3, 40)).astype(np.float32) for _ in range(6)]
    with _load(step, out_dir / "silero_like", 3) as session:
        got = [session.step({"input": c})["output"] for c in chunks]
    state = torch.zeros(2, 3, M.H)
    ctx = torch.zeros(3, 8)
    with torch.no_grad():
        for c, g in zip(chunks, got):
            x = torch.cat([ctx, torch.from_numpy(c)], dim=1)
            y, state = net(x, state, torch.tensor(16000))
            ctx = x[:, -8:]
            np.testing.assert_allclose(g, y.numpy(), atol=ATOL)


def test_silero_like_8k_branch(out_dir):
    path, net = M.silero_like(out_dir)
    step = convert_onnx(path, constants={"sr": "8000"})
    x = np.random.default_rng(1).standard_normal((2, 48)).astype(np.float32)
    with _load(step, out_dir / "silero_like8", 2) as session:
        got = session.step({"input": x})["output"]
    with torch.no_grad():
        want = net(torch.from_numpy(x), torch.zeros(2, 2, M.H), torch.tensor(8000))[0].numpy()
    np.testing.assert_allclose(got, want, atol=ATOL)


def test_without_set_the_if_stays_and_the_note_names_the_input(out_dir):
    path, _ = M.silero_like(out_dir)
    step = convert_onnx(path)
    assert any(n.op_type == "If" for n in step.model.graph.node)
    sr = next(t for t in step.inputs if t.name == "sr")
    assert sr.batch_axis is None
    assert any("--set" in n and "sr" in n for n in step.notes)
    assert ("state", "stateN") in {(s.input, s.output) for s in step.states}


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_cell_with_h_in_h_out_names_streams_like_the_loop(out_dir, kind):
    path, net = M.cell_loop(out_dir, kind)
    step = convert_onnx(path)
    pairs = {(s.input, s.output) for s in step.states}
    assert ("h_in", "h_out") in pairs and (kind != "LSTM" or ("c_in", "c_out") in pairs)
    x = np.random.default_rng(2).standard_normal((7, 2, M.I)).astype(np.float32)
    with _load(step, out_dir / f"cell_{kind}", 2) as session:
        got = np.concatenate([session.step({"x": x[t:t + 1]})["y"] for t in range(7)])
    with torch.no_grad():
        args = [torch.from_numpy(x), torch.zeros(2, M.H)] + ([torch.zeros(2, M.H)] if kind == "LSTM" else [])
        want = net(*args)[0].numpy()
    np.testing.assert_allclose(got, want, atol=ATOL)


def test_two_state_groups_reset_independently(out_dir):
    path, net = M.two_groups(out_dir)
    step = convert_onnx(path, add_reset=True)
    assert {(s.input, s.output) for s in step.states} == {("a_state", "a_state_out"), ("b_state", "b_state_out")}
    assert step.continuation is not None
    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 2, M.I)).astype(np.float32)
    b = rng.standard_normal((6, 2, M.I)).astype(np.float32)
    with _load(step, out_dir / "two", 2) as session:
        got = []
        for t in range(6):
            if t == 3:
                session.reset(slots=[1])
            got.append(session.step({"a": a[t], "b": b[t]})["y"])
    ha, hb = torch.zeros(2, M.H), torch.zeros(2, M.H + 2)
    with torch.no_grad():
        for t in range(6):
            if t == 3:
                ha[1], hb[1] = 0, 0
            y, ha, hb = net(torch.from_numpy(a[t]), ha, torch.from_numpy(b[t]), hb)
            np.testing.assert_allclose(got[t], y.numpy(), atol=ATOL)


def test_fixed_t_export_streams_with_time_steps_1(out_dir, tmp_path):
    path, net = M.fixed_t(out_dir)
    fixed = convert_onnx(path)
    assert fixed.inputs[0].shape[0] == 6
    step = convert_onnx(path, time_steps=1)
    assert step.inputs[0].shape[0] == 1
    x = np.random.default_rng(4).standard_normal((6, 2, M.I)).astype(np.float32)
    with _load(step, out_dir / "fixed1", 2) as session:
        got = np.concatenate([session.step({"x": x[t:t + 1]})["y"] for t in range(6)])
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=ATOL)
    dyn = convert_onnx(path, time_steps="dynamic")
    assert isinstance(dyn.inputs[0].shape[0], str)
    with pytest.raises(ConfigError, match="time-steps"):
        convert_onnx(path, time_steps="0")


def test_time_mixing_head_is_warned_and_strict_fails(out_dir, caplog):
    path, _ = M.time_mixing(out_dir)
    with caplog.at_level(logging.WARNING, logger="rnnrt.onnx"):
        step = convert_onnx(path)
    assert any("mixes time steps" in r.getMessage() for r in caplog.records)
    assert any("mixes time steps" in n for n in step.notes)
    with pytest.raises(ModelImportError, match="mixes time steps"):
        convert_onnx(path, strict=True)
    # A plain Linear head does not trigger it.
    plain, _ = M.fixed_t(out_dir)
    convert_onnx(plain, time_steps="dynamic", strict=True)


def test_state_output_that_is_the_model_output_stays_in_results(out_dir):
    path, net = M.state_is_output(out_dir)
    step = convert_onnx(path)
    assert [t.name for t in step.outputs] == ["hn"]
    x = np.random.default_rng(5).standard_normal((4, 2, M.I)).astype(np.float32)
    with _load(step, out_dir / "state_out", 2) as session:
        outs = [session.step({"x": x[t:t + 1]})["hn"] for t in range(4)]
    with torch.no_grad():
        want = net(torch.from_numpy(x), torch.zeros(1, 2, M.H)).numpy()
    np.testing.assert_allclose(outs[-1], want, atol=ATOL)


# Hand-made graphs: ambiguity, naming conventions, override completion, --set/--context errors.
def _cell(outputs: list[str], inputs: tuple = ("x", "h")) -> onnx.ModelProto:
    """y = tanh(x @ W + h @ U); every name in ``outputs`` gets a copy of the new h (y is the first)."""
    x, h = inputs
    nodes = [helper.make_node("MatMul", [x, "W"], ["xw"]), helper.make_node("MatMul", [h, "U"], ["hu"]),
             helper.make_node("Add", ["xw", "hu"], ["pre"]), helper.make_node("Tanh", ["pre"], ["hnew"])]
    outs = []
    for k, name in enumerate(outputs):
        nodes.append(helper.make_node("Identity" if k == 0 else "Mul", ["hnew"] if k == 0 else ["hnew", "two"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 4]))
    rng = np.random.default_rng(0)
    inits = [onnx.numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "W"),
             onnx.numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "U"),
             onnx.numpy_helper.from_array(np.array(2, np.float32), "two")]
    graph = helper.make_graph(nodes, "cell", [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", 3]),
                                              helper.make_tensor_value_info(h, TensorProto.FLOAT, ["N", 4])], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_ambiguous_pair_lists_candidates_and_prints_the_override():
    with pytest.raises(ConfigError) as err:
        convert_onnx(_cell(["y", "hn", "h_out"]))
    text = str(err.value)
    assert "'hn'" in text and "'h_out'" in text
    assert "state:" in text and "{input: h, output: hn}" in text
    step = convert_onnx(_cell(["y", "hn", "h_out"]), override={"state": [{"input": "h", "output": "hn"}]})
    assert [(s.input, s.output) for s in step.states] == [("h", "hn")]
    # The override completes what it implies: x and the outputs get the state's batch axis.
    assert {t.name: t.batch_axis for t in step.inputs + step.outputs} == {"x": 0, "y": 0, "h_out": 0}


def test_override_with_add_reset_adds_the_continuation(tmp_path):
    step = convert_onnx(_cell(["y", "z"], inputs=("x", "memory")),
                        override={"state": [{"input": "memory", "output": "z"}]}, add_reset=True)
    assert step.continuation is not None and step.continuation.input == "cont"
    with rnnrt.load(save_step_graph(step, tmp_path), backend="onnxruntime", batch_size=2) as session:
        x = np.ones((2, 3), np.float32)
        first = session.step({"x": x})["y"]
        second = session.step({"x": x})["y"]
        session.reset(slots=[1])
        third = session.step({"x": x})["y"]
    assert not np.allclose(first, second)
    np.testing.assert_allclose(third[1], first[1], atol=1e-6)  # slot 1 started over
    assert not np.allclose(third[0], first[0])                   # slot 0 went on


def test_unconventional_names_are_not_guessed_between_two_outputs():
    # 'memory' could be carried by 'y' or 'z' and the names say nothing: no pair is invented.
    step = convert_onnx(_cell(["y", "z"], inputs=("x", "memory")))
    assert step.states == []


@pytest.mark.parametrize("a,b,ok", [("state", "stateN", True), ("h", "hn", True), ("h0", "hn", True), ("x_in", "x_out", True),
                                    ("cache_k", "new_cache_k", True), ("past_key", "present_key", True), ("h", "y", False),
                                    ("input", "output", False), ("cache_k", "new_cache_v", False)])
def test_state_naming_conventions(a, b, ok):
    assert names_match(a, b) is ok


@pytest.mark.parametrize("values,match", [({"nope": 1}, "Is not an input"), ({"h": "abc"}, "Cannot be made"),
                                          ({"x": [[1, 2]]}, "Has shape")])
def test_set_errors_are_typed(values, match):
    with pytest.raises(ConfigError, match=match):
        convert_onnx(_cell(["y", "hn"]), constants=values)


@pytest.mark.parametrize("spec,match", [("nope:4", "Is not an input"), ("x:0", "INPUT:K"), ("x", "INPUT:K"), ("x:3", "only 3 samples")])
def test_context_errors_are_typed(spec, match):
    m = _cell(["y", "hn"])
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 3
    with pytest.raises(ConfigError, match=match):
        convert_onnx(m, context=spec)


def test_cli_flags_reach_the_importer(out_dir, tmp_path):
    path, _ = M.silero_like(out_dir)
    proc = subprocess.run([sys.executable, "-m", "rnnrt.cli", "convert", str(path), "-o", str(tmp_path),
                           "--set", "sr=16000", "--context", "input:8", "--add-reset", "--strict"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cfg = load_config(tmp_path / "model.yaml")
    assert cfg.continuation is not None
    assert {s.input for s in cfg.state} == {"state", "input.context"}
    bad = subprocess.run([sys.executable, "-m", "rnnrt.cli", "convert", str(path), "-o", str(tmp_path / "b"),
                          "--set", "sr"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "NAME=VALUE" in bad.stderr


def test_state_dim_left_symbolic_by_the_exporter_is_resolved(tmp_path):
    """h0 [unk__188, N, 4] (dim 0 a symbol the exporter left) -> the config says [1, batch, 4] and loads."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1, 16, 3)).astype(np.float32)
    r = rng.standard_normal((1, 16, 4)).astype(np.float32)
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "", "", "h0", "c0"], ["y", "hn", "cn"], hidden_size=4)]
    graph = helper.make_graph(
        nodes, "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", 3]),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, ["unk__188", "N", 4]),
         helper.make_tensor_value_info("c0", TensorProto.FLOAT, ["unk__189", "N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", 1, "N", 4]),
         helper.make_tensor_value_info("hn", TensorProto.FLOAT, ["unk__190", "N", 4]),
         helper.make_tensor_value_info("cn", TensorProto.FLOAT, ["unk__191", "N", 4])],
        [onnx.numpy_helper.from_array(w, "W"), onnx.numpy_helper.from_array(r, "R")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    step = convert_onnx(model)
    shapes = {s.input: list(s.shape) for s in step.states}
    assert shapes == {"h0": [1, "N", 4], "c0": [1, "N", 4]} or shapes == {"h0": [1, "batch", 4], "c0": [1, "batch", 4]}
    cfg = load_config(save_step_graph(step, tmp_path))  # rnnrt's own validation passes
    with rnnrt.load(tmp_path / "model.yaml", backend="onnxruntime", batch_size=2) as session:
        assert session.step({"x": np.ones((1, 2, 3), np.float32)})["y"].shape == (1, 1, 2, 4)
    assert cfg.state[0].shape[0] == 1


def test_lstm_inside_a_loop_streams_through_its_explicit_pairs(out_dir):
    path, net = M.scripted_loop(out_dir)
    model = onnx.load(str(path))
    assert any(n.op_type == "Loop" for n in model.graph.node)
    step = convert_onnx(path)
    assert any("inside Loop/Scan/If" in n for n in step.notes)
    assert {(s.input, s.output) for s in step.states} == {("h_in", "h_out"), ("c_in", "c_out")}
    x = np.random.default_rng(7).standard_normal((5, 2, M.I)).astype(np.float32)
    with _load(step, out_dir / "loop", 2) as session:
        got = np.concatenate([session.step({"x": x[t:t + 1]})["y"] for t in range(5)])
    with torch.no_grad():
        want = net(torch.from_numpy(x), torch.zeros(1, 2, M.H), torch.zeros(1, 2, M.H))[0].numpy()
    np.testing.assert_allclose(got, want, atol=ATOL)


def test_equal_shaped_stateless_model_stays_stateless():
    # y = tanh(x W + m U) has an input 'x' [N, 4]-compatible with 'y' but the names say nothing.
    step = convert_onnx(_cell(["y"], inputs=("a", "m")))
    assert step.states == []
    assert any("not paired" in n for n in step.notes)
