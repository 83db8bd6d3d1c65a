"""examples/vad_server.py: 50 concurrent WebSocket clients against the example server (started as a user
starts it, on a free loopback port, stopped by its PID); each client's answers equal a solo Session's."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import rnnrt

pytest.importorskip("websockets")
pytest.importorskip("silero_vad")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import vad_server  # noqa: E402


@pytest.fixture(scope="module")
def silero_yaml(tmp_path_factory):
    import silero_vad

    from rnnrt.ir.config import save_step_graph
    from rnnrt.importers.onnx.importer import convert_onnx

    model = Path(silero_vad.__file__).parent / "data" / "silero_vad.onnx"
    step = convert_onnx(model, constants={"sr": 16000}, context="input:64")
    return save_step_graph(step, tmp_path_factory.mktemp("silero"))


@pytest.fixture
def server(silero_yaml):
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "vad_server.py"), "serve", "--model",
                             str(silero_yaml), "--port", "0", "--streams", "64", "--max-delay-ms", "5"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("ready "):
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not ready.wait(120):
        proc.kill()
        raise AssertionError("the example server did not start:\n" + "\n".join(lines))
    yield lines[-1].split()[1], lines
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(5)


def test_50_concurrent_clients_each_equal_a_solo_session(server, silero_yaml):
    import websockets

    url, lines = server
    chunks = 24
    signals = [vad_server.test_signal(chunks * 512 / 16000, seed) for seed in range(50)]

    async def bad_then_good(pcm):
        # A malformed message in the middle fails that message only; the stream goes on.
        async with websockets.connect(url) as ws:
            out = []
            for k in range(chunks):
                if k == 5:
                    await ws.send(b"\x00" * 100)
                    reply = json.loads(await ws.recv())
                    assert "error" in reply and "1024 bytes" in reply["error"], reply
                await ws.send(pcm[k * 512:(k + 1) * 512].tobytes())
                out.append(json.loads(await ws.recv())["speech"])
            return out

    async def main():
        tasks = [vad_server.client(url, pcm, realtime=False) for pcm in signals[1:]]
        return await asyncio.gather(bad_then_good(signals[0]), *tasks)

    results = asyncio.run(main())
    got = [results[0]] + [probs for probs, _ in results[1:]]
    with rnnrt.load(silero_yaml, backend="onnxruntime", batch_size=1) as solo:
        name = solo.output_names[0]
        for i, pcm in enumerate(signals):
            solo.reset()
            want = [float(solo.step(vad_server.pcm_to_frame(pcm[k * 512:(k + 1) * 512].tobytes()))[name].reshape(-1)[0])
                    for k in range(chunks)]
            assert got[i] == want, f"client {i}"
    assert max(max(g) for g in got) > 0.5 > min(min(g) for g in got), "the signal must hold speech and silence"
