"""ONNX importer: torch LSTM/GRU/RNN exports -> step graphs that stream through the Session.

Every model is ``nn.<kind>`` (+ a Linear head) exported by torch's legacy exporter with dynamic time and
batch axes. Two shapes of export::

    no state inputs:   x ──LSTM(initial_h = zeros)──Linear── y
    with state inputs: x ──LSTM(initial_h = Slice(h0))──Linear── y,  Concat(Y_h) ── hn
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import rnnrt
from rnnrt.cli import main as cli_main
from rnnrt.ir.config import load_config, save_step_graph
from rnnrt.errors import ConfigError, UnsupportedOpError
from rnnrt.importers.onnx.importer import convert_onnx

torch = pytest.importorskip("torch", reason="torch (CPU) exports the test models")

from tests.importers.onnx.models_torch import HIDDEN, INPUT, export_rnn  # noqa: E402

ATOL = 1e-5
KINDS = ["LSTM", "GRU", "RNN"]
CASES = list(itertools.product(KINDS, [1, 2], [False, True], [False, True]))
IDS = [f"{k}-L{l}-{'bf' if bf else 'tm'}-{'state' if st else 'nostate'}" for k, l, bf, st in CASES]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("torch_onnx")


_CACHE: dict = {}


def _converted(export_dir: Path, case: tuple, **options) -> tuple:
    key = (case, tuple(sorted(options.items())))
    if key not in _CACHE:
        model = export_rnn(export_dir, *case)
        step = convert_onnx(model.path, **options)
        out = export_dir / ("_".join(map(str, case)) + "_".join(f"{k}{v}" for k, v in sorted(options.items())))
        _CACHE[key] = (model, step, save_step_graph(step, out))
    return _CACHE[key]


def _stream(session, model, x: np.ndarray, **extra) -> np.ndarray:
    ys = [session.step({"x": f, **extra})["y"] for f in model.frames(x)]
    return np.concatenate(ys, axis=model.time_axis)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_stream_equals_torch_full_sequence(export_dir, case):
    model, step, yaml_path = _converted(export_dir, case)
    x = model.sequence(batch=2, steps=7, seed=1)
    with rnnrt.load(yaml_path, backend="onnxruntime", batch_size=2) as s:
        y = _stream(s, model, x)
    np.testing.assert_allclose(y, model.reference(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reset_equals_separate_segments(export_dir, case):
    model, step, yaml_path = _converted(export_dir, case)
    a, b = model.sequence(2, 4, seed=2), model.sequence(2, 3, seed=3)
    ax = model.time_axis
    with rnnrt.load(yaml_path, backend="onnxruntime", batch_size=2) as s:
        ya = _stream(s, model, a)
        s.reset()
        yb = _stream(s, model, b)
        s.reset()
        yb_again = _stream(s, model, b)
        # Only slot 1 starts over; slot 0 carries on.
        s.reset()
        _stream(s, model, a)
        s.reset(slots=[1])
        yb_slot = _stream(s, model, b)
    np.testing.assert_allclose(ya, model.reference(a), atol=ATOL, rtol=0)
    np.testing.assert_allclose(yb, model.reference(b), atol=ATOL, rtol=0)
    np.testing.assert_array_equal(yb, yb_again)
    whole = model.reference(np.concatenate([a, b], axis=ax))
    batch_ax = 1 - ax
    tail = np.take(whole, range(a.shape[ax], whole.shape[ax]), axis=ax)
    np.testing.assert_allclose(np.take(yb_slot, [0], axis=batch_ax), np.take(tail, [0], axis=batch_ax), atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.take(yb_slot, [1], axis=batch_ax), np.take(model.reference(b), [1], axis=batch_ax),
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_bindings(export_dir, case):
    kind, layers, batch_first, state_inputs = case
    model, step, yaml_path = _converted(export_dir, case)
    cfg = load_config(yaml_path)
    n_state = 2 if kind == "LSTM" else 1
    assert [t.name for t in cfg.inputs] == ["x"]
    assert [t.name for t in cfg.outputs] == ["y"]
    assert cfg.inputs[0].batch_axis == (0 if batch_first else 1)
    assert cfg.outputs[0].batch_axis == (0 if batch_first else 1)
    if state_inputs:
        # Paired by wiring: the model's own h0/c0 -> hn/cn, shape (layers, batch, H).
        assert [(p.input, p.output) for p in cfg.state] == list(zip(["h0", "c0"], ["hn", "cn"]))[:n_state]
        assert all(list(p.shape) == [layers, "batch", HIDDEN] and p.batch_axis == 1 for p in cfg.state)
    else:
        assert len(cfg.state) == layers * n_state
        assert all(list(p.shape) == [1, "batch", HIDDEN] and p.batch_axis == 1 for p in cfg.state)
        assert all(p.input.endswith((".h0", ".c0")) and p.output.endswith((".hT", ".cT")) for p in cfg.state)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_converted_model_builds_with_tensorrt_rtx(export_dir, case):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds without a GPU")
    from rnnrt.build.builder import BuildOptions, plan_from_config

    model, step, yaml_path = _converted(export_dir, case, add_reset=True)
    result = plan_from_config(yaml_path, options=BuildOptions(batch=(1, 2, 4), dims={"time": (1, 1, 8)}, trt_module="tensorrt_rtx"))
    assert len(result.plan) > 0
    assert result.profile == (1, 2, 4)
    assert result.manifest.flavour == "tensorrt_rtx" and "engine" not in yaml_path.read_text()  # the YAML is not rewritten


@pytest.mark.parametrize("case", [c for c in CASES if c[1] == 2], ids=[i for c, i in zip(CASES, IDS) if c[1] == 2])
def test_add_reset_cont_input_equals_separate_segments(export_dir, case):
    model, step, yaml_path = _converted(export_dir, case, add_reset=True)
    cfg = load_config(yaml_path)
    assert cfg.continuation is not None and cfg.continuation.input == "cont"
    assert list(cfg.inputs[1].shape) == [1, "batch"]
    a, b = model.sequence(2, 3, seed=4), model.sequence(2, 4, seed=5)
    ax, batch_ax = model.time_axis, 1 - model.time_axis
    with rnnrt.load(yaml_path, backend="onnxruntime", batch_size=2) as s:
        _stream(s, model, a)  # cont omitted: the Session fills 1 (0 on a fresh session)
        frames = model.frames(b)
        ys = [s.step({"x": frames[0], "cont": np.array([[1, 0]], np.float32)})["y"]]
        ys += [s.step({"x": f})["y"] for f in frames[1:]]
    yb = np.concatenate(ys, axis=ax)
    whole = model.reference(np.concatenate([a, b], axis=ax))
    tail = np.take(whole, range(a.shape[ax], whole.shape[ax]), axis=ax)
    np.testing.assert_allclose(np.take(yb, [0], axis=batch_ax), np.take(tail, [0], axis=batch_ax), atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.take(yb, [1], axis=batch_ax), np.take(model.reference(b), [1], axis=batch_ax),
                               atol=ATOL, rtol=0)


def test_chunks_of_several_frames(export_dir):
    model, step, yaml_path = _converted(export_dir, ("LSTM", 2, False, False))
    x = model.sequence(3, 9, seed=6)
    with rnnrt.load(yaml_path, backend="onnxruntime", batch_size=3) as s:
        y = np.concatenate([s.step({"x": x[t:t + 3]})["y"] for t in (0, 3, 6)], axis=0)
    np.testing.assert_allclose(y, model.reference(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("state_inputs", [False, True])
def test_bidirectional_is_a_typed_error(export_dir, state_inputs):
    model = export_rnn(export_dir, "LSTM", 1, False, state_inputs, bidirectional=True)
    with pytest.raises(UnsupportedOpError, match="Is bidirectional.*cannot stream"):
        convert_onnx(model.path)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_only_keeps_the_forward_direction(export_dir, tmp_path, kind):
    model = export_rnn(export_dir, kind, 1, False, False, bidirectional=True)
    step = convert_onnx(model.path, forward_only=True)
    assert any("forward direction" in n for n in step.notes)
    yaml_path = save_step_graph(step, tmp_path)
    # Reference: the forward direction alone, with the backward half of the head's input zeroed.
    uni = getattr(torch.nn, kind)(INPUT, HIDDEN, 1)
    src = model.module.rnn
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(uni, name).copy_(getattr(src, name))
    x = model.sequence(2, 5, seed=7)
    with torch.no_grad():
        h, _ = uni(torch.from_numpy(x))
        ref = model.module.head(torch.cat([h, torch.zeros_like(h)], dim=-1)).numpy()
    with rnnrt.load(yaml_path, backend="onnxruntime", batch_size=2) as s:
        y = _stream(s, model, x)
    np.testing.assert_allclose(y, ref, atol=ATOL, rtol=0)


def test_model_without_recurrent_nodes_is_stateless_with_a_note(tmp_path):
    lin = torch.nn.Linear(INPUT, 3).eval()
    path = tmp_path / "linear.onnx"
    torch.onnx.export(lin, (torch.zeros(2, INPUT),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    step = convert_onnx(path)
    assert step.states == [] and step.continuation is None
    assert any("no LSTM, GRU or RNN" in n for n in step.notes)
    yaml_path = save_step_graph(step, tmp_path / "out")
    x = np.random.default_rng(0).standard_normal((4, INPUT)).astype(np.float32)
    with rnnrt.load(yaml_path, backend="onnxruntime", batch_size=4) as s:
        y = s.step({"x": x})["y"]
    with torch.no_grad():
        np.testing.assert_allclose(y, lin(torch.from_numpy(x)).numpy(), atol=ATOL, rtol=0)


# --- hand-made ONNX recurrent nodes (features torch does not export) --------------------------------

def _lstm_model(layout: int = 0, seq_lens: bool = False, direction: str = "forward", with_yh: bool = False) -> onnx.ModelProto:
    """x[T,N,I] (or [N,T,I]) ──LSTM(no initial state)── Y ── y"""
    rng = np.random.default_rng(0)
    H, I, N = 4, 3, 2
    d = 2 if direction == "bidirectional" else 1
    W = helper.make_tensor("W", TensorProto.FLOAT, [d, 4 * H, I], rng.standard_normal(d * 4 * H * I).astype(np.float32) * 0.5)
    R = helper.make_tensor("R", TensorProto.FLOAT, [d, 4 * H, H], rng.standard_normal(d * 4 * H * H).astype(np.float32) * 0.5)
    B = helper.make_tensor("B", TensorProto.FLOAT, [d, 8 * H], rng.standard_normal(d * 8 * H).astype(np.float32) * 0.1)
    x_shape = ["T", N, I] if layout == 0 else [N, "T", I]
    y_shape = ["T", d, N, H] if layout == 0 else [N, "T", d, H]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    node_inputs = ["x", "W", "R", "B"]
    if seq_lens:
        inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, [N]))
        node_inputs.append("lens")
    outs = ["y", "y_h"] if with_yh else ["y"]
    node = helper.make_node("LSTM", node_inputs, outs, hidden_size=H, layout=layout, direction=direction, name="lstm")
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)]
    graph = helper.make_graph([node], "g", inputs, outputs, [W, R, B])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_layout1_is_rewritten_and_streams(tmp_path):
    from onnx.reference import ReferenceEvaluator

    model = _lstm_model(layout=1)
    step = convert_onnx(model)
    assert all(n.attribute and n.op_type != "LSTM" or helper.get_attribute_value(
        next(a for a in n.attribute if a.name == "layout")) == 0 for n in step.model.graph.node if n.op_type == "LSTM")
    assert [t.batch_axis for t in step.inputs] == [0]
    yaml_path = save_step_graph(step, tmp_path)
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype(np.float32)
    # Reference: the same node in layout 0, run once over the whole sequence.
    ref_model = _lstm_model(layout=0)
    ref = ReferenceEvaluator(ref_model).run(None, {"x": x.transpose(1, 0, 2)})[0].transpose(2, 0, 1, 3)
    with rnnrt.load(yaml_path, backend="onnxruntime") as s:
        y = np.concatenate([s.step({"x": x[:, t:t + 1]})["y"] for t in range(5)], axis=1)
    np.testing.assert_allclose(y, ref, atol=ATOL, rtol=0)


def test_sequence_lens_is_rejected():
    with pytest.raises(UnsupportedOpError, match="sequence_lens"):
        convert_onnx(_lstm_model(seq_lens=True))


def test_reverse_is_rejected():
    with pytest.raises(UnsupportedOpError, match="reverse"):
        convert_onnx(_lstm_model(direction="reverse"))


# --- override --------------------------------------------------------------------------------------

def _cell_model() -> onnx.ModelProto:
    """A hand-written RNN cell: no recurrent node; h_in/h_out carry the state.

        x[N,3] ─MatMul(Wx)─┐
                           Add─Tanh── h_out[N,4] ── y = Identity
        h_in[N,4] ─MatMul(Wh)┘
    """
    rng = np.random.default_rng(0)
    wx = helper.make_tensor("Wx", TensorProto.FLOAT, [3, 4], rng.standard_normal(12).astype(np.float32))
    wh = helper.make_tensor("Wh", TensorProto.FLOAT, [4, 4], rng.standard_normal(16).astype(np.float32) * 0.5)
    nodes = [
        helper.make_node("MatMul", ["x", "Wx"], ["a"]),
        helper.make_node("MatMul", ["h_in", "Wh"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["c"]),
        helper.make_node("Tanh", ["c"], ["h_out"]),
        helper.make_node("Identity", ["h_out"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "cell",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]), helper.make_tensor_value_info("h_in", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]), helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["N", 4])],
        [wx, wh],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_override_declares_state_of_a_hand_written_cell(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text(
        "state:\n  - {input: h_in, output: h_out, batch_axis: 0}\n"
        "inputs:\n  - {name: x, batch_axis: 0}\noutputs:\n  - {name: y, batch_axis: 0}\n"
    )
    step = convert_onnx(_cell_model(), override=override)
    assert [(p.input, p.output, p.batch_axis) for p in step.states] == [("h_in", "h_out", 0)]
    yaml_path = save_step_graph(step, tmp_path / "out")
    x = np.random.default_rng(2).standard_normal((3, 2, 3)).astype(np.float32)
    m = _cell_model()
    wx = onnx.numpy_helper.to_array(m.graph.initializer[0])
    wh = onnx.numpy_helper.to_array(m.graph.initializer[1])
    h = np.zeros((2, 4), np.float32)
    with rnnrt.load(yaml_path, backend="onnxruntime", batch_size=2) as s:
        for t in range(3):
            h = np.tanh(x[t] @ wx + h @ wh)
            np.testing.assert_allclose(s.step({"x": x[t]})["y"], h, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "text, match",
    [
        ("state:\n  - {input: nope, output: h_out}\n", "'nope'.*Is not a graph input"),
        ("state:\n  - {input: h_in, output: y_wrong}\n", "'y_wrong'.*Is not a graph output"),
        ("state:\n  - {input: x, output: h_out}\n", "same dtype and shape"),
        ("state:\n  - {input: h_in, output: h_out, batch_axis: 2}\n", "batch_axis 2 is out of range"),
        ("inputs:\n  - {name: x, batch_axis: 5}\n", "batch_axis 5 is out of range"),
        ("outputs:\n  - {name: h_in, batch_axis: 0}\n", "Is not a user output"),
        ("continuation: {input: q, batch_axis: 0}\n", "'q'.*Is not a user input"),
        ("stat: []\n", "stat: unknown key"),
    ],
)
def test_override_is_validated_against_the_model(tmp_path, text, match):
    override = tmp_path / "override.yaml"
    override.write_text(text)
    with pytest.raises(ConfigError, match=match):
        convert_onnx(_cell_model(), override=override)


def test_override_replaces_detected_pairing(export_dir):
    model, _, _ = _converted(export_dir, ("GRU", 2, False, True))
    step = convert_onnx(model.path, override={"state": []})
    assert step.states == []
    assert {t.name for t in step.inputs} == {"x", "h0"}
    assert {t.name for t in step.outputs} == {"y", "hn"}


# --- wiring, not names --------------------------------------------------------------------------------

def test_pairing_follows_wiring_not_names(tmp_path):
    """State inputs named against their role: 'b' feeds initial_h, 'a' is the output of Y_h.

        a_in ─Slice─ initial_h ─LSTM─ Y_h ─Identity─ a_out_misleading
    """
    model = _lstm_model(with_yh=True)
    g = model.graph
    g.input.append(helper.make_tensor_value_info("zz_state", TensorProto.FLOAT, [1, 2, 4]))
    g.node[0].input.extend(["", "zz_state"])
    g.node.append(helper.make_node("Identity", ["y_h"], ["aa_next"]))
    g.output.append(helper.make_tensor_value_info("aa_next", TensorProto.FLOAT, [1, 2, 4]))
    step = convert_onnx(model)
    h = [p for p in step.states if p.input == "zz_state"]
    assert h and h[0].output == "aa_next"


def test_state_input_that_no_output_carries_is_exposed_per_node(tmp_path):
    """h0 feeds the LSTM but the model returns only y: the node's state is exposed on its own."""
    model = _lstm_model()
    g = model.graph
    g.input.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 2, 4]))
    g.node[0].input.extend(["", "h0"])
    step = convert_onnx(model)
    assert [p.input for p in step.states] == ["lstm.h0", "lstm.c0"]
    assert "h0" not in {i.name for i in step.model.graph.input}
    assert any("'h0'" in n and "no longer used" in n for n in step.notes)


