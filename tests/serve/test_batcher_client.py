"""StreamBatcher over an rnnrt.client.StreamClient on a real `rnnrt serve`: per-stream callers (asyncio
tasks and a thread) become one multi-stream request per tick; each stream equals a solo Session
(bit-exact), a bad frame fails only its caller, resets and closes keep their place in the stream."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import rnnrt
from rnnrt.errors import BindingError
from rnnrt.runtime.batcher import StreamBatcher
from rnnrt.serve.client import StreamClient
from rnnrt.serve.triton import export_triton
from tests.runtime.batcher_script import control

MODEL = "a_lstm_stream_t1n1"


@pytest.fixture(scope="module")
def served(dynamic, start_serve, tmp_path_factory):
    path = dynamic(MODEL)
    repo = tmp_path_factory.mktemp("repo")
    export_triton(path, repo, engine="python", name="bt", max_sequences=64)
    return path, start_serve(["--repo", repo])


def _requests(server) -> float:
    for line in server.metrics().splitlines():
        if line.startswith('rnnrt_requests_total{model="bt"}'):
            return float(line.split()[-1])
    return 0.0


def test_batcher_over_client_equals_solo_sessions_with_one_request_per_tick(served):
    path, server = served
    rng = np.random.default_rng(11)
    ids = [f"s{i}" for i in range(12)]
    ops = {sid: [("frame", rng.uniform(-1, 1, (1, 1, 5)).astype(np.float32)) for _ in range(10)] for sid in ids}
    ops["s1"].insert(5, ("reset", None))
    ops["s2"].insert(4, ("close", None))
    ops["s3"].insert(3, ("bad", np.zeros((1, 1, 6), np.float32)))
    ops["s4"].insert(6, ("chunk", [rng.uniform(-1, 1, (1, 1, 5)).astype(np.float32) for _ in range(3)]))
    got = {sid: [] for sid in ids}
    errors = {}
    client = StreamClient(server.address, model="bt")
    before = _requests(server)
    batcher = StreamBatcher(client, max_delay_ms=20.0)

    async def task(sid):
        for kind, x in ops[sid]:
            if control(batcher, sid, kind):
                continue
            if kind == "chunk":
                out = await batcher.step_chunk(sid, [{"data": f} for f in x])
                got[sid].extend({"lstm1": out["lstm1"][k]} for k in range(len(x)))
            else:
                try:
                    got[sid].append(await batcher.step(sid, {"data": x}))
                except BindingError as err:
                    errors[sid] = err

    def thread(sid):
        for kind, x in ops[sid]:
            got[sid].append(batcher.submit(sid, {"data": x}).result(60))

    async def main():
        th = threading.Thread(target=thread, args=("s0",))
        th.start()
        await asyncio.gather(*(task(sid) for sid in ids[1:]))
        await asyncio.get_running_loop().run_in_executor(None, th.join)
        for sid in ids:
            batcher.close_stream(sid)
        await batcher.aclose()

    asyncio.run(main())
    assert list(errors) == ["s3"]
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as solo:
        for sid in ids:
            solo.reset()
            want = []
            for kind, x in ops[sid]:
                if kind in ("reset", "close"):
                    solo.reset()
                elif kind == "chunk":
                    want.extend(solo.step({"data": f}) for f in x)
                elif kind == "frame":
                    want.append(solo.step({"data": x}))
            assert len(got[sid]) == len(want), sid
            for k, (g, w) in enumerate(zip(got[sid], want)):
                np.testing.assert_array_equal(np.reshape(g["lstm1"], w["lstm1"].shape), w["lstm1"],
                                              err_msg=f"{sid} frame {k}")
    frames = sum(len(v) for v in ops.values())
    m = batcher.metrics()
    # One multi-stream request per tick (plus the closes): far fewer requests than frames.
    requests = _requests(server) - before
    assert requests <= m.engine_steps + 2 * len(ids) and m.engine_steps < frames / 2, (requests, m)
    client.close_connections()
