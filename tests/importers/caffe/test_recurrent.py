"""LSTM/RNN expansion: numpy reference, step-by-step == chunk, resets, dynamic batch, static input."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import rnnrt
from rnnrt.importers.caffe.convert import convert_caffe
from rnnrt.ir.config import save_step_graph
from tests.importers.caffe.nets import input_layer, write_net

RNG = np.random.default_rng(11)
D, H, S = 5, 4, 3


def sig(x):
    return 1 / (1 + np.exp(-x))


def reference(kind, blobs, x, cont, x_static=None, h=None, c=None):
    """Caffe's recurrence in float64 (see rnnrt/importers/caffe/layers/recurrent.py for the equations)."""
    t, n = cont.shape
    w_x, b = blobs[0].astype(np.float64), blobs[1].astype(np.float64)
    w_s = blobs[2].astype(np.float64) if x_static is not None else None
    w_h = blobs[2 + (x_static is not None)].astype(np.float64)
    h = np.zeros((n, H)) if h is None else h
    c = np.zeros((n, H)) if c is None else c
    ys = []
    for k in range(t):
        ct = cont[k][:, None]
        g = x[k].reshape(n, -1) @ w_x.T + b + (ct * h) @ w_h.T
        if w_s is not None:
            g = g + x_static.reshape(n, -1) @ w_s.T
        if kind == "LSTM":
            i, f, o, gg = sig(g[:, :H]), sig(g[:, H : 2 * H]), sig(g[:, 2 * H : 3 * H]), np.tanh(g[:, 3 * H :])
            c = ct * f * c + i * gg
            h = o * np.tanh(c)
            ys.append(h)
        else:
            h = np.tanh(g)
            ys.append(np.tanh(h @ blobs[-2].T.astype(np.float64) + blobs[-1]))
    return np.stack(ys), h, c


def make_blobs(kind, static):
    g = 4 * H if kind == "LSTM" else H
    blobs = [RNG.uniform(-0.5, 0.5, (g, D)), RNG.uniform(-0.5, 0.5, (g,))]
    if static:
        blobs.append(RNG.uniform(-0.5, 0.5, (g, S)))
    blobs.append(RNG.uniform(-0.5, 0.5, (g, H)))
    if kind == "RNN":
        blobs += [RNG.uniform(-0.5, 0.5, (H, H)), RNG.uniform(-0.5, 0.5, (H,))]
    return [b.astype(np.float32) for b in blobs]


def recurrent_net(kind, t, n, static=False):
    ins = [("x", (t, n, D)), ("cont", (t, n))] + ([("xs", (n, S))] if static else [])
    bottoms = "".join(f'bottom: "{name}" ' for name, _ in ins)
    return input_layer(*ins) + f'layer {{ name: "rec" type: "{kind}" {bottoms} top: "y" recurrent_param {{ num_output: {H} }} }}\n'


