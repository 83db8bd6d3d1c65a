"""Tests of rnnrt.build.precision: fp16/bf16 rewrites of hand-built LSTM step graphs.

The step graphs below are Caffe-style LSTM cells (cont multiplies the carried state) built with
onnx.helper (tests/build/graphs.py); tests/build/test_build.py builds TensorRT engines from the same graphs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from rnnrt.errors import ConfigError
from rnnrt.build.precision import convert_precision, emulate_precision

from tests.build.graphs import OPSET, STATE_IN, STATE_OUT, lstm_model  # noqa: E402,F401


def stream(model: onnx.ModelProto, steps: int, *, N: int = 1, seed: int = 1, reset_every: int = 0) -> dict[str, np.ndarray]:
    """Runs a step graph over ``steps`` calls in ONNX Runtime, feeding state back; returns the stacked
    user outputs per call and the final state. Inputs are fp32 (the graph's io dtype must be float32)."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    metas = {m.name: m for m in sess.get_inputs()}
    T = metas["data"].shape[0]
    I = metas["data"].shape[2]
    H = metas["lstm1.h0"].shape[1]
    state_dtype = np.float16 if metas["lstm1.h0"].type == "tensor(float16)" else np.float32
    rng = np.random.default_rng(seed)
    h = np.zeros((N, H), state_dtype)
    c = np.zeros((N, H), state_dtype)
    outs = []
    for k in range(steps):
        cont = np.ones((T, N), np.float32)
        if reset_every and k % reset_every == 0:
            cont[0] = 0
        feed = {"data": rng.uniform(-1, 1, (T, N, I)).astype(np.float32), "cont": cont, "lstm1.h0": h, "lstm1.c0": c}
        res = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
        h, c = res["lstm1.hT"], res["lstm1.cT"]
        outs.append(res[sess.get_outputs()[0].name].astype(np.float32))
    return {"y": np.stack(outs), "h": h.astype(np.float32), "c": c.astype(np.float32)}


def _types(model: onnx.ModelProto) -> dict[str, int]:
    return {vi.name: vi.type.tensor_type.elem_type for vi in list(model.graph.input) + list(model.graph.output)}


def _node_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    types.update(_types(inferred))
    return types


# ---------------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision,elem", [("fp16", TensorProto.FLOAT16), ("bf16", TensorProto.BFLOAT16)])
@pytest.mark.parametrize("scan", [False, True], ids=["cell", "scan"])
def test_rewrite_keeps_fp32_bindings_and_state_path(precision, elem, scan):
    model = lstm_model(T=4 if scan else 1, scan=scan, head=3)
    out = convert_precision(model, precision, state_inputs=STATE_IN, state_outputs=STATE_OUT)
    onnx.checker.check_model(out, full_check=True)
    assert set(_types(out).values()) == {TensorProto.FLOAT}
    weights = {t.name: t.data_type for t in out.graph.initializer}
    assert weights["lstm1/W"] == elem and weights["lstm1/R"] == elem and weights["ip/W"] == elem
    assert weights["lstm1/split"] == TensorProto.INT64
    types = _node_types(out)
    # The head (not on the state path) computes reduced; MatMuls are reduced everywhere.
    assert types["prob__" + precision] == elem if ("prob__" + precision) in types else types["ip"] == elem
    graph = out.graph if not scan else next(n for n in out.graph.node if n.op_type == "Scan").attribute[0].g
    by_out = {o: n for n in graph.node for o in n.output}
    assert by_out["lstm1/hr"].op_type == "MatMul"
    if not scan:
        assert types["lstm1/hr"] == elem
        # Cell update on the state path stays fp32.
        assert types["lstm1/cn"] == TensorProto.FLOAT and types["lstm1/f"] == TensorProto.FLOAT
    casts = [n for n in out.graph.node if n.op_type == "Cast"]
    assert casts, "expected Casts at the graph boundary"


@pytest.mark.parametrize("precision,elem", [("fp16", TensorProto.FLOAT16), ("bf16", TensorProto.BFLOAT16)])
def test_state_dtype_reduced_makes_state_bindings_reduced(precision, elem):
    model = lstm_model(head=3)
    dtype = {"fp16": "float16", "bf16": "bfloat16"}[precision]
    out = convert_precision(model, precision, state_dtype=dtype, state_inputs=STATE_IN, state_outputs=STATE_OUT)
    onnx.checker.check_model(out, full_check=True)
    types = _node_types(out)
    for name in STATE_IN + STATE_OUT:
        assert types[name] == elem
    assert types["data"] == TensorProto.FLOAT and types["prob"] == TensorProto.FLOAT
    assert types["lstm1/cn"] == elem


def test_io_dtype_fp16_types_user_bindings():
    out = convert_precision(lstm_model(), "fp16", io_dtype="float16", state_inputs=STATE_IN, state_outputs=STATE_OUT)
    onnx.checker.check_model(out, full_check=True)
    types = _types(out)
    assert types["data"] == types["cont"] == types["lstm1"] == TensorProto.FLOAT16
    assert types["lstm1.h0"] == types["lstm1.cT"] == TensorProto.FLOAT


def test_fp32_is_an_unchanged_copy():
    model = lstm_model()
    out = convert_precision(model, "fp32")
    assert out == model and out is not model


def test_int_tensors_untouched_and_constants_converted():
    # x(2,3) -> Shape -> Gather(0) -> Cast(float) * ConstantOfShape -> y ; Constant value_float added.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["ones"], value=numpy_helper.from_array(np.ones(1, np.float32))),
        helper.make_node("Constant", [], ["k"], value_float=2.0),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["sf"], ["n"], keepdims=1),
        helper.make_node("Mul", ["x", "ones"], ["a"]),
        helper.make_node("Mul", ["a", "k"], ["b"]),
        helper.make_node("Add", ["b", "n"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    out = convert_precision(model, "fp16")
    onnx.checker.check_model(out, full_check=True)
    types = _node_types(out)
    assert types["s"] == TensorProto.INT64
    assert types["ones"] == types["k"] == types["sf"] == types["b"] == TensorProto.FLOAT16
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, 2 * x + 5, atol=1e-2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"precision": "fp8"}, "Precision 'fp8' \\| Is not supported"),
        ({"precision": "fp16", "io_dtype": "int8"}, "io_dtype 'int8' \\| Is not a float dtype"),
        ({"precision": "fp32", "io_dtype": "float16"}, "need a reduced compute precision"),
        ({"precision": "fp16", "state_inputs": ["nope"], "state_outputs": ["lstm1.hT"]}, "State input 'nope'"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs, match):
    kwargs = dict(kwargs)
    precision = kwargs.pop("precision")
    with pytest.raises(ConfigError, match=match):
        convert_precision(lstm_model(), precision, **kwargs)


