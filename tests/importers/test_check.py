"""The convert-time equivalence check (rnnrt.importers.check) on models made here, the checks: record,
batch-1-only models refused by a StreamPool, pinned dims and integer frames (no silent wrong inputs).

Models (onnx.helper): an LSTM over a dynamic time axis, optionally with a time-mixing CumSum before or
after it, with dynamic quantization (DynamicQuantizeLinear over the batch) in front, or with its state as
explicit inputs/outputs (h0/c0 -> hn/cn).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

import rnnrt
from rnnrt.cli import main
from rnnrt.ir.config import load_config, save_step_graph
from rnnrt.errors import BindingError, ConfigError, EquivalenceError
from rnnrt.importers.caffe.convert import convert_caffe
from rnnrt.importers.check import check_conversion
from rnnrt.importers.dims import pin_dims
from rnnrt.importers.onnx.importer import convert_onnx
from rnnrt.ir.stepgraph import StatePair, StepGraph, TensorSpec
from rnnrt.runtime.pool import StreamPool
from tests.conftest import golden_cases

I, H = 4, 6


def _lstm(path: Path, *, mix: str = "", quantize: bool = False, explicit: bool = False) -> Path:
    """x [T, batch, I] -> (CumSum over time if mix='before') -> (DynamicQuantizeLinear + DequantizeLinear if
    quantize) -> LSTM -> y [T, batch, H] (CumSum over time if mix='after'). ``explicit``: T is 1 and the
    state is the model's own h0/c0 -> hn/cn."""
    rng = np.random.default_rng(3)
    time = 1 if explicit else "T"
    inits = [numpy_helper.from_array(rng.uniform(-0.5, 0.5, (1, 4 * H, I)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.uniform(-0.5, 0.5, (1, 4 * H, H)).astype(np.float32), "R"),
             numpy_helper.from_array(rng.uniform(-0.5, 0.5, (1, 8 * H)).astype(np.float32), "B"),
             numpy_helper.from_array(np.array(0, np.int64), "axis0"),
             numpy_helper.from_array(np.array([1], np.int64), "axes1")]
    nodes, x = [], "x"
    if mix == "before":
        nodes.append(helper.make_node("CumSum", [x, "axis0"], ["x_sum"], name="time_sum"))
        x = "x_sum"
    if quantize:
        nodes += [helper.make_node("DynamicQuantizeLinear", [x], ["q", "q_scale", "q_zero"], name="quant"),
                  helper.make_node("DequantizeLinear", ["q", "q_scale", "q_zero"], ["x_dq"], name="dequant")]
        x = "x_dq"
    states = ["", "h0", "c0"] if explicit else []
    nodes.append(helper.make_node("LSTM", [x, "W", "R", "B"] + states, ["Y", "hn" if explicit else "", "cn" if explicit else ""],
                                  name="lstm", hidden_size=H))
    nodes.append(helper.make_node("Squeeze", ["Y", "axes1"], ["y_seq" if mix == "after" else "y"], name="squeeze"))
    if mix == "after":
        nodes.append(helper.make_node("CumSum", ["y_seq", "axis0"], ["y"], name="head_sum"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [time, "batch", I])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [time, "batch", H])]
    if explicit:
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "batch", H]) for n in ("h0", "c0")]
        outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "batch", H]) for n in ("hn", "cn")]
    graph = helper.make_graph(nodes, "lstm", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _results(step) -> dict:
    return {r.check: r for r in step.checks.results}


def test_streaming_batch_and_reset_pass_and_are_recorded(tmp_path):
    path = _lstm(tmp_path / "lstm.onnx")
    step = check_conversion(convert_onnx(path, add_reset=True), path, steps=6, seed=4)
    got = _results(step)
    assert got["streaming"].passed and "whole-sequence run" in got["streaming"].compared
    assert got["batch"].passed and got["batch"].compared.startswith("3 streams")
    assert got["reset"].passed and "reset at step 3" in got["reset"].compared
    assert step.checks.batch_one is None and step.checks.seed == 4 and step.checks.steps == 6
    cfg = load_config(save_step_graph(step, tmp_path / "out"))  # the record passes the config schema
    assert cfg.checks == step.checks
    assert cfg.checks.results[0].max_abs < 1e-5


def test_explicit_state_is_compared_with_the_original_fed_by_hand(tmp_path):
    path = _lstm(tmp_path / "explicit.onnx", explicit=True)
    step = check_conversion(convert_onnx(path), path)
    got = _results(step)
    assert got["streaming"].passed and "fed its state by hand" in got["streaming"].compared
    assert got["batch"].passed and got["reset"].passed


@pytest.mark.parametrize("where", ["before", "after"])
def test_time_mixing_op_fails_the_check_naming_step_and_op(tmp_path, where):
    path = _lstm(tmp_path / f"mix_{where}.onnx", mix=where)
    step = convert_onnx(path)
    with pytest.raises(EquivalenceError) as info:
        check_conversion(step, path)
    msg = str(info.value)
    name = "time_sum" if where == "before" else "head_sum"
    assert f"CumSum node {name!r}" in msg
    assert "Output 'y' at step 1 |" in msg  # step 0 still agrees: a cumulative sum of one frame is the frame
    assert "--context" in msg and "--no-check" in msg


def test_cli_convert_prints_the_check_and_no_check_writes_anyway(tmp_path, capsys):
    ok = _lstm(tmp_path / "lstm.onnx")
    assert main(["convert", str(ok), "-o", str(tmp_path / "ok"), "--check-steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "check: streaming ok" in out and "[seed 0, 4 steps]" in out
    data = yaml.safe_load((tmp_path / "ok" / "model.yaml").read_text())
    assert data["checks"]["steps"] == 4 and [r["check"] for r in data["checks"]["results"]] == ["streaming", "batch", "reset"]

    bad = _lstm(tmp_path / "mix.onnx", mix="after")
    assert main(["convert", str(bad), "-o", str(tmp_path / "bad")]) != 0
    assert "Output 'y' at step 1 | Convert-time check" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "model.yaml").exists()  # a refused conversion writes nothing
    assert main(["convert", str(bad), "-o", str(tmp_path / "bad"), "--no-check"]) == 0
    assert "checks" not in yaml.safe_load((tmp_path / "bad" / "model.yaml").read_text())


def test_dynamic_quantization_is_batch_one_only_and_a_pool_refuses_it(tmp_path):
    path = _lstm(tmp_path / "dq.onnx", quantize=True, explicit=True)
    step = check_conversion(convert_onnx(path), path)
    got = _results(step)
    assert got["streaming"].passed and got["reset"].passed  # one stream is exact
    assert got["batch"].passed is False
    reason = step.checks.batch_one
    assert "DynamicQuantizeLinear node 'quant'" in reason and "one scale over the whole batch" in reason
    cfg_path = save_step_graph(step, tmp_path / "out")
    assert load_config(cfg_path).checks.batch_one == reason
    with pytest.raises(ConfigError, match=r"batch_size=2 \| The model runs one stream per batch only: "
                       "DynamicQuantizeLinear"):
        rnnrt.load(cfg_path, backend="onnxruntime", batch_size=2)  # so no StreamPool of two streams either
    with rnnrt.load(cfg_path, backend="onnxruntime", batch_size=1) as session:
        pool = StreamPool(session)
        pool.open("a")
        pool.step({"a": {"x": np.zeros((1, 1, I), np.float32)}})


def test_reference_feed_that_differs_names_the_call(tmp_path):
    path = _lstm(tmp_path / "lstm.onnx")
    step = convert_onnx(path)
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-1, 1, (1, 1, I)).astype(np.float32) for _ in range(5)]
    with rnnrt.load(save_step_graph(step, tmp_path / "ref"), backend="onnxruntime", batch_size=1) as s:
        ys = [s.step({"x": x})["y"] for x in xs]
    feed = {f"call{k}/x": x for k, x in enumerate(xs)} | {f"call{k}/y": y for k, y in enumerate(ys)}
    np.savez(tmp_path / "good.npz", **feed)
    assert _results(check_conversion(step, path, reference=tmp_path / "good.npz"))["reference"].passed
    feed["call3/y"] = feed["call3/y"] + 0.01
    np.savez(tmp_path / "bad.npz", **feed)
    with pytest.raises(EquivalenceError, match=r"(?s)Output 'y' at call 3 of .*--context INPUT:K"):
        check_conversion(step, path, reference=tmp_path / "bad.npz")


