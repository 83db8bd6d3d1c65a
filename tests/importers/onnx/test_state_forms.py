"""Tests-made ONNX graphs, one per form of state the pip models showed: a causal time window before the
recurrence (context inserted / look-ahead refused), an unrolled LSTM whose pair follows no naming
convention (paired numerically), an intra-frame bidirectional RNN beside explicit caches (left alone), a
fixed-batch export (``--batch dynamic`` / a stream-mixing op refused), an exporter's unresolved symbol in
a state shape.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import rnnrt
from rnnrt.ir.config import load_config, save_step_graph
from rnnrt.errors import ConfigError, UnsupportedOpError
from rnnrt.importers.onnx.context import parse_context
from rnnrt.importers.onnx.importer import convert_onnx
from rnnrt.runtime.pool import StreamPool

ort = pytest.importorskip("onnxruntime")
F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _w(name: str, *shape: int, scale: float = 0.5) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _i64(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _ort(model: onnx.ModelProto):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


# --- a causal time window before the recurrence -------------------------------------------------------

def _time_conv(front: int = 2, back: int = 0) -> onnx.ModelProto:
    """x [1, 1, T, 4] -> Pad(time: front, back) -> Conv kernel (3, 1) -> [T, 1, 4] -> GRU -> y [T, 1, 1, 3]."""
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["xp"], name="pad_time"),
        helper.make_node("Conv", ["xp", "cw"], ["xc"], name="conv_time", kernel_shape=[3, 1]),
        helper.make_node("Squeeze", ["xc", "ax01"], ["xs"]),
        helper.make_node("Unsqueeze", ["xs", "ax1"], ["xt"]),
        helper.make_node("GRU", ["xt", "W", "R", "B"], ["y"], name="gru", hidden_size=3),
    ]
    inits = [_i64("pads", [0, 0, front, 0, 0, 0, back, 0]), _w("cw", 1, 1, 3, 1), _i64("ax01", [0, 1]),
             _i64("ax1", [1]), _w("W", 1, 9, 4), _w("R", 1, 9, 3), _w("B", 1, 18)]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [1, 1, "T", 4])],
                  [helper.make_tensor_value_info("y", F, ["T", 1, 1, 3])], inits)


def test_causal_time_conv_before_the_recurrence_gets_its_context(tmp_path):
    model = _time_conv()
    step = convert_onnx(model)
    ctx = [s for s in step.states if s.input == "x.context"]
    assert ctx and list(ctx[0].shape) == [1, 1, 2, 4]
    assert any("inserted by convert" in n and "conv_time" in n for n in step.notes)
    x = RNG.standard_normal((1, 1, 12, 4)).astype(np.float32)
    want = _ort(model).run(None, {"x": x})[0]
    save_step_graph(step, tmp_path)
    with rnnrt.load(tmp_path / "model.yaml", backend="onnxruntime", batch_size=1) as session:
        got = np.concatenate([session.step({"x": x[:, :, t:t + 1]})["y"] for t in range(12)], axis=0)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_time_window_that_looks_ahead_is_refused_naming_the_op():
    with pytest.raises(UnsupportedOpError, match=r"Conv node 'conv_time'.*looks 1 frame\(s\) ahead"):
        convert_onnx(_time_conv(front=1, back=1))


def test_context_takes_an_axis_and_must_match_the_window():
    assert parse_context("input:64") == ("input", 64, None)
    assert parse_context("feat_erb:2:2") == ("feat_erb", 2, 2)
    assert parse_context("a:b:3") == ("a:b", 3, None)
    with pytest.raises(ConfigError, match="INPUT:K:AXIS"):
        parse_context("x:0")
    step = convert_onnx(_time_conv(), context="x:2:2")  # given by hand: the same as inserted
    assert [list(s.shape) for s in step.states if s.input == "x.context"] == [[1, 1, 2, 4]]
    with pytest.raises(ConfigError, match=r"(?s)reads 2 past entries along axis 2.*--context x:2:2"):
        convert_onnx(_time_conv(), context="x:3:2")


# --- an unrolled LSTM whose names follow no convention ------------------------------------------------

def _unrolled_lstm(hidden: int = 3, feat: int = 4) -> onnx.ModelProto:
    """frame [1, 4], memory [1, 2, 3] (h, c) -> out [1, 4], packed [1, 2, 3]: an LSTM cell in MatMul/Sigmoid/Tanh."""
    h4 = 4 * hidden
    nodes = [
        helper.make_node("Gather", ["memory", "i0"], ["h"], axis=1),
        helper.make_node("Gather", ["memory", "i1"], ["c"], axis=1),
        helper.make_node("MatMul", ["frame", "W"], ["xw"]),
        helper.make_node("MatMul", ["h", "R"], ["hr"]),
        helper.make_node("Add", ["xw", "hr"], ["s0"]),
        helper.make_node("Add", ["s0", "b"], ["gates"]),
        helper.make_node("Split", ["gates", "split"], ["gi", "gf", "gg", "go"], axis=1),
        helper.make_node("Sigmoid", ["gi"], ["i"]),
        helper.make_node("Sigmoid", ["gf"], ["f"]),
        helper.make_node("Tanh", ["gg"], ["g"]),
        helper.make_node("Sigmoid", ["go"], ["o"]),
        helper.make_node("Mul", ["f", "c"], ["fc"]),
        helper.make_node("Mul", ["i", "g"], ["ig"]),
        helper.make_node("Add", ["fc", "ig"], ["c2"]),
        helper.make_node("Tanh", ["c2"], ["tc"]),
        helper.make_node("Mul", ["o", "tc"], ["h2"]),
        helper.make_node("Unsqueeze", ["h2", "ax1"], ["h2u"]),
        helper.make_node("Unsqueeze", ["c2", "ax1"], ["c2u"]),
        helper.make_node("Concat", ["h2u", "c2u"], ["packed"], axis=1),
        helper.make_node("MatMul", ["h2", "Wy"], ["out"]),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "i0"), numpy_helper.from_array(np.array(1, np.int64), "i1"),
             _w("W", feat, h4), _w("R", hidden, h4), _w("b", h4), _i64("split", [hidden] * 4), _i64("ax1", [1]),
             _w("Wy", hidden, feat)]
    return _model(nodes, [helper.make_tensor_value_info("frame", F, [1, feat]),
                          helper.make_tensor_value_info("memory", F, [1, 2, hidden])],
                  [helper.make_tensor_value_info("out", F, [1, feat]),
                   helper.make_tensor_value_info("packed", F, [1, 2, hidden])], inits)


def test_unrolled_lstm_pair_with_no_naming_convention_is_paired_numerically(tmp_path):
    model = _unrolled_lstm()
    step = convert_onnx(model)
    assert [(s.input, s.output) for s in step.states] == [("memory", "packed")]
    assert any("'memory' -> 'packed': the names follow no convention" in n for n in step.notes)
    assert any("'frame' -> 'out'" in n and "not paired" in n for n in step.notes)
    frames = RNG.standard_normal((100, 1, 4)).astype(np.float32)
    sess, mem = _ort(model), np.zeros((1, 2, 3), np.float32)
    save_step_graph(step, tmp_path)
    with rnnrt.load(tmp_path / "model.yaml", backend="onnxruntime", batch_size=1) as session:
        for f in frames:
            want, mem = sess.run(None, {"frame": f, "memory": mem})
            np.testing.assert_array_equal(session.step({"frame": f})["out"], want)


# --- an intra-frame bidirectional RNN beside explicit caches ------------------------------------------

def _bands_gru_with_cache() -> onnx.ModelProto:
    """x [1, 4, 3] (4 bands): a bidirectional GRU across the bands inside the frame; cache [1, 3] carries
    the state between calls (cache_out = 0.5 * cache + f(x))."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["xb"], perm=[1, 0, 2]),
        helper.make_node("GRU", ["xb", "W", "R", "B"], ["yb"], name="band_gru", hidden_size=2, direction="bidirectional"),
        helper.make_node("Transpose", ["yb"], ["yt"], perm=[2, 0, 1, 3]),
        helper.make_node("Reshape", ["yt", "flat"], ["yf"]),
        helper.make_node("MatMul", ["yf", "P"], ["z"]),
        helper.make_node("Mul", ["cache", "half"], ["kept"]),
        helper.make_node("Add", ["kept", "z"], ["cache_out"]),
        helper.make_node("Tanh", ["cache_out"], ["y"]),
    ]
    inits = [_w("W", 2, 6, 3), _w("R", 2, 6, 2), _w("B", 2, 12), _i64("flat", [1, 16]), _w("P", 16, 3),
             numpy_helper.from_array(np.array([0.5], np.float32), "half")]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [1, 4, 3]), helper.make_tensor_value_info("cache", F, [1, 3])],
                  [helper.make_tensor_value_info("y", F, [1, 3]), helper.make_tensor_value_info("cache_out", F, [1, 3])], inits)


