"""``--batch dynamic`` through ScatterND/GatherND whose constant indices name batch row 0.

A batch-1 export that reads or writes its state with ScatterND/GatherND at constant indices names row 0 of
the batch in every index (the only row it has). With the batch made dynamic, the indices get one row per
stream (built at run time) so that each stream reads and writes its own row; indices that leave the
streams reading one row stay refused, naming the op.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import rnnrt
from rnnrt.ir.config import save_step_graph
from rnnrt.errors import UnsupportedOpError
from rnnrt.importers.onnx.importer import convert_onnx
from rnnrt.runtime.pool import StreamPool

ort = pytest.importorskip("onnxruntime")

F = TensorProto.FLOAT
RNG = np.random.default_rng(20)


def _model(read_both_slots: bool = False) -> onnx.ModelProto:
    """x [1, 4]; state h_in [1, 2, 4] (batch, slot, feature). Reads slot 1 of row 0 with GatherND, writes
    slot 0 of row 0 with ScatterND: h_out[0, 0] = tanh(x @ W + h_in[0, 1]); y = h_out[0, 0].
    ``read_both_slots``: the GatherND indices [[0, 0], [0, 1]] have no unit axis for the streams, so with a
    dynamic batch every stream would read row 0 (they mix)."""
    if read_both_slots:
        read = [helper.make_node("GatherND", ["h_in", "both"], ["g2"], name="read_slots"),
                helper.make_node("ReduceSum", ["g2", "ax0"], ["g"], name="sum_slots", keepdims=1)]
    else:
        read = [helper.make_node("GatherND", ["h_in", "slot1"], ["g3"], name="read_slot"),
                helper.make_node("Reshape", ["g3", "s14"], ["g"], name="flat_read")]
    nodes = read + [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "g"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["y"]),
        helper.make_node("Reshape", ["y", "s114"], ["upd"], name="to_updates"),
        helper.make_node("ScatterND", ["h_in", "slot0", "upd"], ["h_out"], name="write_slot"),
    ]
    inits = [numpy_helper.from_array(np.array([[[0, 1]]], np.int64), "slot1"),
             numpy_helper.from_array(np.array([[[0, 0]]], np.int64), "slot0"),
             numpy_helper.from_array(np.array([[0, 0], [0, 1]], np.int64), "both"),
             numpy_helper.from_array(np.array([0], np.int64), "ax0"),
             numpy_helper.from_array(np.array([1, 4], np.int64), "s14"),
             numpy_helper.from_array(np.array([1, 1, 4], np.int64), "s114"),
             numpy_helper.from_array((RNG.standard_normal((4, 4)) * 0.5).astype(np.float32), "W")]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", F, [1, 4]),
                                           helper.make_tensor_value_info("h_in", F, [1, 2, 4])],
                              [helper.make_tensor_value_info("y", F, [1, 4]),
                               helper.make_tensor_value_info("h_out", F, [1, 2, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_constant_row0_indices_get_one_row_per_stream(tmp_path):
    model = _model()
    step = convert_onnx(model, batch="dynamic")
    assert [(s.input, s.output, s.shape) for s in step.states] == [("h_in", "h_out", ("batch", 2, 4))]
    ops = {n.name: n for n in step.model.graph.node}
    for name in ("read_slot", "write_slot"):  # indices now computed per row, not the constant
        assert ops[name].input[1] not in {"slot0", "slot1"}
    save_step_graph(step, tmp_path)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    hs = [np.zeros((1, 2, 4), np.float32) for _ in range(3)]
    with rnnrt.load(tmp_path / "model.yaml", backend="onnxruntime", batch_size=3) as session:
        pool = StreamPool(session)
        stepped = 0
        for t in range(40):
            active = [k for k in range(3) if t >= 5 * k and not (k == 1 and t % 4 == 0)]
            for k in active:
                if t == 5 * k:
                    pool.open(k)
            xs = {k: RNG.standard_normal((1, 4)).astype(np.float32) for k in active}
            outs = pool.step({k: {"x": xs[k]} for k in active})
            for k in active:
                want, hs[k] = ref.run(None, {"x": xs[k], "h_in": hs[k]})
                np.testing.assert_allclose(outs[k]["y"], want, rtol=1e-6, atol=1e-6)
                stepped += 1
    assert stepped > 90


def test_indices_that_read_one_row_for_every_stream_are_refused():
    fixed = convert_onnx(_model(read_both_slots=True))  # one stream: fine
    assert fixed.states[0].shape == (1, 2, 4)
    with pytest.raises(UnsupportedOpError, match="(?s)GatherND node 'read_slots'.*[Mm]ixes the streams"):
        convert_onnx(_model(read_both_slots=True), batch="dynamic")