# ---------------------------------------------------------------------------------------------------
# Numerics over a 200-step stream (ORT CPU). Tolerances are measured maxima with ~2x headroom; see
# docs/build.md for the measured values.
# ---------------------------------------------------------------------------------------------------

STEPS = 200
# Max |reduced - fp32| over the 200 outputs (values in (-1, 1)). Measured (docs/build.md): fp16 7.7e-5
# (softmax head) / 3.4e-4 (h outputs) / 4.9e-4 (Scan), bf16 emulated 2.5e-3 / 4.6e-3 / 4.7e-3.
FP16_ATOL = 2e-3
BF16_ATOL = 2e-2


@pytest.mark.parametrize("state_dtype", ["float32", "float16"])
def test_fp16_stream_matches_fp32(state_dtype):
    model = lstm_model(I=16, H=32, head=8, batch=4)
    ref = stream(model, STEPS, N=4, reset_every=50)
    fp16 = convert_precision(model, "fp16", state_dtype=state_dtype, state_inputs=STATE_IN, state_outputs=STATE_OUT)
    got = stream(fp16, STEPS, N=4, reset_every=50)
    err = float(np.abs(got["y"] - ref["y"]).max())
    assert err < FP16_ATOL, err
    assert float(np.abs(got["c"] - ref["c"]).max()) < 10 * FP16_ATOL


