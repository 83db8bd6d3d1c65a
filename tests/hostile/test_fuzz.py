"""Fuzzing harnesses: mutated prototxts, caffemodels, YAML configs and StreamState bytes.

Each asserts that only an ``RnnrtError`` (or success) comes out. `make test` runs the "ci" profile
(derandomized, 60 examples each, seconds); `make fuzz` runs the "fuzz" profile (5,000 each, random).
"""

from __future__ import annotations

import re
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
             "1e400", "batch_axis: true", "9" * 30, "'", '"', "\n  ", "? ", "<<: *a", "!!binary AAAA"]


@given(data=st.data())
def test_fuzz_yaml_config(data, model_yaml):
    path, text = model_yaml
    for _ in range(data.draw(st.integers(1, 4))):
        a = data.draw(st.integers(0, len(text)))
        b = min(len(text), a + data.draw(st.integers(0, 30)))
        kind = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        bit = data.draw(st.sampled_from(YAML_BITS))
        text = text[:a] + (bit if kind != "delete" else "") + (text[b:] if kind != "insert" else text[a:])
    raw = text.encode("latin-1", "replace") if data.draw(st.booleans()) else text.encode("utf-8", "replace")
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
    magic, head, body = state_bytes[:magic_len], state_bytes[magic_len + 4:magic_len + 4 + n], state_bytes[magic_len + 4 + n:]
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
    buf = magic + len(head).to_bytes(4, "little") + head + body
    try:
        state = StreamState.from_bytes(buf)
        repr(state)
        state.signature()
    except RnnrtError:
        pass
