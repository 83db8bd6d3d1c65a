"""The state rules on models WITHOUT a continuation input, checked on every slot, host and (simulated) device.

Caffe models hide stale state behind ``cont = 0``; an ONNX import (here a GRU cell exported from torch, and
Silero VAD as pip ships it) has nothing but the state arena: a reset that misses a slot, a step of some
slots that touches another, a pool that reuses a slot without zeroing it, or a restore into the wrong row
shows as wrong numbers. Every test runs each slot's stream alone in its own batch-1 host Session (the
reference) and compares every slot's outputs and state rows after every operation:

- ``host``: the ONNX Runtime Session (HostArena, host executor).
- ``sim``: the device executor (DeviceArena, staging, graphs) over the host simulation of ``rnnrt.cuda``
  (tests/cudasim.py), with ONNX Runtime behind the device-engine interface.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import rnnrt
from rnnrt.ir.config import load_config, save_step_graph
from rnnrt.importers.onnx.importer import convert_onnx
from rnnrt.runtime.pool import StreamPool
from rnnrt.runtime.session import Session
from tests import cudasim
from tests.engines.sim_ort import SimOrtEngine

torch = pytest.importorskip("torch", reason="torch (CPU) exports the GRU test model")

from tests.importers.onnx import models_stateful as M  # noqa: E402

B = 5
ATOL, RTOL = 1e-5, 1e-4
MODELS = ["gru_cell", "silero"]
# (backend, feedback, CUDA graph): the device executor's feedback paths and graph replay.
BACKENDS = [("host", "copy", False), ("host", "swap", False), ("sim", "copy", False), ("sim", "swap", True)]
BACKEND_IDS = [f"{b}-{f}{'-graph' if g else ''}" for b, f, g in BACKENDS]


@pytest.fixture(scope="module")
def model_yaml(tmp_path_factory):
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            out = tmp_path_factory.mktemp(name)
            if name == "gru_cell":
                path, _ = M.cell_loop(out, "GRU")
                step = convert_onnx(path)
            else:
                pytest.importorskip("silero_vad", reason="silero-vad (dev extra) ships the model")
                from tests.importers.onnx import silero_ref

                step = convert_onnx(silero_ref.data_dir() / "silero_vad.onnx", constants={"sr": 16000},
                                    context="input:64")
            cache[name] = save_step_graph(step, out / "model")
        return cache[name]

    return get


def _session(yaml: Path, backend: str, feedback: str, graph: bool, monkeypatch, batch: int = B) -> Session:
    if backend == "host":
        return rnnrt.load(yaml, backend="onnxruntime", batch_size=batch, threads=1, feedback=feedback)
    mod = cudasim.install(monkeypatch)
    return Session(yaml, lambda: SimOrtEngine(yaml, mod), batch_size=batch, feedback=feedback, cuda_graph=graph)


class Solo:
    """One batch-1 host Session per slot: what every slot must equal."""

    def __init__(self, yaml: Path, count: int) -> None:
        self.sessions = [rnnrt.load(yaml, backend="onnxruntime", batch_size=1, threads=1) for _ in range(count)]

    def step(self, slot: int, frame: dict) -> dict:
        return self.sessions[slot].step(frame)

    def reset(self, slot: int) -> None:
        self.sessions[slot].reset()

    def state(self, slot: int) -> dict:
        return dict(self.sessions[slot].state)

    def close(self) -> None:
        for s in self.sessions:
            s.close()


def _frame(s: Session, rng, n: int) -> dict[str, np.ndarray]:
    """Random frames for ``n`` rows; a dynamic dim (Silero's samples) takes 512."""
    b = s.io
    frame = {}
    for name, spec in b.inputs.items():
        shape = spec.full_shape(n, {sym: 512 for sym in spec.symbols if sym})
        frame[name] = rng.uniform(-1, 1, shape).astype(spec.dtype)
    return frame


def _row(s: Session, frame: dict, i: int) -> dict[str, np.ndarray]:
    """Row ``i`` of a frame (batch dim 1)."""
    return {name: np.take(v, [i], axis=s.io.inputs[name].batch_axis) for name, v in frame.items()}


def _check_every_slot(s: Session, solo: Solo, where: str, slots=None) -> None:
    rows = s.read_state(range(B) if slots is None else slots)
    axes = {st.input: st.batch_axis for st in s.config.state}
    for j, slot in enumerate(range(B) if slots is None else slots):
        for name, want in solo.state(slot).items():
            got = np.take(rows[name], [j], axis=axes[name])
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=f"{where}: state {name} slot {slot}")