def session_for(tmp_path, kind, t, n, blobs, static=False, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    proto, weights = write_net(tmp_path, recurrent_net(kind, t, n, static), {"rec": blobs})
    return rnnrt.load(save_step_graph(convert_caffe(proto, weights, **kw), tmp_path / "out"), backend="onnxruntime", **({"batch_size": n} if kw.get("batch") else {}))


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static", [False, True])
def test_matches_reference_over_calls(tmp_path, kind, static):
    t, n = 6, 3
    blobs = make_blobs(kind, static)
    x = RNG.uniform(-1, 1, (3, t, n, D)).astype(np.float32)
    cont = np.ones((3, t, n), np.float32)
    cont[0, 0] = 0
    cont[1, 2, 1] = 0  # a reset inside the chunk, one slot only
    cont[2, 0, 2] = 0.5  # fractional: scales the carried state
    xs = RNG.uniform(-1, 1, (n, S)).astype(np.float32) if static else None
    h = c = None
    with session_for(tmp_path, kind, t, n, blobs, static) as s:
        for k in range(3):
            feeds = {"x": x[k], "cont": cont[k]} | ({"xs": xs} if static else {})
            ref, h, c = reference(kind, blobs, x[k], cont[k], xs, h, c)
            np.testing.assert_allclose(s.step(feeds)["y"], ref, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(s.state["rec.h0"], h, atol=1e-5)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_single_steps_equal_one_chunk(tmp_path, kind):
    t, n = 7, 2
    blobs = make_blobs(kind, False)
    x = RNG.uniform(-1, 1, (t, n, D)).astype(np.float32)
    cont = np.ones((t, n), np.float32)
    cont[4, 0] = 0
    with session_for(tmp_path / "chunk", kind, t, n, blobs) as chunk:
        y_chunk = chunk.step({"x": x, "cont": cont})["y"]
        state_chunk = {k: v.copy() for k, v in chunk.state.items()}
    with session_for(tmp_path / "step", kind, 1, n, blobs) as stepper:
        y_steps = np.concatenate([stepper.step({"x": x[k : k + 1], "cont": cont[k : k + 1]})["y"] for k in range(t)])
        for name, value in state_chunk.items():
            np.testing.assert_allclose(stepper.state[name], value, atol=1e-6)
    np.testing.assert_allclose(y_steps, y_chunk, atol=1e-6)


def test_reset_equals_cont_zero_and_slot_reset_is_local(tmp_path):
    n = 3
    blobs = make_blobs("LSTM", False)
    xs = RNG.uniform(-1, 1, (6, 1, n, D)).astype(np.float32)
    with session_for(tmp_path / "a", "LSTM", 1, n, blobs) as a, session_for(tmp_path / "b", "LSTM", 1, n, blobs) as b:
        for k in range(3):
            a.step({"x": xs[k]})
            b.step({"x": xs[k]})
        before = {k: v.copy() for k, v in a.state.items()}
        a.reset(slots=[1])
        for name, value in a.state.items():
            np.testing.assert_array_equal(np.delete(value, 1, axis=0), np.delete(before[name], 1, axis=0))
            assert not value[1].any()
        cont = np.ones((1, n), np.float32)
        cont[0, 1] = 0
        ya = a.step({"x": xs[3]})["y"]
        yb = b.step({"x": xs[3], "cont": cont})["y"]
        np.testing.assert_array_equal(ya, yb)


def test_dynamic_batch_rows_equal_fixed_batch(tmp_path):
    blobs = make_blobs("LSTM", False)
    x = RNG.uniform(-1, 1, (4, 5, D)).astype(np.float32)
    with session_for(tmp_path / "fixed", "LSTM", 4, 2, blobs) as fixed:
        ref = fixed.step({"x": x[:, :2]})["y"]
    with session_for(tmp_path / "dyn", "LSTM", 4, 5, blobs, batch="dynamic") as dyn:
        assert dyn.batch_size == 5
        y = dyn.step({"x": x})["y"]
    np.testing.assert_allclose(y[:, :2], ref, atol=1e-6)


def test_dynamic_batch_declares_symbolic_dims(tmp_path):
    proto, weights = write_net(tmp_path, recurrent_net("LSTM", 1, 2), {"rec": make_blobs("LSTM", False)})
    step = convert_caffe(proto, weights, batch="dynamic")
    assert [s.shape for s in step.states] == [("batch", H), ("batch", H)]
    assert {i.name: i.shape for i in step.inputs} == {"x": (1, "batch", D), "cont": (1, "batch")}


def test_expose_hidden_has_no_state(tmp_path):
    n = 2
    ins = [("x", (3, n, D)), ("cont", (3, n)), ("h0", (1, n, H)), ("c0", (1, n, H))]
    proto = input_layer(*ins) + """
layer { name: "rec" type: "LSTM" bottom: "x" bottom: "cont" bottom: "h0" bottom: "c0" top: "y" top: "hT" top: "cT"
  recurrent_param { num_output: 4 expose_hidden: true } }
"""
    blobs = make_blobs("LSTM", False)
    p, w = write_net(tmp_path, proto, {"rec": blobs})
    step = convert_caffe(p, w)
    assert step.states == []
    feeds = {"x": RNG.uniform(-1, 1, (3, n, D)).astype(np.float32), "cont": np.ones((3, n), np.float32),
             "h0": RNG.uniform(-1, 1, (1, n, H)).astype(np.float32), "c0": RNG.uniform(-1, 1, (1, n, H)).astype(np.float32)}
    with rnnrt.load(save_step_graph(step, tmp_path / "out"), backend="onnxruntime") as s:
        for _ in range(2):  # no implicit carry: the same feeds give the same outputs
            out = s.step(feeds)
            ref, h, c = reference("LSTM", blobs, feeds["x"], feeds["cont"], None, feeds["h0"][0], feeds["c0"][0])
            np.testing.assert_allclose(out["y"], ref, atol=1e-5)
            np.testing.assert_allclose(out["hT"][0], h, atol=1e-5)
            np.testing.assert_allclose(out["cT"][0], c, atol=1e-5)


def test_t1_graph_has_no_loop_and_chunk_uses_scan(tmp_path):
    blobs = make_blobs("LSTM", False)
    for t, expect in ((1, set()), (5, {"Scan"})):
        p, w = write_net(tmp_path, recurrent_net("LSTM", t, 2), {"rec": blobs})
        ops = {n.op_type for n in convert_caffe(p, w).model.graph.node}
        assert ops & {"Loop", "Scan"} == expect


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static", [False, True])
def test_random_weights_follow_the_fillers(tmp_path, kind, static):
    """Without a caffemodel the blobs come from the fillers as in Caffe's unrolled net: every W (x, static, h
    and RNN's W_ho) from weight_filler, b_c / b_h and RNN's b_o from bias_filler."""
    t, n = 3, 2
    fillers = 'weight_filler { type: "constant" value: 0.25 } bias_filler { type: "constant" value: -0.5 }'
    proto = recurrent_net(kind, t, n, static).replace(f"num_output: {H}", f"num_output: {H} {fillers}")
    step = convert_caffe(write_net(tmp_path, proto)[0], None)
    g = 4 * H if kind == "LSTM" else H
    blobs = [np.full((g, D), 0.25), np.full(g, -0.5)] + ([np.full((g, S), 0.25)] if static else []) + [np.full((g, H), 0.25)]
    if kind == "RNN":
        blobs += [np.full((H, H), 0.25), np.full(H, -0.5)]
    x = RNG.uniform(-1, 1, (t, n, D)).astype(np.float32)
    cont = np.ones((t, n), np.float32)
    xs = RNG.uniform(-1, 1, (n, S)).astype(np.float32) if static else None
    h0 = {s.input: RNG.uniform(-1, 1, s.shape).astype(np.float32) for s in step.states}
    sess = ort.InferenceSession(step.model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["y"], {"x": x, "cont": cont, **({"xs": xs} if static else {}), **h0})[0]
    ref, _, _ = reference(kind, blobs, x, cont, xs, h0["rec.h0"], h0.get("rec.c0"))
    np.testing.assert_allclose(got, ref, atol=1e-5)


def _dynamic_net(kind, t, variant):
    """A net at N = 1 (a deploy prototxt) with x as T x 1 x D x 1 and a static input as 1 x S x 1: the stream
    axis must be followed through the reshapes, not guessed from the unit dims."""
    n_state = 2 if kind == "LSTM" else 1
    ins = [("x", (t, 1, D, 1)), ("cont", (t, 1))]
    tops = ["y"]
    param = f"num_output: {H}"
    if variant == "static":
        ins.append(("xs", (1, S, 1)))
    if variant == "expose":
        ins += [("h0", (1, 1, H)), ("c0", (1, 1, H))][:n_state]
        tops += ["hT", "cT"][:n_state]
        param += " expose_hidden: true"
    bottoms = "".join(f'bottom: "{name}" ' for name, _ in ins)
    tops = "".join(f'top: "{name}" ' for name in tops)
    return input_layer(*ins) + f'layer {{ name: "rec" type: "{kind}" {bottoms}{tops}recurrent_param {{ {param} }} }}\n'


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("t", [1, 3])
@pytest.mark.parametrize("variant", ["plain", "static", "expose"])
def test_dynamic_batch_from_n1_prototxt_runs_any_batch(tmp_path, kind, t, variant):
    n = 3  # streams fed; the prototxt says 1
    blobs = make_blobs(kind, variant == "static")
    proto, weights = write_net(tmp_path, _dynamic_net(kind, t, variant), {"rec": blobs})
    step = convert_caffe(proto, weights, batch="dynamic")
    n_state = 2 if kind == "LSTM" else 1
    outs = {o.name: (o.shape, o.batch_axis) for o in step.outputs}
    want = {"y": ((t, "batch", H), 1)}
    if variant == "expose":
        want |= {k: ((1, "batch", H), 1) for k in ["hT", "cT"][:n_state]}
    assert outs == want
    assert [(s.shape, s.batch_axis) for s in step.states] == ([] if variant == "expose" else [(("batch", H), 0)] * n_state)
    x = RNG.uniform(-1, 1, (t, n, D, 1)).astype(np.float32)
    cont = (RNG.random((t, n)) > 0.3).astype(np.float32)
    feeds = {"x": x, "cont": cont}
    xs = None
    if variant == "static":
        xs = RNG.uniform(-1, 1, (n, S, 1)).astype(np.float32)
        feeds["xs"] = xs
    state = {name: RNG.uniform(-1, 1, (n, H)).astype(np.float32) for name in ("h", "c")[:n_state]}
    if variant == "expose":
        feeds |= {f"{k}0": v[None] for k, v in state.items()}
    else:
        feeds |= {f"rec.{k}0": v for k, v in state.items()}
    sess = ort.InferenceSession(step.model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, feeds)))
    ref, h, c = reference(kind, blobs, x, cont, xs, state["h"], state.get("c"))
    np.testing.assert_allclose(got["y"], ref, atol=1e-5)
    final = {"h": h, "c": c}
    for k in ("h", "c")[:n_state]:
        np.testing.assert_allclose(got[f"{k}T"][0] if variant == "expose" else got[f"rec.{k}T"], final[k], atol=1e-5)
