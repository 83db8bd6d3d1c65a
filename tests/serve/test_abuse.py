"""A real server under abuse (issue 22): a START flood, a 10**6-frame request, a killed client and a client
that never sends END, while three well-behaved streams step every 30 ms throughout and stay bit-exact.
The server's memory returns near its baseline after the large requests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import rnnrt
from rnnrt.errors import BindingError, StateError
from rnnrt.serve.client import StreamClient, sequence_id

pytestmark = pytest.mark.slow  # one server, about 30 s of abuse

ROOT = Path(__file__).resolve().parents[2]
MODEL = "a_lstm_stream_t1n1"
SLOTS = 16
IDLE_S = 2


def _frame(rng):
    return {"data": rng.uniform(-1, 1, (1, 1, 5)).astype(np.float32)}


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _server_pids(root: int) -> list[int]:
    """The server and its python-backend stubs (its children)."""
    pids = [root]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == root:
                pids.append(int(entry.name))
    return pids


def _raw_infer(address, cid, data, start):
    import tritonclient.grpc as grpcclient

    conn = grpcclient.InferenceServerClient(address)
    x = grpcclient.InferInput("data", list(data.shape), "FP32")
    x.set_data_from_numpy(data)
    try:
        return conn.infer("lm", [x], sequence_id=cid, sequence_start=start, client_timeout=60)
    finally:
        conn.close()


_KILLED_CLIENT = """
import sys, numpy as np
import rnnrt.client
c = rnnrt.client.StreamClient([sys.argv[1]], model="lm")
c.open("doomed")
rng = np.random.default_rng(9)
while True:
    c.step("doomed", {"data": rng.uniform(-1, 1, (1, 1, 5)).astype(np.float32)})
    print("stepped", flush=True)
"""


def test_live_streams_survive_abuse_bit_exact(dynamic, start_serve):
    path = dynamic(MODEL)
    server = start_serve([path, "--name", "lm", "--max-sequences", SLOTS, "--idle-us", IDLE_S * 1_000_000,
                          "--exit-timeout", "5"])
    address = server.address
    live = ["live-0", "live-1", "live-2"]
    records = {sid: ([], []) for sid in live}
    errors: list = []
    stop = threading.Event()

    def well_behaved(sid, seed):
        rng = np.random.default_rng(seed)
        client = StreamClient([address], model="lm")
        client.open(sid)
        try:
            while not stop.is_set():
                f = _frame(rng)
                out = client.step(sid, f)
                records[sid][0].append(f)
                records[sid][1].append(out)
                time.sleep(0.03)
            client.close(sid)
        except BaseException as err:  # noqa: BLE001
            errors.append((sid, err))
        finally:
            client.close_connections()

    threads = [threading.Thread(target=well_behaved, args=(sid, i)) for i, sid in enumerate(live)]
    for th in threads:
        th.start()
    try:
        time.sleep(0.5)
        pids = _server_pids(server.server_pid())
        baseline, stub_baseline = _rss_mib(pids), _rss_mib(pids[1:])
        rng = np.random.default_rng(100)

        # One request of 10**6 frames: refused at once, typed; nothing stepped.
        t0 = time.monotonic()
        with pytest.raises(Exception) as info:
            _raw_infer(address, sequence_id("huge"), np.zeros((1, 10**6, 1, 5), np.float32), True)
        from rnnrt.serve.wire import reply_error

        err = reply_error(info.value, "huge")
        assert isinstance(err, BindingError) and "1000000 frames" in str(err) and "at most 16384" in str(err)
        assert time.monotonic() - t0 < 10
        # Requests at the bound are served; memory goes back near its baseline afterwards.
        big = StreamClient([address], model="lm")
        big.open("big")
        for _ in range(3):
            outs = big.step_chunk("big", [_frame(rng) for _ in range(16384)])
            assert len(outs) == 16384
        big.close("big")
        big.close_connections()

        # A client killed mid-stream, and one that never sends END: both idle out, nothing else moves.
        doomed = subprocess.Popen([sys.executable, "-c", _KILLED_CLIENT, address], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in doomed.stdout:
                if line.startswith("stepped"):
                    break
            time.sleep(0.3)
        finally:
            os.kill(doomed.pid, signal.SIGKILL)
            doomed.wait()
        never_ends = StreamClient([address], model="lm")
        never_ends.open("ghost")
        never_ends.step("ghost", _frame(rng))
        # A START flood of multi-stream requests: new streams fill the free slots, the rest are refused
        # typed; no live stream is touched (they hold Triton sequences and step every 30 ms).
        flood = StreamClient([address], model="lm")
        for wave in range(4):
            ids = [f"flood-{wave}-{i}" for i in range(50)]
            for sid in ids:
                flood.open(sid)
            got = flood.step_many({sid: _frame(rng) for sid in ids})
            refused = [v for v in got.values() if isinstance(v, Exception)]
            assert refused and all(isinstance(v, StateError) and "none was touched" in str(v) for v in refused)
            assert len(got) - len(refused) <= SLOTS
        flood.close_connections()
        # A START flood of sequences: Triton queues what it has no slot for; each is answered or times out.
        floods = [threading.Thread(target=lambda c=c: _try(lambda: _raw_infer(address, c, np.zeros((1, 1, 1, 5),
                                                                                                     np.float32), True)))
                  for c in range(10**9, 10**9 + 40)]
        for th in floods:
            th.start()

        time.sleep(IDLE_S + 1.5)  # every abandoned stream is released meanwhile
        for th in floods:
            th.join(60)
        time.sleep(0.5)
        grown, stub_grown = _rss_mib(pids) - baseline, _rss_mib(pids[1:]) - stub_baseline
    finally:
        stop.set()
        for th in threads:
            th.join(60)
    assert not errors, errors
    # The model's process (the stub) keeps nothing of a request; tritonserver keeps buffers about the size
    # of the largest request it received (20 MB here).
    assert stub_grown < 16, f"the model's memory grew {stub_grown:.0f} MiB over its baseline {stub_baseline:.0f} MiB"
    assert grown < 64, f"server memory grew {grown:.0f} MiB over its baseline {baseline:.0f} MiB"
    metrics = server.metrics()
    expired = next(x for x in metrics.splitlines() if x.startswith('rnnrt_streams_expired_total{model="lm"}'))
    assert float(expired.split()[-1]) >= 2  # the killed client's stream and the ghost
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as solo:
        for sid, (frames, outs) in records.items():
            assert len(frames) > 100, (sid, len(frames))
            solo.reset()
            for k, (f, got) in enumerate(zip(frames, outs)):
                np.testing.assert_array_equal(got["lstm1"], solo.step(f)["lstm1"], err_msg=f"{sid} frame {k}")
    t0 = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - t0 < 15


def _try(fn):
    try:
        fn()
    except Exception:  # noqa: BLE001 - a flood request may be refused or time out; only the live streams count
        pass
