"""One real Triton server (`rnnrt serve --repo`, python backend running an rnnrt StreamPool): many concurrent
sequences bit-exact vs solo Sessions, the sequence batcher's edge cases, per-request errors, metrics."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import rnnrt
from rnnrt.errors import BindingError, StateError
from rnnrt.serve.client import StreamClient
from rnnrt.serve.wire import reply_error as _error
from rnnrt.serve.triton import export_triton

MODEL = "a_lstm_stream_t1n1"


@pytest.fixture(scope="module")
def served(dynamic, start_serve, tmp_path_factory):
    path = dynamic(MODEL)
    repo = tmp_path_factory.mktemp("repo")
    export_triton(path, repo, engine="python", name="a80", max_sequences=80)
    export_triton(path, repo, engine="python", name="small2", max_sequences=2)
    export_triton(path, repo, engine="python", name="idle1", max_sequences=4, idle_us=1_000_000)
    server = start_serve(["--repo", repo])
    return path, server


def _frame(rng):
    return {"data": rng.uniform(-1, 1, (1, 1, 5)).astype(np.float32)}


def _replay(session, frames):
    session.reset()
    return [session.step(f) for f in frames]


def test_serve_prints_endpoints_and_models(served):
    _, server = served
    text = "\n".join(server.lines)
    for model in ("a80", "small2", "idle1"):
        assert f"model    {model}" in text
    assert f"grpc     127.0.0.1:{server.grpc_port}" in text
    assert f"metrics  http://127.0.0.1:{server.metrics_port}/metrics" in text


def test_72_concurrent_sequences_from_8_threads_bit_exact(served):
    path, server = served
    client = StreamClient([server.address], model="a80")
    n_threads, per_thread, rounds = 8, 9, 6
    records: dict = {}  # sequence id -> (frames, outputs)
    barrier = threading.Barrier(n_threads + 1)
    errors = []

    def worker(t):
        rng = np.random.default_rng(t)
        try:
            live = [f"t{t}-s{j}" for j in range(per_thread)]
            for sid in live:
                client.open(sid)
                records[sid] = ([], [])
                f = _frame(rng)
                records[sid][0].append(f)
                records[sid][1].append(client.step(sid, f))
            barrier.wait(60)  # every sequence is open now
            barrier.wait(60)
            for r in range(rounds):
                if r == 3:  # sequences end and new ones start
                    for sid in live[:3]:
                        client.close(sid)
                    live = live[3:] + [f"t{t}-n{j}" for j in range(3)]
                    for sid in live[-3:]:
                        client.open(sid)
                        records[sid] = ([], [])
                if r % 3 == 0:
                    for sid in live:
                        f = _frame(rng)
                        records[sid][0].append(f)
                        records[sid][1].append(client.step(sid, f))
                elif r % 3 == 1:
                    for sid in live:
                        fs = [_frame(rng) for _ in range(3)]
                        records[sid][0].extend(fs)
                        records[sid][1].extend(client.step_chunk(sid, fs))
                else:
                    batch = {sid: ([_frame(rng) for _ in range(2)] if i % 2 else _frame(rng)) for i, sid in enumerate(live)}
                    outs = client.step_many(batch)
                    for sid, value in batch.items():
                        assert not isinstance(outs[sid], Exception), outs[sid]
                        records[sid][0].extend(value if isinstance(value, list) else [value])
                        records[sid][1].extend(outs[sid] if isinstance(value, list) else [outs[sid]])
            for sid in live:
                client.close(sid)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    gauge = []
    try:
        barrier.wait(120)
        gauge = [x for x in server.metrics().splitlines() if x.startswith('rnnrt_streams_open{model="a80"}')]
        barrier.wait(60)
    except threading.BrokenBarrierError:
        pass
    for th in threads:
        th.join(300)
    assert not errors, errors[0]
    assert float(gauge[0].split()[-1]) == n_threads * per_thread
    assert len(records) == n_threads * (per_thread + 3)
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as solo:
        for sid, (frames, outs) in records.items():
            want = _replay(solo, frames)
            assert len(outs) == len(frames)
            for k, (w, g) in enumerate(zip(want, outs)):
                np.testing.assert_array_equal(g["lstm1"], w["lstm1"], err_msg=f"{sid} frame {k}")
    metrics = server.metrics()
    frames_total = sum(len(f) for f, _ in records.values())
    line = next(x for x in metrics.splitlines() if x.startswith('rnnrt_frames_total{model="a80"}'))
    assert float(line.split()[-1]) >= frames_total
    assert 'rnnrt_streams_opened_total{model="a80"}' in metrics and "rnnrt_request_errors_total" in metrics
    client.close_connections()


def test_no_start_on_unknown_id_is_a_state_error(served):
    import tritonclient.grpc as grpcclient

    _, server = served
    conn = grpcclient.InferenceServerClient(server.address)
    x = grpcclient.InferInput("data", [1, 1, 1, 5], "FP32")
    x.set_data_from_numpy(np.zeros((1, 1, 1, 5), np.float32))
    with pytest.raises(Exception) as info:
        conn.infer("a80", [x], sequence_id=987654321, sequence_start=False)
    err = _error(info.value, "Stream 987654321")
    assert isinstance(err, StateError) and "START" in str(err)


def test_start_on_open_id_resets_the_stream(served):
    path, server = served
    client = StreamClient(server.address, model="a80")
    rng = np.random.default_rng(5)
    frames = [_frame(rng) for _ in range(6)]
    client.open("r")
    first = [client.step("r", f) for f in frames[:3]]
    client.reset("r")  # the next request carries START on an id the server holds open
    second = [client.step("r", f) for f in frames[3:]]
    client.close("r")
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as solo:
        for got, want in zip(first, _replay(solo, frames[:3])):
            np.testing.assert_array_equal(got["lstm1"], want["lstm1"])
        for got, want in zip(second, _replay(solo, frames[3:])):
            np.testing.assert_array_equal(got["lstm1"], want["lstm1"])


def test_idle_timeout_releases_the_stream(served):
    _, server = served
    client = StreamClient(server.address, model="idle1")
    rng = np.random.default_rng(6)
    client.open("sleepy")
    client.step("sleepy", _frame(rng))
    time.sleep(2.5)  # max_sequence_idle is 1 s
    with pytest.raises(StateError, match="START|not open"):
        client.step("sleepy", _frame(rng))
    client.open("awake")  # the pool released the idle stream's slot and counts it
    client.step("awake", _frame(rng))
    client.close("awake")
    line = next(x for x in server.metrics().splitlines() if x.startswith('rnnrt_streams_expired_total{model="idle1"}'))
    assert float(line.split()[-1]) >= 1


def test_more_sequences_than_slots_the_extra_waits(served):
    path, server = served
    client = StreamClient(server.address, model="small2")
    rng = np.random.default_rng(7)
    f1, f2, f3 = _frame(rng), _frame(rng), _frame(rng)
    client.open("x1")
    client.open("x2")
    client.step("x1", f1)
    client.step("x2", f2)
    client.open("x3")
    result = {}
    th = threading.Thread(target=lambda: result.setdefault("out", client.step("x3", f3)))
    th.start()
    th.join(2.0)
    assert th.is_alive(), "the third sequence ran although both slots were taken"
    client.close("x1")
    th.join(60)
    assert "out" in result
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as solo:
        np.testing.assert_array_equal(result["out"]["lstm1"], _replay(solo, [f3])[0]["lstm1"])
    client.close("x2")
    client.close("x3")


def test_malformed_frames_fail_alone_and_leave_every_state(served):
    import tritonclient.grpc as grpcclient

    path, server = served
    client = StreamClient(server.address, model="a80")
    rng = np.random.default_rng(8)
    ids = [f"m{i}" for i in range(6)]
    history = {sid: [] for sid in ids}
    outs = {sid: [] for sid in ids}
    for sid in ids:
        client.open(sid)
    for _ in range(2):
        batch = {sid: _frame(rng) for sid in ids}
        got = client.step_many(batch, combine=False)
        for sid in ids:
            history[sid].append(batch[sid])
            outs[sid].append(got[sid])
    # Refused by the server (shape), and by the model (inputs with different frame counts).
    with pytest.raises(BindingError):
        client.step("m0", {"data": np.zeros((1, 1, 4), np.float32)})
    conn = grpcclient.InferenceServerClient(server.address)
    data = grpcclient.InferInput("data", [1, 2, 1, 5], "FP32")
    data.set_data_from_numpy(np.zeros((1, 2, 1, 5), np.float32))
    cont = grpcclient.InferInput("cont", [1, 3, 1], "FP32")
    cont.set_data_from_numpy(np.ones((1, 3, 1), np.float32))
    from rnnrt.serve.client import sequence_id

    with pytest.raises(Exception) as info:
        conn.infer("a80", [data, cont], sequence_id=sequence_id("m1"), request_id="bad1")
    err = _error(info.value, "m1")
    assert isinstance(err, BindingError) and "frames" in str(err)
    # One bad frame among good ones in one step_many (a request per stream): only that stream fails.
    # (Multi-stream requests: tests/serve/test_multistream.py.)
    batch = {sid: _frame(rng) for sid in ids}
    batch["m2"] = {"data": np.zeros((1, 1, 6), np.float32)}
    got = client.step_many(batch, combine=False)
    assert isinstance(got["m2"], BindingError)
    for sid in ids:
        if sid != "m2":
            history[sid].append(batch[sid])
            outs[sid].append(got[sid])
    for _ in range(2):  # every stream continues as if the bad requests never happened
        batch = {sid: _frame(rng) for sid in ids}
        got = client.step_many(batch, combine=False)
        for sid in ids:
            history[sid].append(batch[sid])
            outs[sid].append(got[sid])
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as solo:
        for sid in ids:
            for got_k, want_k in zip(outs[sid], _replay(solo, history[sid])):
                np.testing.assert_array_equal(got_k["lstm1"], want_k["lstm1"], err_msg=sid)
    for sid in ids:
        client.close(sid)
    client.close_connections()
    line = next(x for x in server.metrics().splitlines() if x.startswith('rnnrt_request_errors_total{model="a80"}'))
    assert float(line.split()[-1]) >= 1


def test_client_refuses_bad_frames_before_sending(served):
    _, server = served
    client = StreamClient(server.address, model="a80")
    client.open("c")
    with pytest.raises(BindingError, match="unknown input 'nope'"):
        client.step("c", {"nope": np.zeros((1, 1, 5), np.float32)})
    with pytest.raises(BindingError, match="float64"):
        client.step("c", {"data": np.zeros((1, 1, 5), np.float64)})
    with pytest.raises(StateError, match="already open"):
        client.open("c")
    client.close("c")
    with pytest.raises(StateError, match="not open"):
        client.step("c", {"data": np.zeros((1, 1, 5), np.float32)})
