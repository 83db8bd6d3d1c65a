"""Silero VAD, every ONNX file pip ``silero-vad`` ships: converted with the contract flags only
(``--set sr=16000 --context input:64``, no override, no graph editing), streamed chunk by chunk, equal to
silero's own ``OnnxWrapper`` (``SileroVADSequence`` for the sequence file); a StreamPool of many streams
equal to one ``OnnxWrapper`` per stream; every variant builds with TensorRT-RTX.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

import rnnrt
from rnnrt.ir.config import load_config
from rnnrt.runtime.pool import StreamPool

pytest.importorskip("silero_vad", reason="silero-vad (dev extra) ships the models")
pytest.importorskip("torch", reason="silero's OnnxWrapper takes torch tensors")

from tests.importers.onnx import silero_ref as ref  # noqa: E402

TOL = 1e-6
CASES = [(v, r) for v, spec in ref.VARIANTS.items() for r in spec["rates"]]
IDS = [f"{v.removesuffix('.onnx')}-{r // 1000}k" for v, r in CASES]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache: dict = {}

    def get(variant: str, rate: int = 16000) -> Path:
        if (variant, rate) not in cache:
            out = tmp_path_factory.mktemp(f"{variant.removesuffix('.onnx')}_{rate}")
            cache[variant, rate] = ref.convert(variant, out, rate)
        return cache[variant, rate]

    return get


def _chunks(sig: np.ndarray, rate: int) -> list[np.ndarray]:
    c = ref.CHUNK[rate]
    return [sig[i:i + c] for i in range(0, len(sig) - c + 1, c)]


@pytest.mark.parametrize("variant,rate", CASES, ids=IDS)
def test_streams_equal_silero_reference(converted, variant, rate):
    cfg_path = converted(variant, rate)
    sig = ref.signal(3.0, rate, seed=1)
    want = ref.reference(variant, sig, rate)
    assert want.max() > 0.5 > want.min(), "the test signal must contain speech and non-speech"
    with rnnrt.load(cfg_path, backend="onnxruntime", batch_size=1) as session:
        got = np.array([session.step({"input": c[None]})[_out(session)].reshape(-1)[0] for c in _chunks(sig, rate)])
        # A reset starts over exactly like a fresh wrapper.
        session.reset()
        again = np.array([session.step({"input": c[None]})[_out(session)].reshape(-1)[0] for c in _chunks(sig, rate)[:10]])
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    np.testing.assert_allclose(again, want[:10], atol=TOL, rtol=0)


def _out(session) -> str:
    return session.config.outputs[0].name


@pytest.mark.parametrize("variant", list(ref.VARIANTS), ids=[v.removesuffix(".onnx") for v in ref.VARIANTS])
def test_step_graph_has_no_if_and_a_valid_config(converted, variant):
    cfg = load_config(converted(variant))  # rnnrt's own validation
    model = onnx.load(str(cfg.model_path))
    ops = {n.op_type for n in model.graph.node}
    assert "If" not in ops and "Loop" not in ops
    assert [i.name for i in cfg.inputs] == ["input"]
    states = {(s.input, s.output) for s in cfg.state}
    assert ("input.context", "input.context_next") in states
    assert ("state", "stateN") in states or {("h", "hn"), ("c", "cn")} <= states
    ctx = next(s for s in cfg.state if s.input == "input.context")
    assert ctx.shape[-1] == 64


def test_import_yaml_gives_the_same_model(converted, tmp_path):
    (tmp_path / "import.yaml").write_text(yaml.safe_dump({
        "model": str(ref.data_dir() / "silero_vad.onnx"), "output": "out", "set": {"sr": 16000}, "context": ["input:64"]}))
    proc = subprocess.run([sys.executable, "-m", "rnnrt.cli", "convert", "--config", str(tmp_path / "import.yaml")],
                          cwd=ref.REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    a = yaml.safe_load((tmp_path / "out" / "model.yaml").read_text())
    b = yaml.safe_load(converted("silero_vad.onnx").read_text())
    a.pop("source"), b.pop("source")
    assert a == b


def test_convert_output_is_short_third_party_warnings_go_to_logging(tmp_path):
    cmd = [sys.executable, "-m", "rnnrt.cli", "convert", str(ref.data_dir() / "silero_vad.onnx"), "-o", str(tmp_path)]
    proc = subprocess.run(cmd + ref.contract_flags("silero_vad.onnx"), cwd=ref.REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) < 15, proc.stdout
    assert len(proc.stderr.splitlines()) < 5, proc.stderr  # neither graphsurgeon nor ORT print raw warnings
    verbose = subprocess.run([sys.executable, "-m", "rnnrt.cli", "-vv", "convert", str(ref.data_dir() / "silero_vad.onnx"),
                              "-o", str(tmp_path / "v")] + ref.contract_flags("silero_vad.onnx"),
                             cwd=ref.REPO, capture_output=True, text=True)
    assert verbose.returncode == 0
    assert "rnnrt.onnx" in verbose.stderr  # with -vv the details are there, through logging


def test_without_set_the_rate_input_needs_a_shared_value_in_the_pool(converted, tmp_path):
    """Converted without --set, ``sr`` stays an input without a batch axis: the note names both ways, a
    StreamPool refuses to start without it, and with shared={"sr": 16000} equals the --set conversion's pool."""
    from rnnrt.errors import ConfigError
    from rnnrt.importers.onnx.importer import convert_onnx

    step = convert_onnx(ref.data_dir() / "silero_vad.onnx", context="input:64")
    assert any(s.input == "state" for s in step.states)
    assert any("--set" in n and "shared=" in n for n in step.notes)

    proc = subprocess.run([sys.executable, "-m", "rnnrt.cli", "convert", str(ref.data_dir() / "silero_vad.onnx"),
                           "-o", str(tmp_path / "noset"), "--context", "input:64"],
                          cwd=ref.REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rate, chunk, ticks = 16000, 512, 12
    signals = [ref.signal(ticks * chunk / rate + 0.1, rate, seed=200 + s) for s in range(6)]
    with rnnrt.load(tmp_path / "noset" / "model.yaml", backend="onnxruntime", batch_size=8) as free, \
            rnnrt.load(converted("silero_vad.onnx"), backend="onnxruntime", batch_size=8) as folded:
        assert [t.batch_axis for t in free.config.inputs if t.name == "sr"] == [None]
        with pytest.raises(ConfigError, match="Input 'sr'.*Has no batch axis"):
            StreamPool(free)
        pools = [StreamPool(free, shared={"sr": np.int64(rate)}), StreamPool(folded)]
        for pool in pools:
            for s in range(len(signals)):
                pool.open(s)
        for t in range(ticks):
            frames = {s: {"input": sig[t * chunk:(t + 1) * chunk][None]} for s, sig in enumerate(signals)
                      if (s + t) % 4}  # gaps: some streams have no chunk this tick
            got, want = (pool.step(frames) for pool in pools)
            for s in frames:
                np.testing.assert_array_equal(got[s]["output"], want[s]["output"])


POOL_VARIANTS = [v for v, spec in ref.VARIANTS.items() if spec["pool"]]


@pytest.mark.parametrize("variant", POOL_VARIANTS, ids=[v.removesuffix(".onnx") for v in POOL_VARIANTS])
def test_stream_pool_equals_one_wrapper_per_stream(converted, variant):
    """64 slots, 80 stream ids over 40 ticks: staggered opens, gaps, resets, close/reopen, snapshot/restore."""
    import torch

    rate, chunk = 16000, 512
    ticks, n_ids = 40, 80
    signals = {s: ref.signal(ticks * chunk / rate + 0.1, rate, seed=100 + s) for s in range(n_ids)}
    session = rnnrt.load(converted(variant), backend="onnxruntime", batch_size=64)
    pool = StreamPool(session)
    wrappers: dict = {}
    pos: dict = {}
    snaps: dict = {}
    worst = 0.0
    stepped = 0
    for t in range(ticks):
        # Streams open staggered: id s opens at tick s % 12 (ids >= 64 wait for a freed slot).
        for s in range(n_ids):
            if s not in wrappers and s % 12 <= t and pool.free_slots > 0 and s not in snaps:
                pool.open(s)
                wrappers[s], pos[s] = ref.wrapper(variant), 0
        # Close and reopen: ids 5, 17 close at tick 10 (free slots for ids >= 64) ...
        if t == 10:
            for s in (5, 17):
                pool.close(s)
                del wrappers[s]
        # ... id 30 is snapshotted at tick 12, runs on, then is closed and restored at tick 25.
        if t == 12:
            snaps[30] = (pool.snapshot(30), ref.snapshot_wrapper(wrappers[30]), pos[30])
        if t == 25:
            state, wsnap, p = snaps.pop(30)
            pool.close(30)
            pool.restore(30, state)
            ref.restore_wrapper(wrappers[30], wsnap)
            pos[30] = p
        # Resets: every 9th stream at tick 20.
        if t == 20:
            for s in list(wrappers):
                if s % 9 == 0:
                    pool.reset(s)
                    wrappers[s].reset_states()
        frames = {}
        for s in wrappers:
            if (s + t) % 5 == 0:  # gaps: the stream has no chunk this tick
                continue
            c = signals[s][pos[s] * chunk:(pos[s] + 1) * chunk]
            frames[s] = {"input": c[None]}
        outs = pool.step(frames)
        for s, fr in frames.items():
            want = float(wrappers[s](torch.from_numpy(fr["input"][0]), rate).reshape(-1)[0])
            got = float(outs[s]["output"].reshape(-1)[0])
            worst = max(worst, abs(want - got))
            pos[s] += 1
            stepped += 1
    session.close()
    assert stepped > 1500
    assert any(s >= 64 for s in wrappers)
    assert worst <= TOL, worst


@pytest.mark.parametrize("variant", list(ref.VARIANTS), ids=[v.removesuffix(".onnx") for v in ref.VARIANTS])
def test_builds_with_tensorrt_rtx(converted, variant, tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds engines on CPU")
    cfg_path = converted(variant)
    cfg = load_config(cfg_path)
    dims = []
    for t in cfg.inputs:
        for axis, d in enumerate(t.shape):
            if isinstance(d, str) and axis != t.batch_axis:
                dims += ["--dim", f"{d}=1:1:1" if axis != len(t.shape) - 1 else f"{d}=512:512:512"]
    batch = ["--batch-profile", "1:8:64"] if any(isinstance(s.shape[s.batch_axis], str) for s in cfg.state) else []
    work = tmp_path / "m"
    work.mkdir()
    for f in cfg_path.parent.iterdir():
        (work / f.name).write_bytes(f.read_bytes())
    proc = subprocess.run([sys.executable, "-m", "rnnrt.cli", "build", str(work / "model.yaml"), *batch, *dims],
                          cwd=ref.REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    manifest = json.loads((work / "model.plan.json").read_text())  # the plan's manifest beside it
    assert (work / "model.plan").stat().st_size > 0
    assert "tensorrt_rtx" in json.dumps(manifest)


def test_bench_uses_the_config_shapes(converted):
    cfg_path = converted("silero_vad.onnx")
    base = [sys.executable, "-m", "rnnrt.cli", "bench", str(cfg_path), "--backend", "onnxruntime", "--streams", "4",
            "--steps", "5", "--warmup", "1", "--rounds", "1"]
    ok = subprocess.run(base + ["--dim", "chunk=512"], cwd=ref.REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "batch 4" in ok.stdout
    missing = subprocess.run(base, cwd=ref.REPO, capture_output=True, text=True)
    assert missing.returncode == 2 and "--dim chunk=N" in missing.stderr

