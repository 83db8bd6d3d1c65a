"""Fuzzing harnesses: mutated prototxts, caffemodels, YAML configs, StreamState bytes and StreamPool calls.

Each asserts that only an ``RnnrtError`` (or success) comes out; the pool harness also that every
stream's outputs equal its solo run. `make test` runs the "ci" profile (derandomized, 60 examples
each, seconds); `make fuzz` runs the "fuzz" profile (100,000 each, random; hours on one core) and
the threaded pool replay for a minute per seed.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rnnrt.importers.caffe.context as caffe_context
from rnnrt.ir.config import load_config, save_step_graph
from rnnrt.errors import RnnrtError
from rnnrt.importers.caffe.convert import convert_caffe
from rnnrt.importers.caffe.reader import load_net
from rnnrt.importers.caffe.writer import save_caffemodel
from rnnrt.runtime.pool import StreamPool
from rnnrt.runtime.snapshot import StreamState
from tests.hostile.helpers import input_layer, register_fuzz_profiles

register_fuzz_profiles()

SEEDS = [
    input_layer("data", 1, 2, 6, 6)
    + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1 group: 2 dilation: 1 } }\n'
    + 'layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }\n'
    + 'layer { name: "n" type: "LRN" bottom: "p" top: "n" lrn_param { local_size: 3 alpha: 0.1 beta: 0.75 } }\n'
    + 'layer { name: "f" type: "Flatten" bottom: "n" top: "f" }\n'
    + 'layer { name: "ip" type: "InnerProduct" bottom: "f" top: "ip" inner_product_param { num_output: 5 } }\n'
    + 'layer { name: "s" type: "Softmax" bottom: "ip" top: "prob" softmax_param { axis: 1 } }\n',
    input_layer("x", 2, 1, 4) + input_layer("cont", 2, 1)
    + 'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param { num_output: 3 } }\n'
    + 'layer { name: "rnn" type: "RNN" bottom: "h" bottom: "cont" top: "r" recurrent_param { num_output: 2 } }\n'
    + 'layer { name: "cat" type: "Concat" bottom: "h" bottom: "r" top: "y" concat_param { axis: 2 } }\n'
    + 'layer { name: "sl" type: "Slice" bottom: "y" top: "y1" top: "y2" slice_param { axis: 2 slice_point: 1 } }\n'
    + 'layer { name: "rs" type: "Reshape" bottom: "y1" top: "z" reshape_param { shape { dim: 0 dim: -1 } } }\n',
    input_layer("ids", 1, 3)
    + 'layer { name: "e" type: "Embed" bottom: "ids" top: "e" embed_param { num_output: 4 input_dim: 10 } }\n'
    + 'layer { name: "t" type: "Tile" bottom: "e" top: "t" tile_param { axis: 1 tiles: 2 } }\n'
    + 'layer { name: "el" type: "Eltwise" bottom: "t" bottom: "t" top: "el" eltwise_param { operation: SUM coeff: 1 coeff: -1 } }\n'
    + 'layer { name: "sc" type: "Scale" bottom: "el" top: "sc" scale_param { axis: 1 bias_term: true } }\n'
    + 'layer { name: "bn" type: "BatchNorm" bottom: "sc" top: "bn" }\n',
]
WORDS = ["layer", "name", "type", "top", "bottom", "Input", "Convolution", "Pooling", "LSTM", "RNN", "Concat",
         "Reshape", "axis", "dim", "shape", "num_output", "kernel_size", "stride", "pad", "group", "{", "}", ":", '"x"',
         "input_param", "MAX", "STOCHASTIC", "include { phase: TRAIN }", "expose_hidden: true", "-1", "0"]
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
NUMBERS = st.one_of(st.integers(-3, 40), st.sampled_from([0, -1, 1, 2**31, 2**31 - 1, 2**63, 10**30, "1e999", "nan", "-0"]))


@st.composite
def mutated_prototxt(draw) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["number", "number", "number", "delete", "duplicate", "insert", "word"]))
        if kind == "number":
            spans = [m.span() for m in NUMBER.finditer(text)]
            a, b = spans[draw(st.integers(0, len(spans) - 1))]
            text = text[:a] + str(draw(NUMBERS)) + text[b:]
        else:
            a = draw(st.integers(0, len(text)))
            b = min(len(text), a + draw(st.integers(0, 80)))
            if kind == "delete":
                text = text[:a] + text[b:]
            elif kind == "duplicate":
                text = text[:b] + text[a:b] + text[b:]
            elif kind == "insert":
                text = text[:a] + draw(st.text(max_size=12)) + text[a:]
            else:
                text = text[:a] + " " + draw(st.sampled_from(WORDS)) + " " + text[a:]
    return text


@pytest.fixture
def small_tensors(monkeypatch):
    # Mutated dims would otherwise ask for gigabytes of random weights; the limit is the same check.
    monkeypatch.setattr(caffe_context, "MAX_TENSOR_ELEMENTS", 1 << 20)


@given(text=mutated_prototxt())
def test_fuzz_prototxt(text, tmp_path, small_tensors):
    path = tmp_path / "net.prototxt"
    path.write_bytes(text.encode("utf-8", "replace"))
    try:
        convert_caffe(path, batch=None)
    except RnnrtError:
        pass


@given(data=st.binary(max_size=400))
def test_fuzz_prototxt_bytes(data, tmp_path, small_tensors):
    path = tmp_path / "net.prototxt"
    path.write_bytes(data)
    try:
        convert_caffe(path)
    except RnnrtError:
        pass


_IP_NET = input_layer("data", 1, 4) + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "y" inner_product_param { num_output: 3 } }\n'
_LSTM_NET = (input_layer("x", 1, 1, 2) + input_layer("cont", 1, 1)
             + 'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param { num_output: 2 } }\n')


def _caffemodel_seeds(folder: Path) -> list[tuple[Path, bytes]]:
    out = []
    for name, text, blobs in [
        ("ip", _IP_NET, {"ip": [np.arange(12, dtype=np.float32).reshape(3, 4), np.ones(3, np.float32)]}),
        ("lstm", _LSTM_NET, {"lstm": [np.ones((8, 2), np.float32), np.zeros(8, np.float32), np.ones((8, 2), np.float32)]}),
    ]:
        (folder / f"{name}.prototxt").write_text(text)
        save_caffemodel(folder / f"{name}.caffemodel", blobs)
        out.append((folder / f"{name}.prototxt", (folder / f"{name}.caffemodel").read_bytes()))
    return out


@pytest.fixture(scope="module")
def caffemodel_seeds(tmp_path_factory):
    return _caffemodel_seeds(tmp_path_factory.mktemp("caffemodels"))


@given(data=st.data())
def test_fuzz_caffemodel(data, tmp_path, caffemodel_seeds, small_tensors):
    proto, blob = data.draw(st.sampled_from(caffemodel_seeds))
    buf = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        i = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if kind == "flip" and buf:
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and buf:
            buf[i] = data.draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x3A, 0x12]))
        elif kind == "truncate":
            del buf[i:]
        elif kind == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=10))
        elif kind == "delete":
            del buf[i:i + data.draw(st.integers(1, 10))]
    path = tmp_path / "w.caffemodel"
    path.write_bytes(bytes(buf))
    try:
        load_net(proto, path)
        convert_caffe(proto, path)
    except RnnrtError:
        pass


@given(data=st.binary(max_size=300))
def test_fuzz_caffemodel_bytes(data, tmp_path, caffemodel_seeds):
    path = tmp_path / "w.caffemodel"
    path.write_bytes(data)
    try:
        convert_caffe(caffemodel_seeds[0][0], path)
    except RnnrtError:
        pass


@pytest.fixture(scope="module")
def model_yaml(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("yaml")
    (folder / "net.prototxt").write_text(_LSTM_NET)
    path = save_step_graph(convert_caffe(folder / "net.prototxt"), folder / "out")
    return path, path.read_text()


YAML_BITS = ["[", "]", "{", "}", ": ", "- ", "&a ", "*a", "!!python/object:os.system", "\t", "\xff", "~", "null", "-1",
             "1e400", "batch_axis: true", "9" * 30, "'", '"', "\n  ", "? ", "<<: *a", "!!binary AAAA",
             "\x00", "\x07", "\x1b[31m", "\x7f", "\x85", "\ufeff", "\u2028", "\ud800", "\r", "%YAML 1.1\n---\n"]


@given(data=st.data())
def test_fuzz_yaml_config(data, model_yaml):
    path, text = model_yaml
    for _ in range(data.draw(st.integers(1, 4))):
        a = data.draw(st.integers(0, len(text)))
        b = min(len(text), a + data.draw(st.integers(0, 30)))
        kind = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        bit = data.draw(st.sampled_from(YAML_BITS))
        text = text[:a] + (bit if kind != "delete" else "") + (text[b:] if kind != "insert" else text[a:])
    raw = text.encode("latin-1", "replace") if data.draw(st.booleans()) else text.encode("utf-8", "surrogatepass")
    bad = path.with_name("fuzzed.yaml")
    bad.write_bytes(raw)
    try:
        load_config(bad)
    except RnnrtError:
        pass


@pytest.fixture(scope="module")
def state_bytes() -> bytes:
    state = StreamState(model="0" * 64, tensors={"l.h0": np.arange(6, dtype=np.float32).reshape(1, 6),
                                                 "l.c0": np.ones((1, 6), np.float32)},
                        outputs={"l.h0": "l.hT", "l.c0": "l.cT"}, batch_axes={"l.h0": 0, "l.c0": 0}, steps=3)
    return state.to_bytes()


JSON_BITS = ["Infinity", "-Infinity", "NaN", "1e400", str(2**64), "-1", "[", "]", "{", "}", '"17"', "null", "true",
             '"float64"', '"object"', "[" * 100, "0.5", '""', "{}", "[]"]


@given(data=st.data())
def test_fuzz_stream_state_bytes(data, state_bytes):
    magic_len = state_bytes.index(b"{") - 4
    n = int.from_bytes(state_bytes[magic_len:magic_len + 4], "little")
    magic, head = state_bytes[:magic_len], state_bytes[magic_len + 4:magic_len + 4 + n]
    body = state_bytes[magic_len + 4 + n:-32]
    # Format 2 with a recomputed checksum (reaches the header checks), format 2 with the old checksum
    # (the checksum must catch the change) or format 1 (no checksum, read with a warning).
    seal = data.draw(st.sampled_from(["rehash", "rehash", "keep", "v1"]))
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["json", "json", "json", "flip", "truncate", "append"]))
        if kind == "json":  # edit the JSON header (its length prefix follows): numbers, nesting, types
            a = data.draw(st.integers(0, len(head)))
            b = min(len(head), a + data.draw(st.integers(0, 12)))
            head = head[:a] + data.draw(st.sampled_from(JSON_BITS)).encode() + head[b:]
        elif kind == "flip" and body:
            i = data.draw(st.integers(0, len(body) - 1))
            body = body[:i] + bytes([body[i] ^ (1 << data.draw(st.integers(0, 7)))]) + body[i + 1:]
        elif kind == "truncate":
            body = body[: data.draw(st.integers(0, len(body)))]
        else:
            body = body + data.draw(st.binary(max_size=16))
    if seal == "v1":
        magic, head = b"RNNRTSS1", head.replace(b'"format":2', b'"format":1')
    buf = magic + len(head).to_bytes(4, "little") + head + body
    if seal == "rehash":
        buf += hashlib.sha256(buf).digest()
    elif seal == "keep":
        buf += state_bytes[-32:]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = StreamState.from_bytes(buf)
        repr(state)
        state.signature()
        StreamState.from_bytes(state.to_bytes())
    except RnnrtError:
        pass


# StreamPool: random calls with hostile arguments on one thread; outputs checked against solo runs.
HOSTILE_FRAMES = [None, "x", b"\0", 3, 1.5, [1, 2], {"x": None}, {"nope": np.zeros((1, 1, 2), np.float32)},
                  np.zeros((1, 1, 3), np.float32), np.zeros((2, 1, 2), np.float32), np.zeros((1, 1, 2), np.complex64),
                  np.zeros((1, 1, 2), object), np.zeros((0, 1, 2), np.float32), np.array(["a", "b"]),
                  np.full((1, 1, 2), np.nan, np.float32), np.zeros((1, 1, 2), np.float64)]
HOSTILE_IDS = [None, [1], {"a": 1}, float("nan"), "", "a" * 10000, ("t", 1), 2**100]


@pytest.fixture(scope="module")
def pool_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    (folder / "net.prototxt").write_text(_LSTM_NET)
    path = save_step_graph(convert_caffe(folder / "net.prototxt", batch="dynamic"), folder / "out")
    import rnnrt

    with rnnrt.load(path, backend="onnxruntime", batch_size=4, threads=1) as session, \
            rnnrt.load(path, backend="onnxruntime", batch_size=1, threads=1) as solo:
        yield session, solo


@given(data=st.data())
def test_fuzz_pool(data, pool_model):
    session, solo = pool_model
    now = [0.0]
    pool = StreamPool(session, idle_timeout=5.0, clock=lambda: now[0])
    ids = ["a", "b", "c", "d", "e", 7]
    history: dict = {}   # open stream -> [frames since its last reset]
    checks = []          # (frames since reset, output) to replay
    for _ in range(data.draw(st.integers(1, 25))):
        op = data.draw(st.sampled_from(["open", "close", "reset", "step", "step", "step", "bad_step", "snapshot",
                                        "restore_bytes", "expire", "bad_id"]))
        sid = data.draw(st.sampled_from(ids))
        try:
            if op == "open":
                pool.open(sid)
                history[sid] = []
            elif op == "close":
                pool.close(sid, missing_ok=data.draw(st.booleans()))
                history.pop(sid, None)
            elif op == "reset":
                pool.reset(sid)
                history[sid] = []
            elif op in ("step", "bad_step"):
                some = data.draw(st.lists(st.sampled_from(ids), max_size=4, unique=True))
                frames = {s: np.float32(data.draw(st.floats(-2, 2, width=32))) * np.ones((1, 1, 2), np.float32)
                          for s in some}
                if op == "bad_step" and some:
                    frames[some[0]] = data.draw(st.sampled_from(HOSTILE_FRAMES))
                outs = pool.step(frames)
                now[0] += 1.0
                for s in some:
                    history[s].append(frames[s])
                    checks.append((list(history[s]), outs[s]["h"].copy()))
            elif op == "snapshot":
                state = pool.snapshot(sid)
                assert state.steps == len(history[sid]) and state.at_start == (not history[sid])
            elif op == "restore_bytes":
                blob = bytearray(pool.snapshot(sid).to_bytes())
                if data.draw(st.booleans()) and blob:
                    i = data.draw(st.integers(0, len(blob) - 1))
                    blob[i] ^= 1 << data.draw(st.integers(0, 7))
                new = data.draw(st.sampled_from(ids))
                restored = StreamState.from_bytes(bytes(blob))
                pool.restore(new, restored)
                history[new] = list(history[sid])
            elif op == "expire":
                now[0] += data.draw(st.sampled_from([0.0, 3.0, 6.0]))
                for s in pool.expire():
                    history.pop(s, None)
            else:
                bad = data.draw(st.sampled_from(HOSTILE_IDS))
                call = data.draw(st.sampled_from(["open", "close", "reset", "snapshot", "slot_of"]))
                getattr(pool, call)(bad)
                if call in ("open", "reset"):
                    history[bad] = []
        except RnnrtError:
            pass
        # The pool's view and ours agree after every call (a failed call changed nothing).
        for s in list(history):
            if s not in pool:
                history.pop(s)
        assert set(pool) == set(history), (op, set(pool), set(history))
    for s in list(pool):
        pool.close(s)
    for frames, want in checks:
        solo.reset()
        for f in frames:
            got = solo.step({"x": f})["h"]
        assert got.tobytes() == want.tobytes()


def test_fuzz_pool_threads(dynamic):
    """The threaded interleaving replay of tests/runtime: 3 s per seed in `make test`, a minute under `make fuzz`."""
    from tests.runtime.pool_replay import replay_interleavings

    seconds = 60.0 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 3.0
    report = replay_interleavings(dynamic("a_lstm_stream_t1n1"), seed=11, seconds=seconds)
    assert not report.raw_errors and not report.mismatches, (report.raw_errors[:3], report.mismatches[:3])
    assert report.checked > 20
