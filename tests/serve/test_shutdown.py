"""`rnnrt serve` stopping and starting as an operator sees it (issue 22's observations): SIGTERM after
docs/serving.md's own example stops at once and cleanly; open streams and a request in flight do not hold
the server for its exit timeout (the request is answered); the log holds no traceback for successful
responses; a port in use is one clear line, at once."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import rnnrt
from rnnrt.serve.client import StreamClient

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # three server starts: about 45 s

MODEL = "a_lstm_stream_t1n1"


def _frame(rng):
    return {"data": rng.uniform(-1, 1, (1, 1, 5)).astype(np.float32)}


def test_sigterm_after_the_docs_example_is_fast_and_clean(dynamic, start_serve):
    """Was: 31 s, "8 in-flight inferences ... Exit timeout expired", tritonserver exit code 1, and a
    `PyCapsule_GetPointer called with incorrect name` traceback per successful response."""
    path = dynamic(MODEL)
    server = start_serve([path, "--name", "lm"])
    rng = np.random.default_rng(0)
    client = StreamClient([server.address], model="lm")
    client.open("alice")
    client.open("bob")
    client.step("alice", _frame(rng))
    client.step_chunk("alice", [_frame(rng), _frame(rng)])
    client.step_many({"alice": _frame(rng), "bob": [_frame(rng), _frame(rng)]})
    client.step("alice", _frame(rng))
    client.close("alice")
    client.close("bob")
    client.close_connections()
    t0 = time.monotonic()
    assert server.stop() == 0
    took = time.monotonic() - t0
    log = server.log.read_text(errors="replace")
    assert "tritonserver exit code 0" in server.lines[-1], server.lines[-3:]
    assert took < 12, took
    assert "Exit timeout expired" not in log
    assert not re.search(r"Found [1-9]\d* model versions that have in-flight", log)  # no sequence left open
    assert "Traceback" not in log and "PyCapsule" not in log


def test_sigterm_with_open_streams_answers_the_request_in_flight_and_stops(dynamic, start_serve):
    """A client that never sends END, and one whose large request is running: SIGTERM answers the
    request and stops without waiting out the exit timeout (30 s here)."""
    path = dynamic(MODEL)
    server = start_serve([path, "--name", "lm", "--exit-timeout", "30"])
    rng = np.random.default_rng(1)
    client = StreamClient([server.address], model="lm")
    client.open("forever")
    client.step("forever", _frame(rng))  # never closed
    client.open("big")
    first = _frame(rng)
    client.step("big", first)
    chunk = [_frame(rng) for _ in range(12000)]
    got: dict = {}
    sender = threading.Thread(target=lambda: got.setdefault("out", client.step_chunk("big", chunk)))
    sender.start()
    deadline = time.monotonic() + 30
    while 'rnnrt_busy{model="lm"} 1' not in server.metrics() and sender.is_alive():
        assert time.monotonic() < deadline, "the large request never ran"
    t0 = time.monotonic()
    assert server.stop() == 0
    took = time.monotonic() - t0
    sender.join(30)
    assert "open streams dropped" in server.lines[-1], server.lines[-3:]  # "forever" held its sequence
    assert took < 15, took
    assert len(got["out"]) == len(chunk)
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as solo:
        solo.step(first)
        for k, f in enumerate(chunk):
            np.testing.assert_array_equal(got["out"][k]["lstm1"], solo.step(f)["lstm1"], err_msg=f"frame {k}")


def test_port_in_use_is_one_clear_line_at_once(dynamic, tmp_path):
    """Was: after 8 s, Triton's own lines."""
    path = dynamic(MODEL)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "rnnrt.cli", "serve", str(path), "--name", "lm",
                               "--grpc-port", str(port)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"--grpc-port {port}" in lines[0] and "in use" in lines[0], proc.stderr
    assert lines[0].startswith("rnnrt serve: error:")
    assert took < 30, took  # the interpreter and the repository; the server is never started