@pytest.mark.parametrize("value, noted", [(0.0, False), (0.5, True)])
def test_constant_initial_state_is_exposed_and_non_zero_is_noted(value, noted):
    model = _lstm_model()
    g = model.graph
    g.initializer.append(helper.make_tensor("h_init", TensorProto.FLOAT, [1, 2, 4], np.full(8, value, np.float32)))
    g.node[0].input.extend(["", "h_init"])
    step = convert_onnx(model)
    assert [p.input for p in step.states] == ["lstm.h0", "lstm.c0"]
    assert "h_init" not in {t.name for t in step.model.graph.initializer}
    assert any("is not zero" in n for n in step.notes) == noted


def test_cli_convert_onnx_with_flags(export_dir, tmp_path, capsys):
    model = export_rnn(export_dir, "LSTM", 1, True, False)
    out = tmp_path / "cli"
    assert cli_main(["convert", str(model.path), "-o", str(out), "--add-reset"]) == 0
    cfg = load_config(out / "model.yaml")
    assert cfg.continuation is not None and cfg.continuation.input == "cont"
    assert cfg.source["format"] == "onnx"
    printed = capsys.readouterr().out
    assert "state rnn.LSTM.h0 -> rnn.LSTM.hT" in printed
    bi = export_rnn(export_dir, "GRU", 1, False, False, bidirectional=True)
    assert cli_main(["convert", str(bi.path), "-o", str(tmp_path / "bi")]) == 2
    assert "bidirectional" in capsys.readouterr().err
    assert cli_main(["convert", str(bi.path), "-o", str(tmp_path / "bi"), "--forward-only"]) == 0