def test_check_steps_below_two_is_refused(tmp_path):
    path = _lstm(tmp_path / "lstm.onnx")
    with pytest.raises(ConfigError, match="--check-steps 8"):
        check_conversion(convert_onnx(path), path, steps=1)


def test_integer_frames_into_a_float_input_are_refused_with_the_scale(tmp_path):
    path = _lstm(tmp_path / "lstm.onnx")
    cfg = save_step_graph(convert_onnx(path), tmp_path / "out")
    with rnnrt.load(cfg, backend="onnxruntime", batch_size=1) as s:
        with pytest.raises(BindingError, match=r"int16 is not scaled: pass x.astype\(np.float32\) / 32768"):
            s.step({"x": np.zeros((1, 1, I), np.int16)})
        with pytest.raises(BindingError, match=r"\(x.astype\(np.float32\) - 128\) / 128"):
            s.step({"x": np.zeros((1, 1, I), np.uint8)})
        s.step({"x": np.zeros((1, 1, I), np.float16)})  # a float that casts safely is still fine


def test_pinned_dim_is_recorded_and_checked_at_every_step(tmp_path):
    path = _lstm(tmp_path / "lstm.onnx")
    step = pin_dims(convert_onnx(path), {"T": 2})
    assert step.inputs[0].shape[0] == 2 and step.source["dims"] == {"T": 2}
    cfg = load_config(save_step_graph(step, tmp_path / "out"))
    assert cfg.inputs[0].shape[0] == 2
    with rnnrt.load(cfg.base_dir / "model.yaml", backend="onnxruntime", batch_size=1) as s:
        s.step({"x": np.zeros((2, 1, I), np.float32)})
        with pytest.raises(BindingError, match=r"Input 'x' \| Received shape \(3, 1, 4\): dim 0 is 3, not 2"):
            s.step({"x": np.zeros((3, 1, I), np.float32)})
    with pytest.raises(ConfigError, match="Names no dynamic dim"):
        pin_dims(convert_onnx(path), {"chunk": 512})
    with pytest.raises(ConfigError, match="is the batch"):
        pin_dims(convert_onnx(path), {"batch": 2})