def test_fp16_scan_chunks_match_fp32():
    model = lstm_model(I=16, H=32, T=8, scan=True, batch=2)
    ref = stream(model, STEPS // 8, N=2, reset_every=10)
    got = stream(
        convert_precision(model, "fp16", state_inputs=STATE_IN, state_outputs=STATE_OUT), STEPS // 8, N=2, reset_every=10
    )
    assert float(np.abs(got["y"] - ref["y"]).max()) < FP16_ATOL


@pytest.mark.parametrize("scan", [False, True], ids=["cell", "scan"])
def test_bf16_stream_matches_fp32_emulated(scan):
    # ORT's CPU provider has no bf16 MatMul/Add/Sigmoid kernels; emulate_precision rounds every bf16
    # tensor of the rewritten graph to bf16 after each op, with fp32 arithmetic inside the op.
    T, steps = (8, STEPS // 8) if scan else (1, STEPS)
    model = lstm_model(I=16, H=32, T=T, scan=scan, head=0 if scan else 8, batch=2)
    ref = stream(model, steps, N=2, reset_every=25)
    bf16 = convert_precision(model, "bf16", state_inputs=STATE_IN, state_outputs=STATE_OUT)
    emulated = emulate_precision(bf16)
    onnx.checker.check_model(emulated, full_check=True)
    got = stream(emulated, steps, N=2, reset_every=25)
    err = float(np.abs(got["y"] - ref["y"]).max())
    assert 0 < err < BF16_ATOL, err  # > 0: the emulation really rounds


def test_emulation_of_fp16_agrees_with_ort_fp16():
    model = lstm_model(I=16, H=32, head=8)
    fp16 = convert_precision(model, "fp16", state_inputs=STATE_IN, state_outputs=STATE_OUT)
    a = stream(fp16, 50)["y"]
    b = stream(emulate_precision(fp16), 50)["y"]
    assert float(np.abs(a - b).max()) < 2e-3


# ---------------------------------------------------------------------------------------------------
# Every golden Caffe case: 200 calls of the recorded inputs (cycled), state fed back, reduced vs fp32.
# Measured maxima over the 20 cases (see docs/build.md): fp16 5.0e-4 (state fp32) / 5.0e-4 (state
# fp16), bf16 (emulated) 4.7e-3. The tolerances leave 4x headroom.
# ---------------------------------------------------------------------------------------------------

GOLDEN_FP16_ATOL = 2e-3
GOLDEN_BF16_ATOL = 2e-2


def _golden_stream(model: onnx.ModelProto, step, case, calls: int = STEPS) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in sess.get_inputs()}
    state = {
        s.input: np.zeros(s.shape, np.float16 if types[s.input] == "tensor(float16)" else np.float32) for s in step.states
    }
    names = [o.name for o in sess.get_outputs()]
    outs = []
    for k in range(calls):
        feeds, _ = case.call(k % case.num_calls)
        res = dict(zip(names, sess.run(None, {**feeds, **state})))
        state = {s.input: res[s.output] for s in step.states}
        outs.append(np.concatenate([res[t.name].astype(np.float32).ravel() for t in step.outputs]))
    return np.stack(outs)


def _golden_names() -> list[str]:
    from tests.conftest import golden_cases

    return golden_cases()


@pytest.mark.parametrize("name", _golden_names())
def test_golden_case_reduced_precision_matches_fp32(golden, name):
    from rnnrt.importers.caffe import convert
    case = golden(name)
    step = convert.convert_caffe(case.prototxt, case.caffemodel)
    pairs = dict(state_inputs=[s.input for s in step.states], state_outputs=[s.output for s in step.states])
    ref = _golden_stream(step.model, step, case)
    for precision, state_dtype, atol in (
        ("fp16", "float32", GOLDEN_FP16_ATOL),
        ("fp16", "float16", GOLDEN_FP16_ATOL),
        ("bf16", "float32", GOLDEN_BF16_ATOL),
    ):
        model = convert_precision(step.model, precision, state_dtype=state_dtype, **pairs)
        onnx.checker.check_model(model, full_check=True)
        got = _golden_stream(emulate_precision(model) if precision == "bf16" else model, step, case)
        err = float(np.abs(got - ref).max())
        assert err < atol, f"{name} {precision} state {state_dtype}: max abs error {err:.2e}"