def test_intra_frame_bidirectional_rnn_beside_explicit_caches_is_left_alone(tmp_path):
    model = _bands_gru_with_cache()
    step = convert_onnx(model)
    assert [(s.input, s.output) for s in step.states] == [("cache", "cache_out")]
    assert any("'band_gru'" in n and "inside one frame" in n for n in step.notes)
    gru = next(n for n in step.model.graph.node if n.op_type == "GRU")
    assert helper.get_attribute_value(next(a for a in gru.attribute if a.name == "direction")) == b"bidirectional"
    sess, cache = _ort(model), np.zeros((1, 3), np.float32)
    save_step_graph(step, tmp_path)
    with rnnrt.load(tmp_path / "model.yaml", backend="onnxruntime", batch_size=1) as session:
        for _ in range(100):
            x = RNG.standard_normal((1, 4, 3)).astype(np.float32)
            want, cache = sess.run(None, {"x": x, "cache": cache})
            np.testing.assert_array_equal(session.step({"x": x})["y"], want)


def test_bidirectional_rnn_without_caches_is_still_refused():
    model = _bands_gru_with_cache()
    model.graph.input[1].name = "bias_in"  # no state naming convention: no caches take precedence
    for node in model.graph.node:
        node.input[:] = ["bias_in" if i == "cache" else i for i in node.input]
    with pytest.raises(UnsupportedOpError, match="band_gru.*bidirectional"):
        convert_onnx(model)