def _check_outputs(s: Session, got: dict, want: list[dict], slots: list[int], where: str) -> None:
    axes = s.io.output_axes
    for j, slot in enumerate(slots):
        for name, ref in want[j].items():
            np.testing.assert_allclose(np.take(got[name], [j], axis=axes[name]), ref, atol=ATOL, rtol=RTOL,
                                       err_msg=f"{where}: output {name} slot {slot}")


def _assert_no_cont(s: Session) -> None:
    assert s.io.cont is None, "these tests are about models without a continuation input"


@pytest.mark.parametrize("backend,feedback,graph", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("name", MODELS)
def test_resets_and_slot_steps_on_every_slot(model_yaml, monkeypatch, name, backend, feedback, graph):
    """Whole-batch steps, steps of some slots (any order, some through step_async), resets of several slots
    in several runs and of all slots: after every operation each slot's outputs and state equal its stream
    run alone."""
    yaml = model_yaml(name)
    rng = np.random.default_rng(7)
    script = [("step", None), ("step", None), ("reset", [1, 3, 4]), ("step", None), ("step", [4, 0, 2]),
              ("reset", [0, 2]), ("step", [2, 1]), ("step", None), ("reset", [4]), ("step", [3, 4]),
              ("reset", None), ("step", [1, 0, 3, 4, 2]), ("step", None), ("reset", [0, 1, 2, 3]), ("step", None)]
    solo = Solo(yaml, B)
    with _session(yaml, backend, feedback, graph, monkeypatch) as s:
        _assert_no_cont(s)
        try:
            for k, (op, slots) in enumerate(script):
                where = f"{k}: {op} {slots}"
                listed = list(range(B)) if slots is None else slots
                if op == "reset":
                    s.reset(slots=slots)
                    for slot in listed:
                        solo.reset(slot)
                else:
                    frame = _frame(s, rng, len(listed))
                    if k % 3 == 1:  # every third step through step_async
                        handle = s.step_async(frame, slots=slots)
                        assert isinstance(handle.done(), bool)
                        got = handle.wait()
                        assert handle.done() and handle.wait() is got
                    else:
                        got = s.step(frame, slots=slots)
                    want = [solo.step(slot, _row(s, frame, j)) for j, slot in enumerate(listed)]
                    _check_outputs(s, got, want, listed, where)
                _check_every_slot(s, solo, where)
                _check_every_slot(s, solo, where + " (read in another order)", [4, 2, 0, 3, 1])
        finally:
            solo.close()


@pytest.mark.parametrize("backend,feedback,graph", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("name", MODELS)
def test_pool_churn_and_snapshot_restore_on_every_slot(model_yaml, monkeypatch, name, backend, feedback, graph):
    """A StreamPool whose streams come and go (every slot reused, several at once), are reset, snapshotted
    and restored into other slots: every open stream equals its stream run alone, tick after tick."""
    yaml = model_yaml(name)
    rng = np.random.default_rng(11)
    refs: dict[str, Session] = {}  # one batch-1 host Session per open stream id
    with _session(yaml, backend, feedback, graph, monkeypatch) as s:
        _assert_no_cont(s)
        pool = StreamPool(s)

        def open_(sid: str) -> None:
            pool.open(sid)
            refs[sid] = rnnrt.load(yaml, backend="onnxruntime", batch_size=1, threads=1)

        def tick(k: int, ids: list[str]) -> None:
            frames = {sid: _frame(s, rng, 1) for sid in ids}
            got = pool.step(frames)
            for sid in ids:
                want = refs[sid].step(frames[sid])
                for out, ref in want.items():
                    np.testing.assert_allclose(got[sid][out], ref, atol=ATOL, rtol=RTOL,
                                               err_msg=f"tick {k} stream {sid} output {out}")
            states = pool.snapshot_many(sorted(refs))
            for sid, st in states.items():
                for n, want in refs[sid].state.items():
                    np.testing.assert_allclose(st.tensors[n], want, atol=ATOL, rtol=RTOL,
                                               err_msg=f"tick {k} stream {sid} state {n}")

        try:
            for sid in "abcde":  # every slot taken
                open_(sid)
            tick(0, list("abcde"))
            tick(1, list("eca"))
            for sid in "bd":  # two slots freed and reused at once: the new streams start at zero
                pool.close(sid)
                refs.pop(sid).close()
            open_("f")
            open_("g")
            tick(2, list("abcdefg".replace("b", "").replace("d", "")))
            pool.reset("c")
            pool.reset("e")
            refs["c"].reset()
            refs["e"].reset()
            tick(3, list("gfeca"))
            # Snapshot two streams, close all but one, restore them into other slots and go on.
            snaps = {sid: pool.snapshot(sid) for sid in "ag"}
            for sid in "acefg":
                if sid != "e":
                    pool.close(sid)
            for sid in "ag":
                pool.restore(sid, snaps[sid])
            refs["c"].close()
            refs["f"].close()
            del refs["c"], refs["f"]
            open_("h")
            open_("i")
            assert pool.free_slots == 0
            tick(4, list("aeghi"))
            tick(5, list("iga"))
            pool.close("h")  # a snapshot restored twice: into the slot just freed
            refs.pop("h").close()
            pool.restore("a2", snaps["a"])
            refs["a2"] = rnnrt.load(yaml, backend="onnxruntime", batch_size=1, threads=1)
            refs["a2"].write_state([0], {n: v for n, v in snaps["a"].tensors.items()})
            tick(6, list("a2 a e g i".split()))
        finally:
            for r in refs.values():
                r.close()


@pytest.mark.parametrize("bad", ["shape", "dtype"])
def test_a_wrong_state_output_is_refused_and_no_slot_advances(model_yaml, bad):
    """An engine whose state output has the wrong shape (one row short) or dtype on a step of some slots:
    EngineError naming the state output and what was expected; every slot's state as before."""
    from rnnrt.engines import OnnxRuntimeEngine
    from rnnrt.errors import EngineError

    yaml = model_yaml("gru_cell")

    class Broken(OnnxRuntimeEngine):
        armed = False

        def execute_impl(self, feeds, outputs):
            result = super().execute_impl(feeds, outputs)
            if Broken.armed:
                h = result["h_out"]
                result["h_out"] = h[:-1] if bad == "shape" else h.astype(np.float64)
            return result

    cfg = load_config(yaml)
    rng = np.random.default_rng(5)
    with Session(cfg, lambda: Broken(cfg.model_path, threads=1), batch_size=B) as s:
        _assert_no_cont(s)
        s.step(_frame(s, rng, B))
        before = s.state
        Broken.armed = True
        got = "float32(2, 8)" if bad == "shape" else "float64(3, 8)"
        with pytest.raises(EngineError, match=rf"State output 'h_out' \| The engine returned {re.escape(got)}\.\n"
                                              r"Note: Expected float32\(3, 8\)\."):
            s.step(_frame(s, rng, 3), slots=[4, 0, 2])
        for name, value in s.state.items():
            assert value.tobytes() == before[name].tobytes(), name
