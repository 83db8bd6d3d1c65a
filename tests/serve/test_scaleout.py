"""Three real Triton servers started exactly as the contract says (`rnnrt serve D/model.yaml --name NAME
--grpc-port P`): the client spreads streams by a consistent hash, a drain mid-stream moves every stream's
state to the other servers bit-exactly; SIGTERM stops a server cleanly; a restarted server forgets its streams."""

from __future__ import annotations

import os

import numpy as np
import pytest

import rnnrt
import rnnrt.client
from rnnrt.errors import ConfigError, StateError

pytestmark = pytest.mark.slow  # four server starts: about a minute

MODEL = "c_lstm_stacked_ip_softmax"


@pytest.fixture(scope="module")
def servers(dynamic, start_serve):
    path = dynamic(MODEL)
    procs = [start_serve([path, "--name", "lm", "--exit-timeout", "5"], wait=False) for _ in range(3)]
    return path, [p.wait_ready() for p in procs]


def _frame(rng):
    return {"data": rng.uniform(-1, 1, (6, 1, 5)).astype(np.float32)}


@pytest.mark.parametrize("combine", [True, False], ids=["multi-stream", "per-stream"])
def test_drain_mid_stream_is_bit_exact(servers, combine):
    path, procs = servers
    addresses = [p.address for p in procs]
    client = rnnrt.client.StreamClient(addresses, model="lm")
    rng = np.random.default_rng(0)
    ids = [f"user-{i}" for i in range(24)] + list(range(1, 9))
    frames = {sid: [] for sid in ids}
    outs = {sid: [] for sid in ids}
    for sid in ids:
        client.open(sid)

    def run(steps):
        for _ in range(steps):
            batch = {sid: _frame(rng) for sid in ids}
            got = client.step_many(batch, combine=combine)
            for sid in ids:
                assert not isinstance(got[sid], Exception), got[sid]
                frames[sid].append(batch[sid])
                outs[sid].append(got[sid])

    run(3)
    placed = {a: client.streams(a) for a in addresses}
    assert all(placed[a] for a in addresses), {a: len(v) for a, v in placed.items()}
    drained = addresses[1]
    moved = client.drain(drained)
    assert sorted(map(str, moved)) == sorted(map(str, placed[drained]))
    assert client.streams(drained) == [] and drained not in client.servers
    for sid in placed[addresses[0]]:  # streams of the other servers stayed where they were
        assert client.where(sid) == addresses[0]
    run(3)
    for sid in ids[:4]:  # chunks after the drain too
        fs = [_frame(rng) for _ in range(2)]
        frames[sid].extend(fs)
        outs[sid].extend(client.step_chunk(sid, fs))
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as solo:
        for sid in ids:
            solo.reset()
            for k, (f, got) in enumerate(zip(frames[sid], outs[sid])):
                np.testing.assert_array_equal(got["prob"], solo.step(f)["prob"], err_msg=f"{sid} frame {k}")
    # The drained server holds nothing any more; new streams never go there.
    metrics = procs[1].metrics()
    line = next(x for x in metrics.splitlines() if x.startswith('rnnrt_streams_open{model="lm"}'))
    assert float(line.split()[-1]) == 0
    for i in range(40):
        assert client.open(f"new-{i}") != drained
    with pytest.raises(ConfigError, match="not a server"):
        client.drain(drained)
    for sid in ids:
        client.close(sid)
    client.close_connections()


def test_sigterm_stops_the_server_and_a_restart_forgets_streams(servers, start_serve):
    path, procs = servers
    proc = procs[2]
    client = rnnrt.client.StreamClient([proc.address], model="lm")
    rng = np.random.default_rng(1)
    client.open("r1")
    client.step("r1", _frame(rng))
    pid = proc.server_pid()
    assert proc.stop() == 0
    assert any(line.startswith("rnnrt serve: stopped") for line in proc.lines)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # tritonserver is gone too
    again = start_serve([path, "--name", "lm", "--exit-timeout", "5"], grpc_port=proc.grpc_port)
    with pytest.raises(StateError, match="START|not know"):
        client.step("r1", _frame(rng))
    try:
        client.close("r1")
    except StateError:
        pass
    client.open("r1")  # a fresh sequence on the restarted server
    f = _frame(rng)
    got = client.step("r1", f)
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as solo:
        np.testing.assert_array_equal(got["prob"], solo.step(f)["prob"])
    client.close("r1")
    client.close_connections()
    assert again.stop() == 0
