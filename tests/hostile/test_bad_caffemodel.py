"""Broken, hostile or odd model files: typed errors naming the file, layer and blob; bounded memory; no hangs."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from rnnrt.errors import ModelImportError
from rnnrt.importers.caffe.convert import convert_caffe
from rnnrt.importers.caffe.reader import load_net
from rnnrt.importers.caffe.writer import save_caffemodel
from tests.hostile.helpers import input_layer, run_capped, tree

NET = input_layer("data", 1, 4) + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "y" inner_product_param { num_output: 2 } }\n'


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def blob(dims, data: bytes) -> bytes:
    """A BlobProto: shape { dim... } (packed int64, negatives as two's complement) and packed float data."""
    return _ld(7, _ld(1, b"".join(_varint(d) for d in dims))) + _ld(5, data)


def caffemodel(*blobs: bytes, name: bytes = b"ip") -> bytes:
    return _ld(100, _ld(1, name) + b"".join(_ld(7, b) for b in blobs))


GOOD_B = blob([2], struct.pack("<2f", 0.5, -0.5))

CASES = {
    "negative dim": (caffemodel(blob([-1, 4], b"\0" * 32), GOOD_B), r"Layer 'ip' \(InnerProduct\), blob 0 \| Has a negative dimension in its shape \[-1, 4\]"),
    "overflowing dims": (caffemodel(blob([1 << 62, 1 << 62], b"\0" * 32), GOOD_B), r"Layer 'ip' \(InnerProduct\), blob 0 \| Its shape .* holds \d+ values"),
    "dims product beyond int64": (caffemodel(blob([1 << 40] * 4, b""), GOOD_B), r"blob 0 \| Its shape"),
    "data of the wrong length (not whole floats)": (caffemodel(blob([2, 4], b"\0" * 9), GOOD_B), r"Layer 'ip' \(InnerProduct\), blob 0 \| Is not a valid BlobProto"),
    "data of the wrong count": (caffemodel(blob([2, 4], b"\0" * 12), GOOD_B), r"blob 0 \| The caffemodel holds 3 values for shape \(2, 4\)"),
    "blob bytes are garbage": (caffemodel(b"\xff\xff\xff", GOOD_B), r"Layer 'ip' \(InnerProduct\), blob 0 \| Is not a valid BlobProto"),
    "truncated file": (caffemodel(blob([2, 4], b"\0" * 32), GOOD_B)[:-7], r"Caffemodel '.*' \| Is not a binary Caffe NetParameter"),
    "wire type 3 (group)": (b"\x0b" + caffemodel(blob([2, 4], b"\0" * 32), GOOD_B), r"Caffemodel '.*' \| Is not a binary Caffe NetParameter: unsupported wire type 3"),
    "layer name not UTF-8": (caffemodel(blob([2, 4], b"\0" * 32), GOOD_B, name=b"\xff"), r"Caffemodel .* \| Is not a binary Caffe NetParameter: a layer name"),
    "wrong blob shape": (caffemodel(blob([4, 2], b"\0" * 32), GOOD_B), r"Layer 'ip' \(InnerProduct\) blob 0 \| Has shape \[4, 2\] in the caffemodel"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_caffemodel(case, tmp_path):
    data, match = CASES[case]
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "w.caffemodel").write_bytes(data)
    before = tree(tmp_path)
    with pytest.raises(ModelImportError, match=match):
        convert_caffe(tmp_path / "net.prototxt", tmp_path / "w.caffemodel")
    assert tree(tmp_path) == before


def test_bad_caffemodels_under_a_memory_cap(tmp_path):
    # A blob claiming 2^40 values, or 2^62 x 2^62, must not make the reader allocate them.
    (tmp_path / "net.prototxt").write_text(NET)
    for i, (data, _) in enumerate(CASES.values()):
        (tmp_path / f"{i}.caffemodel").write_bytes(data)
    (tmp_path / "huge.caffemodel").write_bytes(caffemodel(blob([1 << 20, 1 << 20], b"\0" * 64), GOOD_B))
    code = f"""
import glob
from rnnrt.importers.caffe.convert import convert_caffe
from rnnrt.errors import ModelImportError
for p in sorted(glob.glob({str(tmp_path)!r} + '/*.caffemodel')):
    try:
        convert_caffe({str(tmp_path / "net.prototxt")!r}, p)
    except ModelImportError:
        continue
    raise SystemExit('converted: ' + p)
"""
    assert run_capped(code, cap=1 << 30) == {"ok": True}


def test_valid_encodings_still_read(tmp_path):
    # Unpacked floats, split packed chunks and legacy 4-D fields take the BlobProto path; all read.
    w = np.arange(8, dtype=np.float32).reshape(2, 4)
    unpacked = _ld(7, _ld(1, _varint(2) + _varint(4))) + b"".join(b"\x2d" + struct.pack("<f", v) for v in w.ravel())
    split = _ld(7, _ld(1, _varint(2) + _varint(4))) + _ld(5, w.ravel()[:3].tobytes()) + _ld(5, w.ravel()[3:].tobytes())
    legacy = b"\x08\x01\x10\x01\x18\x02\x20\x04" + _ld(5, w.tobytes())  # num 1 channels 1 height 2 width 4
    (tmp_path / "net.prototxt").write_text(NET)
    for body in (unpacked, split, legacy):
        (tmp_path / "w.caffemodel").write_bytes(caffemodel(body, GOOD_B))
        got = load_net(tmp_path / "net.prototxt", tmp_path / "w.caffemodel").layers[1].blobs[0]
        np.testing.assert_array_equal(got.reshape(2, 4), w)


def test_caffemodel_blobs_are_writable_and_the_file_untouched(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    save_caffemodel(tmp_path / "w.caffemodel", {"ip": [np.ones((2, 4), np.float32), np.zeros(2, np.float32)]})
    before = (tmp_path / "w.caffemodel").read_bytes()
    net = load_net(tmp_path / "net.prototxt", tmp_path / "w.caffemodel")
    net.layers[1].blobs[0][0, 0] = 7.0
    assert (tmp_path / "w.caffemodel").read_bytes() == before


@pytest.mark.parametrize("which", ["prototxt", "caffemodel"])
@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "directory"])
def test_model_paths_that_are_not_regular_files(which, kind, tmp_path):
    # /dev/zero read until memory ran out; a FIFO blocked forever.
    proto, weights = tmp_path / "net.prototxt", tmp_path / "w.caffemodel"
    proto.write_text(NET)
    save_caffemodel(weights, {"ip": [np.ones((2, 4), np.float32), np.zeros(2, np.float32)]})
    bad = {"/dev/zero": "/dev/zero", "fifo": str(tmp_path / "fifo"), "directory": str(tmp_path)}[kind]
    if kind == "fifo":
        os.mkfifo(bad)
    args = (bad, str(weights)) if which == "prototxt" else (str(proto), bad)
    code = f"""
from rnnrt.importers.caffe.convert import convert_caffe
convert_caffe(*{args!r})
"""
    report = run_capped(code, cap=1 << 30, timeout=60)
    assert report["type"] == "ModelImportError" and report["rnnrt"], report
    assert bad in report["message"] and "Is not a regular file" in report["message"]


def test_prototxt_not_utf8(tmp_path):
    (tmp_path / "net.prototxt").write_bytes(NET.encode() + b"# \xff\xfe\n")
    with pytest.raises(ModelImportError, match=r"Prototxt '.*net.prototxt' \| Is not UTF-8 text"):
        convert_caffe(tmp_path / "net.prototxt")
