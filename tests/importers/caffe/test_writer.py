"""Tests of rnnrt.importers.caffe.writer: what it writes the reader (and Caffe's own BlobProto) reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnnrt.importers.caffe.proto import CaffeSchema, default_schema
from rnnrt.importers.caffe.reader import load_net, parse_prototxt
from rnnrt.importers.caffe.writer import net_to_prototxt, save_caffemodel, save_prototxt
from rnnrt.errors import ModelImportError

from rnnrt.importers.caffe.proto import ProtoExtension, ProtoField, ProtoMessage

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
GOLDEN = SHARED / "golden" / "caffe"
REALWORLD = SHARED / "realworld"
GOLDEN_CASES = sorted(p.name for p in GOLDEN.glob("*/") if (p / "case.json").exists()) if GOLDEN.exists() else []
needs_golden = pytest.mark.skipif(not GOLDEN_CASES, reason="golden Caffe data not found at ../shared/golden/caffe")
needs_realworld = pytest.mark.skipif(
    not (REALWORLD / "08_yalecyu_crnn_deploy.prototxt").exists(), reason="real-world prototxts not found"
)
FORK_FIELDS = ProtoExtension(
    messages=(
        ProtoMessage("PermuteParameter", (ProtoField("order", 1, "uint32", "repeated"),)),
        ProtoMessage(
            "ContinuationIndicatorParameter",
            (ProtoField("time_step", 1, "uint32"), ProtoField("batch_size", 2, "uint32")),
        ),
    ),
    layer_fields=(
        ProtoField("permute_param", 202, "PermuteParameter"),
        ProtoField("continuation_indicator_param", 301, "ContinuationIndicatorParameter"),
    ),
    origin="crnn_fork",
)
LSTM_NET = """
layer { name: "input" type: "Input" top: "data" top: "cont"
        input_param { shape { dim: 2 dim: 1 dim: 3 } shape { dim: 2 dim: 1 } } }
layer { name: "lstm1" type: "LSTM" bottom: "data" bottom: "cont" top: "lstm1" recurrent_param { num_output: 4 } }
"""


def test_prototxt_round_trip(tmp_path):
    net = parse_prototxt(LSTM_NET)
    text = net_to_prototxt(net)
    assert parse_prototxt(text) == net
    path = tmp_path / "deploy.prototxt"
    save_prototxt(path, net)
    loaded = load_net(path)
    assert [(l.name, l.type, l.bottoms, l.tops) for l in loaded.layers] == [
        ("input", "Input", [], ["data", "cont"]),
        ("lstm1", "LSTM", ["data", "cont"], ["lstm1"]),
    ]
    assert loaded.layers[1].param.recurrent_param.num_output == 4


@needs_golden
@pytest.mark.parametrize("case", GOLDEN_CASES[:4] + ["g4_mixed_ops"])
def test_golden_round_trip(tmp_path, case):
    folder = GOLDEN / case
    original = load_net(folder / "deploy.prototxt", folder / "weights.caffemodel")
    save_prototxt(tmp_path / "d.prototxt", parse_prototxt((folder / "deploy.prototxt").read_text()))
    save_caffemodel(tmp_path / "w.caffemodel", {l.name: l.blobs for l in original.layers if l.blobs}, name=case)
    copy = load_net(tmp_path / "d.prototxt", tmp_path / "w.caffemodel")
    assert [l.param for l in copy.layers] == [l.param for l in original.layers]
    for a, b in zip(original.layers, copy.layers):
        assert len(a.blobs) == len(b.blobs)
        assert all(np.array_equal(x, y) and x.shape == y.shape for x, y in zip(a.blobs, b.blobs))


@needs_realworld
def test_plugin_fields_round_trip():
    schema = CaffeSchema([FORK_FIELDS])
    net = parse_prototxt((REALWORLD / "08_yalecyu_crnn_deploy.prototxt").read_text(), schema=schema)
    text = net_to_prototxt(net)
    assert "permute_param" in text
    assert parse_prototxt(text, schema=schema) == net


def test_caffemodel_is_caffe_encoded(tmp_path):
    rng = np.random.default_rng(3)
    W = rng.standard_normal((4, 3)).astype(np.float32)
    blobs = {"ip": [W, np.arange(4)], "scalar": [np.float64(2.5)]}
    path = tmp_path / "w.caffemodel"
    save_caffemodel(path, blobs, name="net")
    # Decode with the full caffe.NetParameter: packed float `data` plus a BlobShape, as Caffe writes.
    net = default_schema().message("NetParameter").FromString(path.read_bytes())
    assert net.name == "net"
    assert [l.name for l in net.layer] == ["ip", "scalar"]
    ip = net.layer[0]
    assert list(ip.blobs[0].shape.dim) == [4, 3]
    assert np.array_equal(np.asarray(ip.blobs[0].data, dtype=np.float32), W.ravel())
    assert list(ip.blobs[1].data) == [0.0, 1.0, 2.0, 3.0]
    assert list(net.layer[1].blobs[0].shape.dim) == [] and list(net.layer[1].blobs[0].data) == [2.5]
    assert not any(b.HasField("num") for l in net.layer for b in l.blobs)


def test_caffemodel_round_trip_through_reader(tmp_path):
    prototxt = tmp_path / "d.prototxt"
    prototxt.write_text(LSTM_NET)
    blobs = [np.linspace(-1, 1, n * 4, dtype=np.float32).reshape(n, -1) for n in (16, 16)] + [np.ones(16)]
    save_caffemodel(tmp_path / "w.caffemodel", {"lstm1": blobs})
    got = load_net(prototxt, tmp_path / "w.caffemodel").layers[1].blobs
    assert [g.shape for g in got] == [(16, 4), (16, 4), (16,)]
    assert all(g.dtype == np.float32 and np.array_equal(g, b) for g, b in zip(got, blobs))
    got[0][0, 0] = 5.0  # arrays are writable copies, not views of the file buffer


def test_caffemodel_rejects_complex_blobs(tmp_path):
    with pytest.raises(ModelImportError, match=r"Layer 'ip', blob 0 \| Has dtype complex128"):
        save_caffemodel(tmp_path / "w.caffemodel", {"ip": [np.ones(3, dtype=complex)]})


def test_caffemodel_without_layers_is_rejected(tmp_path):
    prototxt = tmp_path / "d.prototxt"
    prototxt.write_text(LSTM_NET)
    save_caffemodel(tmp_path / "w.caffemodel", {}, name="empty")
    with pytest.raises(ModelImportError, match="Holds no layers"):
        load_net(prototxt, tmp_path / "w.caffemodel")
