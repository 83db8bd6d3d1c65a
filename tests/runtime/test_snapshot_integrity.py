"""StreamState bytes (format 2): a SHA-256 over header and data, every header field range-checked, format 1
still read with a warning (defect 7 of issue 22)."""

from __future__ import annotations

import hashlib
import json
import struct
import warnings

import pytest

from rnnrt.errors import SnapshotError
from rnnrt.runtime.snapshot import StreamState
from tests.runtime.snapshot_bytes import edited
from tests.runtime.snapshot_bytes import join as _join
from tests.runtime.snapshot_bytes import split as _split
from tests.runtime.snapshot_bytes import state as _state


def test_roundtrip_is_format_2_with_a_checksum():
    st = _state()
    blob = st.to_bytes()
    assert blob.startswith(b"RNNRTSS2") and _split(blob)[0]["format"] == 2
    assert blob[-32:] == hashlib.sha256(blob[:-32]).digest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = StreamState.from_bytes(blob)
    assert back.signature() == st.signature() and back.steps == 3
    for k in st.tensors:
        assert back.tensors[k].tobytes() == st.tensors[k].tobytes()


def test_every_single_bit_flip_is_refused():
    """Before format 2, a bit flipped after the header restored silently."""
    blob = _state().to_bytes()
    for i in range(len(blob)):
        for bit in (0, 7):
            bad = bytearray(blob)
            bad[i] ^= 1 << bit
            with pytest.raises(SnapshotError):
                StreamState.from_bytes(bytes(bad))


def test_swapped_header_entries_are_refused():
    """Swapping two tensors' header entries used to restore one tensor into the other."""
    blob = _state().to_bytes()
    header, body = _split(blob)
    header["tensors"].reverse()
    swapped = json.dumps(header, separators=(",", ":")).encode()
    data = b"RNNRTSS2" + struct.pack("<I", len(swapped)) + swapped + body + blob[-32:]
    with pytest.raises(SnapshotError, match="checksum does not match"):
        StreamState.from_bytes(data)


def test_truncated_and_appended_bytes_are_refused():
    blob = _state().to_bytes()
    for bad in (blob[:-1], blob[:-33], blob + b"\0", blob[:40]):
        with pytest.raises(SnapshotError):
            StreamState.from_bytes(bad)


def test_format_1_is_read_with_a_warning():
    st = _state()
    header, body = _split(st.to_bytes())
    header["format"] = 1
    old = _join(header, body, magic=b"RNNRTSS1", checksum=False)
    with pytest.warns(UserWarning, match="format-1 snapshot, which has no checksum"):
        back = StreamState.from_bytes(old)
    assert back.signature() == st.signature()
    assert all(back.tensors[k].tobytes() == st.tensors[k].tobytes() for k in st.tensors)


@pytest.mark.parametrize("change,match", [
    ({"steps": 2**63}, "steps is 9223372036854775808, out of the int64 range"),
    ({"steps": -1}, "steps is -1, not in"),
    ({"at_start": True}, "at_start is true but steps is 3"),
    ({"model": ""}, "model '' is not a printable name"),
    ({"model": "a\x00b"}, "not a printable name"),
    ({"format": 1}, "Format 1 does not match the magic of format 2"),
    ({"extra": 1}, "unknown keys \\['extra'\\]"),
    ({"tensors.0.shape": [2, 6]}, "has 2 rows along batch_axis 0"),
    ({"tensors.0.input": ""}, "input '' is not a printable name"),
    ({"tensors.0.output": "x" * 5000}, "not a printable name of 1 to 4096"),
    ({"tensors.0.batch_axis": -1}, "batch_axis -1 is out of range"),
    ({"tensors.0.bad": 0}, "unknown keys \\['bad'\\]"),
])
def test_header_fields_are_range_checked(change, match):
    """Each field out of range is refused even with a valid checksum (a buggy or hostile writer)."""
    with pytest.raises(SnapshotError, match=match):
        StreamState.from_bytes(edited(change))


def test_step_count_beyond_int64_is_refused_when_built():
    with pytest.raises(SnapshotError, match="steps is 1180591620717411303424"):
        _state(steps=2**70)