@pytest.mark.parametrize("name", golden_cases())
def test_caffe_step_graph_reproduces_the_caffe_recording(golden, name):
    """Caffe has no original to run here: batch and reset run on the step graph, and the recording made
    with real BVLC Caffe (io.npz, a feed in the call{k}/{name} format) is the streaming reference."""
    case = golden(name)
    step = convert_caffe(case.prototxt, case.caffemodel, batch="dynamic")
    got = _results(check_conversion(step, None, reference=case.dir / "io.npz"))
    assert got["streaming"].passed is None and "Caffe" in got["streaming"].reason
    assert got["reset"].passed
    assert got["reference"].passed and got["reference"].max_abs < 1e-4
    assert got["batch"].passed in (True, None)


def test_reset_that_does_not_restart_a_stream_fails_the_check():
    """A state declared with the wrong stream axis (h is [3, 2]: 3 values for each of 2 streams, declared
    batch_axis 0): a reset zeroes a slice across both streams, so the reset stream differs from a fresh one."""
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
             helper.make_node("Add", ["h", "xt"], ["s"]),
             helper.make_node("Tanh", ["s"], ["h_out"]),
             helper.make_node("Transpose", ["h_out"], ["y"], perm=[1, 0])]
    graph = helper.make_graph(nodes, "cell",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                               helper.make_tensor_value_info("h", TensorProto.FLOAT, [3, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
                               helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [3, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    step = StepGraph(model, [TensorSpec("x", "float32", [2, 3], 0)], [TensorSpec("y", "float32", [2, 3], 0)],
                     [StatePair("h", "h_out", [3, 2], batch_axis=0)])
    with pytest.raises(EquivalenceError, match=r"(?s)Output 'y' at step 4 \| .*reset at step 4 vs a fresh stream.*--override"):
        check_conversion(step)
    fixed = StepGraph(model, step.inputs, step.outputs, [StatePair("h", "h_out", [3, 2], batch_axis=1)])
    assert _results(check_conversion(fixed))["reset"].passed