def _two_layer_model(swap_output: bool) -> onnx.ModelProto:
    """Two stacked GRUs whose initial states are rows of h0; hn concatenates their final states.

        h0[2,N,4] ─Slice 0:1─ GRU1 ─Squeeze─ GRU2 ─ ... ─ y
                  └Slice 1:2───────────────┘
        hn = Concat(Y_h1, Y_h2)   (swap_output: Concat(Y_h2, Y_h1): rows do not go back where they came from)
    """
    rng = np.random.default_rng(0)
    H, I, N = 4, 3, 2
    inits, nodes = [], []
    for k, size in ((1, I), (2, H)):
        inits += [
            helper.make_tensor(f"W{k}", TensorProto.FLOAT, [1, 3 * H, size], rng.standard_normal(3 * H * size).astype(np.float32) * 0.5),
            helper.make_tensor(f"R{k}", TensorProto.FLOAT, [1, 3 * H, H], rng.standard_normal(3 * H * H).astype(np.float32) * 0.5),
        ]
    for k, (a, b) in enumerate(((0, 1), (1, 2)), start=1):
        inits += [helper.make_tensor(f"s{k}", TensorProto.INT64, [1], [a]), helper.make_tensor(f"e{k}", TensorProto.INT64, [1], [b])]
    inits.append(helper.make_tensor("ax0", TensorProto.INT64, [1], [0]))
    inits.append(helper.make_tensor("ax1", TensorProto.INT64, [1], [1]))
    nodes += [
        helper.make_node("Slice", ["h0", "s1", "e1", "ax0"], ["i1"]),
        helper.make_node("Slice", ["h0", "s2", "e2", "ax0"], ["i2"]),
        helper.make_node("GRU", ["x", "W1", "R1", "", "", "i1"], ["y1", "yh1"], hidden_size=H, name="gru1"),
        helper.make_node("Squeeze", ["y1", "ax1"], ["x2"]),
        helper.make_node("GRU", ["x2", "W2", "R2", "", "", "i2"], ["y2", "yh2"], hidden_size=H, name="gru2"),
        helper.make_node("Squeeze", ["y2", "ax1"], ["y"]),
        helper.make_node("Concat", ["yh2", "yh1"] if swap_output else ["yh1", "yh2"], ["hn"], axis=0),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", N, I]), helper.make_tensor_value_info("h0", TensorProto.FLOAT, [2, N, H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", N, H]), helper.make_tensor_value_info("hn", TensorProto.FLOAT, [2, N, H])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("swap_output", [False, True])
def test_pairing_checks_rows_go_back_where_they_came_from(tmp_path, swap_output):
    step = convert_onnx(_two_layer_model(swap_output))
    if swap_output:
        assert [(p.input, p.output) for p in step.states] == [("gru1.h0", "gru1.hT"), ("gru2.h0", "gru2.hT")]
        assert {t.name for t in step.outputs} == {"y", "hn"}
    else:
        assert [(p.input, p.output, p.batch_axis) for p in step.states] == [("h0", "hn", 1)]
    # Either way, streaming equals one full-sequence run from zero state.
    from onnx.reference import ReferenceEvaluator

    x = np.random.default_rng(3).standard_normal((6, 2, 3)).astype(np.float32)
    ref = ReferenceEvaluator(_two_layer_model(swap_output)).run(["y"], {"x": x, "h0": np.zeros((2, 2, 4), np.float32)})[0]
    with rnnrt.load(save_step_graph(step, tmp_path), backend="onnxruntime") as s:
        y = np.concatenate([s.step({"x": x[t:t + 1]})["y"] for t in range(6)], axis=0)
    np.testing.assert_allclose(y, ref, atol=ATOL, rtol=0)
