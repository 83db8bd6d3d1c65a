"""Tests of rnnrt.runtime.session: stepping, state feedback, reset, continuation fill, bad input, ownership.

References: a float64 numpy LSTM (tests/models/lstm.py), the Scan sequence graph, and the golden
Caffe cases (../shared/golden/caffe). Every comparison names its atol.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import rnnrt
from rnnrt.ir.config import load_config
from rnnrt.engines import OnnxRuntimeEngine
from rnnrt.errors import BindingError, ConfigError, EngineError, StateError
from rnnrt.runtime.session import Session
from tests.models import MODELS

ATOL = 1e-5
GOLDEN = Path(__file__).resolve().parents[2] / ".." / "shared" / "golden" / "caffe"


def _frames(T: int, batch: int, seed: int = 0, size: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (T, 1, batch, size)).astype(np.float32)


def _session(tmp_path: Path, name: str = "lstm_t1", **kw) -> tuple[Session, object]:
    params = kw.pop("params", {})
    m = MODELS[name](**params)
    return rnnrt.load(m.save(tmp_path / name), backend="onnxruntime", threads=1, **kw), m


@pytest.mark.parametrize("feedback", ["copy", "swap"])
def test_steps_match_numpy_reference(tmp_path: Path, feedback: str) -> None:
    s, m = _session(tmp_path, params={"batch": 3}, feedback=feedback)
    x = _frames(6, 3)
    cont = np.ones((6, 1, 3), np.float32)
    cont[3, 0, 1] = 0  # slot 1 starts a new sequence at t=3
    with s:
        got = np.concatenate([s.step({"data": x[t], "cont": cont[t]})["lstm1"] for t in range(6)])
        state = dict(s.state)
    ref, ref_state = m.reference({"data": x[:, 0], "cont": cont[:, 0]}, None)
    np.testing.assert_allclose(got, ref["lstm1"], atol=ATOL)
    np.testing.assert_allclose(state["lstm1.c0"], ref_state["lstm1.c0"], atol=ATOL)


def test_single_steps_equal_one_chunk(tmp_path: Path) -> None:
    """Stepping T=1 frames one by one equals one T-frame call of the Scan graph with the same weights."""
    T, B = 8, 2
    step_s, _ = _session(tmp_path, params={"batch": B, "seed": 7})
    seq_s, _ = _session(tmp_path, "lstm_scan", params={"batch": B, "time": T, "seed": 7})
    x = _frames(2 * T, B)
    with step_s, seq_s:
        singles = np.concatenate([step_s.step(x[t])["lstm1"] for t in range(2 * T)])
        chunks = np.concatenate([seq_s.step(x[k * T:(k + 1) * T, 0])["lstm1"] for k in range(2)])
        np.testing.assert_allclose(singles, chunks, atol=1e-6)
        for name in ("lstm1.h0", "lstm1.c0"):
            np.testing.assert_allclose(step_s.state[name], seq_s.state[name], atol=1e-6)


def test_reset_equals_feeding_cont_zero(tmp_path: Path) -> None:
    a, _ = _session(tmp_path / "a", params={"batch": 3})
    b, _ = _session(tmp_path / "b", params={"batch": 3})
    x = _frames(5, 3)
    with a, b:
        for t in range(4):
            a.step(x[t])
            b.step(x[t])
        a.reset()
        out_a = a.step(x[4])["lstm1"]
        out_b = b.step({"data": x[4], "cont": np.zeros((1, 3), np.float32)})["lstm1"]
        np.testing.assert_array_equal(out_a, out_b)
        # The auto-filled continuation is 1 again afterwards: both continue identically.
        np.testing.assert_array_equal(a.step(x[0])["lstm1"], b.step(x[0])["lstm1"])


def test_reset_restores_step0_outputs(tmp_path: Path) -> None:
    s, _ = _session(tmp_path, params={"batch": 2})
    x = _frames(4, 2)
    with s:
        first = [s.step(x[t])["lstm1"] for t in range(4)]
        s.reset()
        assert all(not v.any() for v in s.state.values())
        again = [s.step(x[t])["lstm1"] for t in range(4)]
    for u, v in zip(first, again):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("feedback", ["copy", "swap"])
def test_reset_slots_leaves_other_rows_bit_identical(tmp_path: Path, feedback: str) -> None:
    a, _ = _session(tmp_path / "a", params={"batch": 4}, feedback=feedback)
    b, _ = _session(tmp_path / "b", params={"batch": 4}, feedback=feedback)
    fresh, _ = _session(tmp_path / "f", params={"batch": 4})
    x = _frames(4, 4)
    with a, b, fresh:
        for t in range(3):
            a.step(x[t])
            b.step(x[t])
        a.reset(slots=[2])
        assert not a.state["lstm1.h0"][2].any() and not a.state["lstm1.c0"][2].any()
        out_a, out_b = a.step(x[3])["lstm1"], b.step(x[3])["lstm1"]
        others = [0, 1, 3]
        np.testing.assert_array_equal(out_a[:, others], out_b[:, others])
        for name in ("lstm1.h0", "lstm1.c0"):
            np.testing.assert_array_equal(a.state[name][others], b.state[name][others])
        # The reset slot behaves like a fresh stream.
        np.testing.assert_array_equal(out_a[:, 2], fresh.step(x[3])["lstm1"][:, 2])


def test_reset_slots_fills_cont_zero_at_t0_only(tmp_path: Path) -> None:
    """With a T>1 graph the auto-filled cont is 0 only at t=0 of reset slots, and only for one step."""
    T, B = 4, 3
    a, _ = _session(tmp_path / "a", "lstm_scan", params={"batch": B, "time": T})
    b, _ = _session(tmp_path / "b", "lstm_scan", params={"batch": B, "time": T})
    x = _frames(3 * T, B)[:, 0]
    with a, b:
        a.step(x[:T])
        b.step(x[:T])
        a.reset(slots=[1])
        cont = np.ones((T, B), np.float32)
        cont[0, 1] = 0
        np.testing.assert_array_equal(a.step(x[T:2 * T])["lstm1"], b.step({"data": x[T:2 * T], "cont": cont})["lstm1"])
        np.testing.assert_array_equal(a.step(x[2 * T:])["lstm1"], b.step({"data": x[2 * T:], "cont": np.ones((T, B), np.float32)})["lstm1"])


def test_fed_cont_is_used_as_is_after_reset(tmp_path: Path) -> None:
    a, _ = _session(tmp_path / "a", params={"batch": 2})
    b, _ = _session(tmp_path / "b", params={"batch": 2})
    x = _frames(3, 2)
    with a, b:
        a.step(x[0]), b.step(x[0])
        # reset zeroes the state anyway, so a fed cont=1 after reset equals a fresh start
        a.reset(slots=[0])
        out = a.step({"data": x[1], "cont": np.ones((1, 2), np.float32)})["lstm1"]
        ref = b.step({"data": x[1], "cont": np.array([[0, 1]], np.float32)})["lstm1"]
        np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize(
    "frame, match",
    [
        ({"data": np.zeros((1, 2, 5), np.float32)}, r"Input 'data' \| Received shape \(1, 2, 5\).\nNote: Expected shape \[1, 3, 5\] \(batch size 3\)"),
        ({"data": np.zeros((1, 3, 5), np.float64)}, r"Input 'data' \| Received dtype float64.\nNote: Expected dtype float32"),
        ({"data": np.zeros((3, 5), np.float32)}, r"Input 'data' \| Received shape \(3, 5\)"),
        ({"data": np.zeros((1, 3, 5), np.float32), "cont": np.ones((1, 3), np.int64)}, r"Input 'cont' \| Received dtype int64"),
        ({"dat": np.zeros((1, 3, 5), np.float32)}, r"Input 'dat' \| Is not an input of the model.\nNote: Inputs: \['data', 'cont'\]"),
        ({"data": np.zeros((1, 3, 5), np.float32), "lstm1.h0": np.zeros((3, 7), np.float32)}, r"Input 'lstm1.h0' \| Is a state input; the Session feeds it"),
        ({"cont": np.ones((1, 3), np.float32)}, r"Input 'data' \| Is missing from the frame"),
        ({"data": [["x"]]}, r"Input 'data' \| Cannot be converted to float32"),
    ],
)
def test_bad_frames_raise_and_keep_state(tmp_path: Path, frame: dict, match: str) -> None:
    s, _ = _session(tmp_path, params={"batch": 3})
    good = _frames(2, 3)
    with s:
        s.step(good[0])
        before = {k: v.copy() for k, v in s.state.items()}
        with pytest.raises(BindingError, match=match):
            s.step(frame)
        for k, v in s.state.items():
            np.testing.assert_array_equal(v, before[k])
        after_failure = s.step(good[1])["lstm1"]
    ref, _ = _session(tmp_path / "ref", params={"batch": 3})
    with ref:
        ref.step(good[0])
        np.testing.assert_array_equal(after_failure, ref.step(good[1])["lstm1"])


class _FailingEngine(OnnxRuntimeEngine):
    """Scribbles over the output destinations, then fails: the state must not change."""

    def execute_impl(self, feeds, outputs):
        for dst in outputs.values():
            dst[...] = 123.0
        raise EngineError("engine | Simulated failure.")


def test_engine_failure_keeps_state(tmp_path: Path) -> None:
    m = MODELS["lstm_t1"](batch=2)
    cfg = load_config(m.save(tmp_path))
    s = Session(cfg, lambda: _FailingEngine(cfg.model_path))
    with s:
        before = {k: v.copy() for k, v in s.state.items()}
        with pytest.raises(EngineError, match="Simulated failure"):
            s.step(_frames(1, 2)[0])
        for k, v in s.state.items():
            np.testing.assert_array_equal(v, before[k])


def test_safe_casts_are_accepted(tmp_path: Path) -> None:
    s, _ = _session(tmp_path, params={"batch": 2})
    x = _frames(1, 2)[0]
    with s:
        out16 = s.step(x.astype(np.float16))["lstm1"]
        s.reset()
        ref = s.step(x.astype(np.float16).astype(np.float32))["lstm1"]
        np.testing.assert_array_equal(out16, ref)
        s.step({"data": x.tolist()})  # lists convert to the binding dtype


def test_state_is_read_only(tmp_path: Path) -> None:
    s, _ = _session(tmp_path)
    with s:
        s.step(_frames(1, 1)[0])
        h = s.state["lstm1.h0"]
        with pytest.raises(ValueError, match="read-only"):
            h[...] = 0
        with pytest.raises(TypeError):
            s.state["lstm1.h0"] = h
        assert sorted(s.state) == ["lstm1.c0", "lstm1.h0"]


@pytest.mark.parametrize("slot", [3, -1, 1.0, True])
def test_bad_slot(tmp_path: Path, slot) -> None:
    s, _ = _session(tmp_path, params={"batch": 3})
    with s, pytest.raises(BindingError, match=rf"Slot {slot!r} \| Is not a valid slot of a session with batch size 3"):
        s.reset(slots=[0, slot])


def test_dynamic_batch(tmp_path: Path) -> None:
    m = MODELS["lstm_dynamic_batch"]()
    path = m.save(tmp_path)
    with pytest.raises(ConfigError, match=r"dynamic batch dim 'batch' and no batch_size was given"):
        rnnrt.load(path)
    x = _frames(3, 5)
    with rnnrt.load(path, batch_size=5) as s:
        assert s.batch_size == 5 and s.state["lstm1.h0"].shape == (5, 7)
        got = np.concatenate([s.step(x[t])["lstm1"] for t in range(3)])
        with pytest.raises(BindingError, match=r"Received shape \(1, 4, 5\).\nNote: Expected shape \[1, 5, 5\]"):
            s.step(x[0][:, :4])
    ref, _ = m.reference({"data": x[:, 0], "cont": np.ones((3, 5))}, None)
    np.testing.assert_allclose(got, ref["lstm1"], atol=ATOL)


def test_fixed_batch_rejects_other_batch_size(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"batch_size=4 was requested but the model's batch is fixed at 2"):
        _session(tmp_path, params={"batch": 2}, batch_size=4)


def test_stateless_model_takes_bare_arrays(tmp_path: Path) -> None:
    s, m = _session(tmp_path, "stateless")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 4)).astype(np.float32)
    with s:
        assert dict(s.state) == {}
        np.testing.assert_allclose(s.step(x)["y"], m.reference({"x": x}, None)[0]["y"], atol=ATOL)
        s.reset()
        s.reset(slots=[1])


def test_bare_array_needs_a_single_input(tmp_path: Path) -> None:
    s, _ = _session(tmp_path)
    cfg = s.config.model_copy(update={"continuation": None})
    s.close()
    with Session(cfg, lambda: OnnxRuntimeEngine(cfg.model_path)) as s2:
        with pytest.raises(BindingError, match=r"Session.step \| Got a bare ndarray but the model has inputs \['data', 'cont'\]"):
            s2.step(_frames(1, 1)[0])


def test_cont_fill_never_requires_cont(tmp_path: Path) -> None:
    s, _ = _session(tmp_path)
    cfg = s.config.model_copy(update={"continuation": s.config.continuation.model_copy(update={"fill": "never"})})
    s.close()
    with Session(cfg, lambda: OnnxRuntimeEngine(cfg.model_path)) as s2:
        with pytest.raises(BindingError, match=r"Input 'cont' \| Is missing from the frame"):
            s2.step(_frames(1, 1)[0])


def test_engine_ownership(tmp_path: Path) -> None:
    m = MODELS["lstm_t1"]()
    cfg = load_config(m.save(tmp_path))
    # A factory's engine is the Session's: closed with it.
    s = Session(cfg, lambda: OnnxRuntimeEngine(cfg.model_path))
    engine = s.engine
    s.close()
    assert not engine.is_active and s.closed
    s.close()  # twice is harmless
    with pytest.raises(StateError, match=r"Session \| step\(\) was called after close\(\)"):
        s.step(_frames(1, 1)[0])
    # An active engine stays its owner's.
    with OnnxRuntimeEngine(cfg.model_path) as engine:
        with Session(cfg, engine) as s:
            s.step(_frames(1, 1)[0])
        assert engine.is_active
    # An inactive engine is activated, and deactivated again on close.
    engine = OnnxRuntimeEngine(cfg.model_path)
    with Session(cfg, engine):
        assert engine.is_active
    assert not engine.is_active


def test_engine_config_mismatch(tmp_path: Path) -> None:
    cfg = load_config(MODELS["lstm_t1"]().save(tmp_path / "a"))
    other = MODELS["stateless"]().save(tmp_path / "b")
    with pytest.raises(ConfigError, match=r"Config input 'data' \| Is not an input of engine 'OnnxRuntimeEngine'"):
        Session(cfg, lambda: OnnxRuntimeEngine(other.parent / "model.onnx"))


def test_load_backends(tmp_path: Path, caplog) -> None:
    path = MODELS["lstm_t1"]().save(tmp_path)
    with caplog.at_level(logging.INFO, logger="rnnrt"):
        with rnnrt.load(path) as s:
            assert isinstance(s.engine, OnnxRuntimeEngine)
    lines = [r.getMessage() for r in caplog.records if "Using ONNX Runtime" in r.getMessage()]
    assert lines == ["rnnrt.load | Using ONNX Runtime: no TensorRT plan was built for the config (run `rnnrt build`)."]
    with pytest.raises(ConfigError, match="'tensorrt' backend needs a plan but none was built for the config"):
        rnnrt.load(path, backend="tensorrt")
    with pytest.raises(ConfigError, match=r"Backend 'cuda' \| Is not known"):
        rnnrt.load(path, backend="cuda")
    with pytest.raises(ConfigError, match=r"Unknown keyword arguments \['thread'\]"):
        rnnrt.load(path, thread=2)


def _golden_cases() -> list[str]:
    if not GOLDEN.is_dir():
        return []
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "io.npz").is_file())


def _replay(session: Session, io: dict) -> dict[str, np.ndarray]:
    out, k = {}, 0
    while f"call{k}/{session.input_names[0]}" in io:
        feeds = {n: io[f"call{k}/{n}"] for n in session.input_names if f"call{k}/{n}" in io}
        for name, value in session.step(feeds).items():
            out[f"call{k}/{name}"] = value
        k += 1
    return out


@pytest.mark.skipif(not _golden_cases(), reason="golden Caffe data not found at ../shared/golden/caffe")
@pytest.mark.parametrize("case", ["a_lstm_stream_t1n1", "b_lstm_batch_resets", "i_embed_lstm_lm_stream", "f_rnn_vanilla"])
def test_golden_caffe_stream(tmp_path: Path, case: str) -> None:
    """Session on converted golden Caffe nets reproduces Caffe across calls (state carried)."""
    from rnnrt.importers.caffe import convert
    import json

    import onnx

    from rnnrt.ir.config import config_from_step_graph, save_config

    d = GOLDEN / case
    step = convert.convert_caffe(d / "deploy.prototxt", d / "weights.caffemodel")
    onnx.save(step.model, str(tmp_path / "model.onnx"))
    save_config(config_from_step_graph(step, tmp_path / "model.onnx"), tmp_path / "model.yaml")
    io = dict(np.load(d / "io.npz"))
    tol = json.loads((d / "case.json").read_text())["tolerance_hint"]
    with rnnrt.load(tmp_path / "model.yaml", backend="onnxruntime") as s:
        got = _replay(s, io)
    assert got
    for key, value in got.items():
        np.testing.assert_allclose(value, io[key], atol=tol["atol"], rtol=tol["rtol"], err_msg=key)


def test_cli_run_round_trip(tmp_path: Path, capsys) -> None:
    """`rnnrt run` replays call{k}/{input} with state carried and writes call{k}/{output}."""
    from rnnrt.cli import main

    m = MODELS["lstm_dynamic_batch"]()
    path = m.save(tmp_path)
    x = _frames(5, 3)
    cont = np.ones((5, 1, 3), np.float32)
    cont[2, 0, 0] = 0
    feed = {}
    for k in range(5):
        feed[f"call{k}/data"] = x[k]
        if k % 2 == 0:  # omitted on odd calls: the Session fills it
            feed[f"call{k}/cont"] = cont[k]
        feed[f"call{k}/lstm1"] = np.zeros(1)  # recorded outputs are skipped
    np.savez(tmp_path / "feed.npz", **feed)
    rc = main(["run", str(path), "--feed", str(tmp_path / "feed.npz"), "--out", str(tmp_path / "out.npz"), "--threads", "1"])
    assert rc == 0 and "5 calls" in capsys.readouterr().out
    out = np.load(tmp_path / "out.npz")
    assert sorted(out.files) == [f"call{k}/lstm1" for k in range(5)]
    ref, _ = m.reference({"data": x[:, 0], "cont": cont[:, 0]}, None)
    np.testing.assert_allclose(np.concatenate([out[f"call{k}/lstm1"] for k in range(5)]), ref["lstm1"], atol=ATOL)

    np.savez(tmp_path / "bad.npz", **{"call0/data": x[0], "call0/dta": x[0]})
    rc = main(["run", str(path), "--feed", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "o.npz")])
    assert rc == 2
    assert "Feed key 'call0/dta' | Names 'dta', which is not a model input" in capsys.readouterr().err
    np.savez(tmp_path / "gap.npz", **{"call0/data": x[0], "call2/data": x[0]})
    assert main(["run", str(path), "--feed", str(tmp_path / "gap.npz"), "--out", str(tmp_path / "o.npz")]) == 2
    assert "Has calls [0, 2]" in capsys.readouterr().err


def test_public_names_are_explicit_imports() -> None:
    """Every public name is an import a type checker or IDE reads (top level or the TYPE_CHECKING block of
    rnnrt/__init__.py); the runtime ones are imported on first use, so `import rnnrt` loads no numpy."""
    import ast
    import subprocess
    import sys

    import rnnrt.runtime.pool
    import rnnrt.runtime.session
    import rnnrt.runtime.snapshot

    tree = ast.parse(open(rnnrt.__file__).read())
    imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert set(rnnrt.__all__) - {"__version__"} <= imported
    assert rnnrt.load is rnnrt.runtime.session.load and rnnrt.Session is rnnrt.runtime.session.Session
    assert rnnrt.StreamPool is rnnrt.runtime.pool.StreamPool
    assert rnnrt.StreamState is rnnrt.runtime.snapshot.StreamState
    assert set(rnnrt.__all__) <= set(dir(rnnrt))
    probe = "import sys, rnnrt; print(sorted(m for m in ('numpy', 'pydantic', 'yaml', 'onnx') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "[]\n"
    assert all(hasattr(rnnrt, name) for name in rnnrt.__all__)