# --- a fixed-batch export -----------------------------------------------------------------------------

def _fixed_batch(mix: bool = False) -> onnx.ModelProto:
    """x [1, 1, 6] -> Reshape [1, 6] -> MatMul + h_in -> tanh -> h_out [1, 3]; y = Reshape(h_out, [1, 1, 3]).
    ``mix``: y also adds the mean of h_out over the batch (ReduceMean axes=[0]), which mixes the streams."""
    nodes = [
        helper.make_node("Reshape", ["x", "s16"], ["x2"], name="flat"),
        helper.make_node("MatMul", ["x2", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "h_in"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["h_out"]),
        helper.make_node("Reshape", ["h_out", "s113"], ["y0"], name="unflat"),
    ]
    if mix:
        nodes += [helper.make_node("ReduceMean", ["y0"], ["mean"], name="batch_mean", axes=[0], keepdims=1),
                  helper.make_node("Add", ["y0", "mean"], ["y"])]
    else:
        nodes.append(helper.make_node("Identity", ["y0"], ["y"]))
    inits = [_i64("s16", [1, 6]), _w("W", 6, 3), _i64("s113", [1, 1, 3])]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [1, 1, 6]), helper.make_tensor_value_info("h_in", F, [1, 3])],
                  [helper.make_tensor_value_info("y", F, [1, 1, 3]), helper.make_tensor_value_info("h_out", F, [1, 3])], inits)


def test_fixed_batch_export_pools_with_batch_dynamic(tmp_path):
    model = _fixed_batch()
    fixed = convert_onnx(model)
    assert fixed.states[0].shape == (1, 3)
    assert any("--batch dynamic" in n for n in fixed.notes)  # the hint, not shared= for per-stream data
    assert not any("shared=" in n for n in fixed.notes)
    step = convert_onnx(model, batch="dynamic")
    assert step.states[0].shape == ("batch", 3)
    assert {t.name: t.batch_axis for t in step.inputs} == {"x": 0}
    save_step_graph(step, tmp_path)
    load_config(tmp_path / "model.yaml")
    sess = _ort(model)
    hs = [np.zeros((1, 3), np.float32) for _ in range(3)]
    with rnnrt.load(tmp_path / "model.yaml", backend="onnxruntime", batch_size=3) as session:
        pool = StreamPool(session)
        for t in range(30):
            active = [k for k in range(3) if t >= 4 * k]
            for k in active:
                if t == 4 * k:
                    pool.open(k)
            xs = {k: RNG.standard_normal((1, 1, 6)).astype(np.float32) for k in active}
            outs = pool.step({k: {"x": xs[k]} for k in active})
            for k in active:
                want, hs[k] = sess.run(None, {"x": xs[k], "h_in": hs[k]})
                np.testing.assert_allclose(outs[k]["y"], want, atol=1e-6)


def test_batch_dynamic_refuses_an_op_that_mixes_the_streams():
    with pytest.raises(UnsupportedOpError, match="(?s)ReduceMean node 'batch_mean'.*[Mm]ixes the streams"):
        convert_onnx(_fixed_batch(mix=True), batch="dynamic")


# --- an unresolved exporter symbol in a state shape ---------------------------------------------------

def test_unresolved_symbol_in_a_state_shape_gives_a_valid_config(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "state"], ["pre"]),
             helper.make_node("Tanh", ["pre"], ["stateN"]), helper.make_node("Identity", ["stateN"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", F, [1, 4]), helper.make_tensor_value_info("state", F, [1, 8])],
                   [helper.make_tensor_value_info("y", F, [1, 8]), helper.make_tensor_value_info("stateN", F, ["unk__188", 8])],
                   [_w("W", 4, 8)])
    for batch in (None, "dynamic"):
        step = convert_onnx(model, batch=batch)
        assert [(s.input, s.output) for s in step.states] == [("state", "stateN")]
        out = tmp_path / str(batch)
        save_step_graph(step, out)
        cfg = load_config(out / "model.yaml")  # rnnrt's own validation passes
        assert "unk__188" not in (out / "model.yaml").read_text()
        assert cfg.state[0].shape == ((1, 8) if batch is None else ("batch", 8))
