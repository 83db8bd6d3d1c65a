"""Multi-stream requests on a real Triton server: ``StreamClient.step_many`` sends one request per server
carrying every stream's frames; outputs bit-exact vs solo Sessions, errors per stream, mixing with
``step``/``step_chunk``, controls (reset, close), malformed requests refused as a whole."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rnnrt
from rnnrt.errors import BindingError, StateError
from rnnrt.serve.client import StreamClient, sequence_id
from rnnrt.serve.wire import reply_error as _error
from rnnrt.serve.triton import export_triton

MODEL = "a_lstm_stream_t1n1"


@pytest.fixture(scope="module")
def served(dynamic, start_serve, tmp_path_factory):
    path = dynamic(MODEL)
    repo = tmp_path_factory.mktemp("repo")
    export_triton(path, repo, engine="python", name="ms", max_sequences=64)
    export_triton(path, repo, engine="python", name="ms4", max_sequences=4)
    server = start_serve(["--repo", repo])
    return path, server


def _frame(rng):
    return {"data": rng.uniform(-1, 1, (1, 1, 5)).astype(np.float32)}


def _counter(server, name, model):
    for line in server.metrics().splitlines():
        if line.startswith(f'{name}{{model="{model}"}}'):
            return float(line.split()[-1])
    return 0.0


def _check(path, history, outs):
    """Every stream's outputs equal a solo Session's on the same frames (history: sid -> list of segments)."""
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as solo:
        for sid, segments in history.items():
            for seg, (frames, got) in enumerate(zip(segments, outs[sid])):
                solo.reset()
                want = [solo.step(f) for f in frames]
                assert len(got) == len(want), (sid, seg)
                for k, (g, w) in enumerate(zip(got, want)):
                    np.testing.assert_array_equal(g["lstm1"], w["lstm1"], err_msg=f"{sid} segment {seg} frame {k}")


def test_many_streams_one_request_per_call_bit_exact(served):
    path, server = served
    client = StreamClient(server.address, model="ms")
    rng = np.random.default_rng(1)
    ids = [f"a{i}" for i in range(40)] + list(range(1, 9))
    history = {sid: [[]] for sid in ids}
    outs = {sid: [[]] for sid in ids}
    for sid in ids:
        client.open(sid)
    before = _counter(server, "rnnrt_requests_total", "ms")
    calls = 0
    for r in range(6):
        if r == 3:  # some streams end, new ones start, one resets
            for sid in ids[:5]:
                client.close(sid)
            ids = ids[5:] + [f"n{i}" for i in range(5)]
            for sid in ids[-5:]:
                client.open(sid)
                history[sid], outs[sid] = [[]], [[]]
            client.reset(ids[0])
            history[ids[0]].append([])
            outs[ids[0]].append([])
        batch = {}
        for j, sid in enumerate(ids):  # single frames and chunks of 1..3 in one request
            k = (j + r) % 4
            batch[sid] = _frame(rng) if k == 0 else [_frame(rng) for _ in range(k)]
        got = client.step_many(batch)
        calls += 1
        assert list(got) == list(batch)
        for sid, value in batch.items():
            assert not isinstance(got[sid], Exception), got[sid]
            frames = value if isinstance(value, list) else [value]
            result = got[sid] if isinstance(value, list) else [got[sid]]
            assert isinstance(got[sid], list) == isinstance(value, list)
            history[sid][-1].extend(frames)
            outs[sid][-1].extend(result)
    # One request per step_many call (one server), plus the 5 closes.
    assert _counter(server, "rnnrt_requests_total", "ms") - before == calls + 5
    _check(path, history, outs)
    for sid in ids:
        client.close(sid)
    assert _counter(server, "rnnrt_streams_open", "ms") == 0
    client.close_connections()


def test_mixing_step_chunk_and_step_many(served):
    path, server = served
    client = StreamClient(server.address, model="ms", streaming=True)
    rng = np.random.default_rng(2)
    ids = ["solo", "mixed", "many"]
    history = {sid: [[]] for sid in ids}
    outs = {sid: [[]] for sid in ids}

    def take(sid, frames, result):
        history[sid][-1].extend(frames)
        outs[sid][-1].extend(result)

    for sid in ids:
        client.open(sid)
    for sid in ("solo", "mixed"):  # Triton sequences first
        f = _frame(rng)
        take(sid, [f], [client.step(sid, f)])
    fs = [_frame(rng) for _ in range(3)]
    take("mixed", fs, client.step_chunk("mixed", fs))
    for _ in range(2):
        batch = {"mixed": _frame(rng), "many": [_frame(rng), _frame(rng)]}
        got = client.step_many(batch)
        take("mixed", [batch["mixed"]], [got["mixed"]])
        take("many", batch["many"], got["many"])
        f = _frame(rng)
        take("solo", [f], [client.step("solo", f)])
    for sid in ("mixed", "many"):  # after step_many: step and step_chunk of the same streams
        f = _frame(rng)
        take(sid, [f], [client.step(sid, f)])
        fs = [_frame(rng) for _ in range(2)]
        take(sid, fs, client.step_chunk(sid, fs))
    batch = {"solo": _frame(rng), "many": _frame(rng)}
    got = client.step_many(batch, combine=False)  # one request each ("many" stays on multi-stream requests)
    for sid in batch:
        assert not isinstance(got[sid], Exception), got[sid]
        take(sid, [batch[sid]], [got[sid]])
    client.reset("many")  # START in the next multi-stream request: zero state
    history["many"].append([])
    outs["many"].append([])
    fs = [_frame(rng) for _ in range(2)]
    take("many", fs, client.step_many({"many": fs})["many"])
    _check(path, history, outs)
    for sid in ids:
        client.close(sid)
    client.close_connections()


def test_bad_frame_inside_a_multi_stream_request_fails_that_stream_only(served):
    import tritonclient.grpc as grpcclient

    path, server = served
    client = StreamClient(server.address, model="ms")
    rng = np.random.default_rng(3)
    ids = [f"b{i}" for i in range(6)]
    history = {sid: [[]] for sid in ids}
    outs = {sid: [[]] for sid in ids}

    def run(batch):
        got = client.step_many(batch)
        for sid, value in batch.items():
            if not isinstance(got[sid], Exception):
                frames = value if isinstance(value, list) else [value]
                history[sid][-1].extend(frames)
                outs[sid][-1].extend(got[sid] if isinstance(value, list) else [got[sid]])
        return got

    for sid in ids:
        client.open(sid)
    run({sid: _frame(rng) for sid in ids})
    errors_before = _counter(server, "rnnrt_request_errors_total", "ms")
    # Refused by the server (shape), by the client (dtype, unknown input): those streams only.
    batch = {sid: [_frame(rng), _frame(rng)] for sid in ids}
    batch["b1"] = [_frame(rng), {"data": np.zeros((1, 1, 6), np.float32)}]
    batch["b2"] = {"data": np.zeros((1, 1, 5), np.float64)}
    batch["b3"] = {"nope": np.zeros((1, 1, 5), np.float32)}
    got = run(batch)
    assert isinstance(got["b1"], BindingError) and isinstance(got["b2"], BindingError), got
    assert isinstance(got["b3"], BindingError) and "unknown input 'nope'" in str(got["b3"])
    run({sid: _frame(rng) for sid in ids})
    # In the model: a stream the server does not know fails alone, listed in the request's status.
    conn = grpcclient.InferenceServerClient(server.address)

    def raw(streams, counts, flags, frames, rid):
        inputs = []
        for name, wire, arr in (("RNNRT_STREAMS", "UINT64", np.array([streams], np.uint64)),
                                ("RNNRT_FRAMES", "INT32", np.array([counts], np.int32)),
                                ("RNNRT_FLAGS", "INT32", np.array([flags], np.int32)),
                                ("data", "FP32", frames)):
            inp = grpcclient.InferInput(name, list(arr.shape), wire)
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        outputs = [grpcclient.InferRequestedOutput(n) for n in ("lstm1", "RNNRT_STATUS")]
        return conn.infer("ms", inputs, outputs=outputs, request_id=rid, sequence_id=(1 << 62) + 77,
                          sequence_start=True, sequence_end=True)

    fb0, fb4 = _frame(rng), _frame(rng)
    data = np.concatenate([fb0["data"], np.ones((1, 1, 5), np.float32), fb4["data"]])[None]  # [1, 3, T=1, 5]
    reply = raw([sequence_id("b0"), sequence_id("ghost"), sequence_id("b4")], [1, 1, 1], [0, 0, 0], data, "raw1")
    status = json.loads(reply.as_numpy("RNNRT_STATUS").tobytes())
    assert [e[:2] for e in status["errors"]] == [[1, "StateError"]] and "not open" in status["errors"][0][2]
    lstm1 = reply.as_numpy("lstm1")
    assert not lstm1[0, 1].any()  # the failed stream's rows are zero
    history["b0"][-1].append(fb0)
    outs["b0"][-1].append({"lstm1": np.expand_dims(lstm1[0, 0], 1)})
    history["b4"][-1].append(fb4)
    outs["b4"][-1].append({"lstm1": np.expand_dims(lstm1[0, 2], 1)})
    # Malformed as a whole: frame counts that do not add up to the frames sent.
    with pytest.raises(Exception) as info:
        raw([sequence_id("b0"), sequence_id("b4")], [1, 2], [0, 0], data[:, :2], "raw2")
    err = _error(info.value, "raw2")
    assert isinstance(err, BindingError) and "adds up to 3" in str(err)
    status = json.loads(raw([sequence_id("ghost")], [1], [0], data[:, :1], "raw3").as_numpy("RNNRT_STATUS").tobytes())
    assert status["errors"][0][1] == "StateError"
    assert _counter(server, "rnnrt_request_errors_total", "ms") - errors_before >= 3
    run({sid: [_frame(rng), _frame(rng)] for sid in ids})  # every stream goes on as if nothing happened
    _check(path, history, outs)
    for sid in ids:
        client.close(sid)
    client.close_connections()


def test_full_pool_fails_only_the_new_streams(served):
    path, server = served
    client = StreamClient(server.address, model="ms4")
    rng = np.random.default_rng(4)
    ids = [f"f{i}" for i in range(6)]
    for sid in ids:
        client.open(sid)
    got = client.step_many({sid: _frame(rng) for sid in ids})
    ok = [sid for sid in ids if not isinstance(got[sid], Exception)]
    failed = [sid for sid in ids if isinstance(got[sid], Exception)]
    assert len(ok) == 4 and len(failed) == 2, got
    assert all(isinstance(got[s], StateError) and "slots" in str(got[s]) for s in failed)
    client.close(ok[0])  # a slot frees: a failed stream starts now (its next request still carries START)
    again = client.step_many({failed[0]: _frame(rng), ok[1]: _frame(rng)})
    assert not any(isinstance(v, Exception) for v in again.values()), again
    for sid in [s for s in ids if s != ok[0]]:
        client.close(sid)
    client.close_connections()


def test_submit_many_keeps_several_ticks_in_flight_in_order(served):
    """submit_many with up to 3 ticks in flight (the server never waits for the client): every stream's
    outputs equal a solo Session's, bit-exact; the lane's order holds across ticks, resets and chunks."""
    path, server = served
    client = StreamClient(server.address, model="ms")
    rng = np.random.default_rng(7)
    ids = [f"p{i}" for i in range(12)]
    for sid in ids:
        client.open(sid)
    history = {sid: [[]] for sid in ids}
    outs = {sid: [[]] for sid in ids}
    pending = []

    def drain_one():
        frames_sent, future = pending.pop(0)
        got = future.result()
        for sid, value in got.items():
            assert not isinstance(value, Exception), (sid, value)
            outs[sid][-1].extend(value if isinstance(frames_sent[sid], list) else [value])

    for tick in range(10):
        if tick == 5:  # a reset is ordered after the ticks in flight
            while pending:
                drain_one()
            client.reset(ids[3])
            history[ids[3]].append([])
            outs[ids[3]].append([])
        batch = {sid: ([_frame(rng), _frame(rng)] if (tick + j) % 3 == 0 else _frame(rng)) for j, sid in enumerate(ids)}
        for sid, value in batch.items():
            history[sid][-1].extend(value if isinstance(value, list) else [value])
        pending.append((batch, client.submit_many(batch)))
        if len(pending) == 3:
            drain_one()
    while pending:
        drain_one()
    _check(path, history, outs)
    for sid in ids:
        client.close(sid)
    client.close_connections()


def test_a_drained_lane_frees_its_triton_slot(served):
    """Pipelined requests ride one Triton sequence (a lane) while any is in flight; once the last one is
    collected the lane is ended, so all 4 slots of a 4-slot model are free for sequences again."""
    path, server = served
    client = StreamClient(server.address, model="ms4", timeout=20)
    rng = np.random.default_rng(8)
    for sid in ("u", "v"):
        client.open(sid)
    futures = [client.submit_many({"u": _frame(rng), "v": _frame(rng)}) for _ in range(3)]
    assert server.address in client._lanes and client._lanes[server.address].inflight == 3
    for f in futures:
        assert not any(isinstance(v, Exception) for v in f.result().values())
    assert server.address not in client._lanes
    for sid in ("u", "v"):
        client.close(sid)
    seq = [f"w{i}" for i in range(4)]  # four Triton sequences: every slot, none held by the lane
    for sid in seq:
        client.open(sid)
        client.step(sid, _frame(rng))
    for sid in seq:
        client.close(sid)
    client.close_connections()


def test_every_stream_of_a_call_failing_is_typed(served):
    """Issue 22 defect 12: when every stream of a multi-stream request failed, the reply has no outputs
    and step_many/submit_many raised a raw AttributeError."""
    _, server = served
    client = StreamClient(server.address, model="ms4")
    rng = np.random.default_rng(12)
    client.open("u1")
    client.open("u2")
    client.step_many({"u1": _frame(rng), "u2": _frame(rng)})
    client.close("u1")  # the server closed them; this client starts them again with no START
    client.close("u2")
    client.open("u1")
    client.open("u2")
    client._started.update({"u1", "u2"})  # as after a server restart: the client thinks they run there
    client._carried.update({"u1", "u2"})
    for got in (client.step_many({"u1": _frame(rng), "u2": [_frame(rng), _frame(rng)]}),
                client.submit_many({"u1": _frame(rng), "u2": _frame(rng)}).result()):
        assert all(isinstance(got[s], StateError) and "not open" in str(got[s]) for s in ("u1", "u2")), got
    client.close_connections()
