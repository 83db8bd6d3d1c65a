"""StreamState's limits at their exact values, and what its errors name (issue 23).

Every bound of the snapshot reader (header length, nesting, int64 counts, name lengths, tensor count, rank,
dimension sizes, batch axis) is tried at the limit (read) and one past it (refused). A refusal is a
:class:`~rnnrt.errors.SnapshotError` from ``StreamState.from_bytes`` (or ``StreamState`` for a hand-built
state) that names the offending field and value and says how to fix it; its wording is not tested.
"""

from __future__ import annotations

import json
import os
import re
import struct

import numpy as np
import pytest

from rnnrt.errors import SnapshotError
from rnnrt.runtime.snapshot import StreamState
from tests.runtime.snapshot_bytes import edited, join, seal, split, state

INT64_MAX = 2**63 - 1


def _refused(data, says: str, where: str = "StreamState.from_bytes") -> str:
    """Reading ``data`` raises a SnapshotError from ``where`` whose message contains ``says`` and a fix."""
    with pytest.raises(SnapshotError, match=re.escape(says)) as err:
        StreamState.from_bytes(data)
    msg = str(err.value)
    assert msg.startswith(f"{where} | ") and "\nNote: " in msg, msg
    return msg


def _built_refused(says: str, **changes) -> None:
    with pytest.raises(SnapshotError, match=re.escape(says)) as err:
        state(**changes)
    msg = str(err.value)
    assert msg.startswith("StreamState | ") and "\nNote: " in msg, msg


def _same(a: StreamState, b: StreamState) -> None:
    assert a.signature() == b.signature() and (a.model, a.at_start, a.steps) == (b.model, b.at_start, b.steps)
    for name, arr in a.tensors.items():
        assert b.tensors[name].dtype == arr.dtype and b.tensors[name].tobytes() == arr.tobytes()


def _one(arr: np.ndarray, axis: int = 0) -> StreamState:
    """A state of one tensor 'h' (output 'hT')."""
    return state(tensors={"h": arr}, outputs={"h": "hT"}, batch_axes={"h": axis})


def _roundtrip(st: StreamState) -> StreamState:
    back = StreamState.from_bytes(st.to_bytes())
    _same(st, back)
    return back


def _with_extra(value, st: StreamState | None = None) -> bytes:
    """Bytes whose header has one more key, last: the reader checks its nesting before refusing the key."""
    return edited({"extra": value}, st)


def _lists(levels: int):
    return [] if levels == 1 else [_lists(levels - 1)]


def _objects(levels: int):
    return {} if levels == 1 else {"a": _objects(levels - 1)}


# The container sizes: what the bytes must have before the header is looked at.
def test_the_shortest_inputs_of_each_format():
    head = b"RNNRTSS2" + struct.pack("<I", 0)
    shortest = seal(head)  # 44 bytes: magic, header length, checksum
    _refused(shortest, "the header is not JSON (JSONDecodeError: Expecting value")
    for size in (8, 12, 43):
        _refused(shortest[:size], "The data is not a serialized StreamState")
    v1 = b"RNNRTSS1" + struct.pack("<I", 0)  # 12 bytes: magic and header length
    with pytest.warns(UserWarning, match="format-1"):
        _refused(v1, "the header is not JSON")
    for size in (8, 10, 11):
        _refused(v1[:size], "The data is not a serialized StreamState")
    _refused(b"just some bytes, long enough to hold a header length", "The data is not a serialized StreamState")


@pytest.mark.parametrize("data", [bytearray, memoryview])
def test_bytes_like_inputs_are_read(data):
    st = state()
    _same(st, StreamState.from_bytes(data(st.to_bytes())))


def test_a_str_is_refused_naming_its_type():
    _refused(state().to_bytes().decode("latin-1"), "Got a str")


def test_the_format_1_warning_points_at_the_caller():
    header, body = split(state().to_bytes())
    header["format"] = 1
    with pytest.warns(UserWarning, match="format-1") as rec:
        StreamState.from_bytes(join(header, body, magic=b"RNNRTSS1", checksum=False))
    # It points at the caller (here; under mutmut, at its trampoline), never into the reader itself.
    assert os.path.basename(rec[0].filename) != "snapshot.py"


def test_the_header_length_limit():
    header, body = split(state().to_bytes())
    head = json.dumps(header).encode()
    limit = 1 << 20
    at_limit = head + b" " * (limit - len(head))  # JSON allows the padding
    _same(state(), StreamState.from_bytes(join(at_limit, body)))
    _refused(join(at_limit + b" ", body), f"header length {limit + 1} does not fit")
    # A length past the end, or past 2**31 (read unsigned), is refused as such.
    short = b"RNNRTSS2" + struct.pack("<I", 1000) + b"{}"
    _refused(seal(short), "header length 1000 does not fit the 14 bytes")
    huge = b"RNNRTSS2" + struct.pack("<I", 2**32 - 1) + b"{}"
    _refused(seal(huge), "header length 4294967295 does not fit")


# Nesting of the JSON header (checked before parsing): the header needs 4 levels, 8 are read.
@pytest.mark.parametrize("extra,nests", [
    (_lists(7), 8),
    (_lists(8), 9),
    (_objects(7), 8),
    (_objects(8), 9),
    ([[]] * 20 + [{}] * 20, 3),       # siblings do not add up
    ([[], _lists(7)], 9),             # nesting after a closed sibling still counts
])
def test_the_nesting_limit(extra, nests):
    if nests <= 8:
        _refused(_with_extra(extra), "header has unknown keys ['extra']")
    else:
        _refused(_with_extra(extra), "the header nests deeper than 8 levels")


def test_brackets_quotes_and_backslashes_inside_names_are_not_nesting():
    name = 'q"' + "[" * 9 + "\\" + "{" * 9 + '\\"'
    st = state(model=name, tensors={name: np.zeros((1, 2), np.float32)}, outputs={name: name + "]" * 9},
               batch_axes={name: 0})
    _roundtrip(st)
    # A name ending in a backslash closes its string: what follows nests as it looks.
    _refused(_with_extra(_lists(8), state(model="x\\")), "the header nests deeper than 8 levels")
    _refused(_with_extra(_lists(7), state(model="x\\")), "header has unknown keys ['extra']")


# Numbers: int64 counts, at most 20 characters, finite.
def test_the_int64_limits():
    back = StreamState.from_bytes(edited({"steps": INT64_MAX}))
    assert back.steps == INT64_MAX
    _roundtrip(state(steps=INT64_MAX))
    _refused(edited({"steps": INT64_MAX + 1}), f"header.steps is {INT64_MAX + 1}, out of the int64 range")
    # -(2**63 - 1) is 20 characters and an int64: refused as an axis, not as a number.
    _refused(edited({"tensors.0.batch_axis": -INT64_MAX}), f"tensors[0].batch_axis {-INT64_MAX} is out of range")
    _refused(edited({"tensors.0.batch_axis": -INT64_MAX - 1}), "tensors[0].batch_axis is -9223372036854775808, out")
    # 21 characters are refused before Python builds the int.
    _refused(edited({"steps": -10 * INT64_MAX}), "integer -9223372036854775807... out of range")
    _refused(edited({"steps": 10**20}), "integer 10000000000000000000... out of range")


def test_steps_at_zero_and_at_start():
    back = _roundtrip(state(at_start=True, steps=0))
    assert back.at_start is True and back.steps == 0
    _refused(edited({"steps": -1}), "steps is -1, not in [0, 9223372036854775807]")


@pytest.mark.parametrize("text,says", [
    (b"NaN", "non-finite number NaN"),
    (b"-Infinity", "non-finite number -Infinity"),
    (b"1e400", "number 1e400 out of range"),
    (b"1.5", "header.steps is float '1.5', expected int"),
])
def test_numbers_that_are_no_step_count(text, says):
    header, body = split(state().to_bytes())
    head = json.dumps(header).encode().replace(b'"steps": 3', b'"steps": ' + text)
    _refused(join(head, body), says)


# Names, counts, ranks, sizes, axes.
def test_the_name_length_limits():
    for n in (1, 4096):
        name = "n" * n
        _roundtrip(state(model=name, tensors={name: np.ones((1, 2), np.int8)}, outputs={name: name},
                         batch_axes={name: 0}))
    _refused(edited({"model": "m" * 4097}), "header.model 'mmmm")
    _refused(edited({"tensors.1.input": "i" * 4097}), "tensors[1].input 'iiii")
    _refused(edited({"tensors.1.output": "o" * 4097}), "tensors[1].output 'oooo")


def test_the_tensor_count_limit():
    def blob(count: int) -> bytes:
        entries = [{"input": f"s{i}", "output": f"o{i}", "dtype": "uint8", "shape": [1], "batch_axis": 0}
                   for i in range(count)]
        header = {"format": 2, "model": "m", "at_start": False, "steps": 0, "tensors": entries}
        return join(header, bytes(range(256)) * (count // 256) + bytes(count % 256))

    back = StreamState.from_bytes(blob(4096))
    assert len(back.tensors) == 4096 and back.tensors["s4095"].tolist() == [255]
    _refused(blob(4097), "The data is corrupt: 4097 tensors")


def test_the_rank_and_size_limits():
    _roundtrip(_one(np.zeros((1,) * 16, np.float32)))
    _refused(edited({"tensors.0.shape": [1] * 17}), f"tensors[0].shape {[1] * 17} is not a list of sizes")
    _roundtrip(_one(np.zeros((1, 0), np.float32)))
    _roundtrip(_one(np.arange(64, dtype=np.int32).reshape(1, 64)))
    # 2**31 - 1 is a size (these bytes lack its data); 2**31 is not.
    _refused(edited({"tensors.0.shape": [1, 2**31 - 1]}),
             "truncated: tensor 'l.h0' needs 8589934588 bytes, 48 are left")
    _refused(edited({"tensors.0.shape": [1, 2**31]}), "tensors[0].shape [1, 2147483648] is not a list of sizes")
    _refused(edited({"tensors.0.shape": [1, True]}), "tensors[0].shape [1, True] is not a list of sizes")


def test_the_batch_axis_limits():
    _roundtrip(_one(np.zeros((6, 1), np.float16), axis=1))
    _refused(edited({"tensors.0.batch_axis": 2}), "tensors[0].batch_axis 2 is out of range for shape [1, 6]")
    _refused(edited({"tensors.1.shape": [0, 6]}), "tensors[1].shape [0, 6] has 0 rows along batch_axis 0")


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool"])
@pytest.mark.parametrize("order", ["<", ">"])
def test_every_dtype_is_written_little_endian(dtype, order):
    arr = (np.arange(6) % 3).astype(np.dtype(dtype).newbyteorder(order)).reshape(1, 6)
    st = _one(arr)
    header, body = split(st.to_bytes())
    assert header["tensors"][0]["dtype"] == dtype and body == arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    back = StreamState.from_bytes(st.to_bytes())
    assert back.tensors["h"].dtype == np.dtype(dtype) and np.array_equal(back.tensors["h"], arr)


# What each refusal names: the field (header.KEY or tensors[I].KEY) and the offending value or type.
@pytest.mark.parametrize("change,says", [
    ({"format": "2"}, "header.format is str '2', expected int"),
    ({"model": 7}, "header.model is int '7', expected str"),
    ({"model": ""}, "header.model '' is not a printable name"),
    ({"at_start": 1}, "header.at_start is int '1', expected bool"),
    ({"steps": True}, "header.steps is bool 'True', expected int"),
    ({"steps": ...}, "header lacks 'steps'"),
    ({"tensors": {}}, "header.tensors is dict '{}', expected list"),
    ({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1}, "header has unknown keys ['a', 'b', 'c', 'd', 'e']"),
    ({"tensors.1.input": 5}, "tensors[1].input is int '5', expected str"),
    ({"tensors.1.input": "l.h0"}, "tensor 'l.h0' appears twice"),
    ({"tensors.1.output": ""}, "tensors[1].output '' is not a printable name"),
    ({"tensors.1.dtype": 3}, "tensors[1].dtype is int '3', expected str"),
    ({"tensors.1.dtype": "object"}, "tensors[1].dtype 'object' is not one of"),
    ({"tensors.1.shape": "16"}, "tensors[1].shape is str '16', expected list"),
    ({"tensors.1.batch_axis": "0"}, "tensors[1].batch_axis is str '0', expected int"),
    ({"tensors.1.batch_axis": ...}, "tensors[1] lacks 'batch_axis'"),
    ({"tensors.1.extra": 0}, "tensors[1] has unknown keys ['extra']"),
])
def test_a_refusal_names_the_field_and_value(change, says):
    _refused(edited(change), says)


def test_refusals_of_the_header_as_a_whole():
    header, body = split(state().to_bytes())
    _refused(join(b'"a string"', body), "the header is a str, not an object")
    _refused(join(b"{not json", body), "the header is not JSON (JSONDecodeError: Expecting property name")
    header["tensors"][1] = "l.c0"
    _refused(join(header, body), "tensors[1] is a str")
    with pytest.warns(UserWarning, match="format-1"):
        _refused(join({**header, "tensors": []}, body, magic=b"RNNRTSS1", checksum=False),
                 "Format 2 does not match the magic of format 1")


def test_refusals_name_the_bytes_missing_or_left_over():
    header, body = split(state().to_bytes())
    _refused(join(header, body[:-4]), "truncated: tensor 'l.c0' needs 24 bytes, 20 are left")
    _refused(join(header, body + b"\0"), "The data is corrupt: 1 trailing bytes")


# A hand-built StreamState: the same limits, refused when built.
@pytest.mark.parametrize("changes,says", [
    ({"model": 5}, "model is a int, not a string"),
    ({"tensors": []}, "tensors is a list, not a mapping"),
    ({"outputs": None}, "outputs is a NoneType, not a mapping"),
    ({"batch_axes": ()}, "batch_axes is a tuple, not a mapping"),
    ({"batch_axes": {"l.h0": 0.0, "l.c0": 0}}, "Tensor 'l.h0' has batch axis 0.0"),
    ({"batch_axes": {"l.h0": True, "l.c0": 0}}, "Tensor 'l.h0' has batch axis True"),
    ({"batch_axes": {"l.h0": 2, "l.c0": 0}}, "Tensor 'l.h0' has batch axis 2"),
    ({"tensors": {"h": np.zeros(1)}, "outputs": {"h": "o"}, "batch_axes": {"h": 1}}, "Tensor 'h' has batch axis 1"),
    ({"tensors": {"h": np.ma.zeros((1, 2))}, "outputs": {"h": "o"}, "batch_axes": {"h": 0}},
     "Tensor 'h' is a MaskedArray, not a numpy array"),
    ({"at_start": 1}, "at_start is 1, not a bool"),
    ({"steps": True}, "steps is True, not a count in [0, 9223372036854775807]"),
    ({"steps": 1.0}, "steps is 1.0, not a count"),
    ({"steps": INT64_MAX + 1}, "steps is 9223372036854775808, not a count"),
    ({"at_start": True}, "at_start is True but steps is 3"),  # its bytes would not be read back
])
def test_a_malformed_stream_state_is_refused_when_built(changes, says):
    _built_refused(says, **changes)


def test_the_limits_of_a_hand_built_state_are_inclusive():
    assert state(steps=INT64_MAX).steps == INT64_MAX
    assert state(steps=np.int64(2), at_start=np.bool_(False)).steps == 2
    st = state(tensors={"h": np.zeros((2, 1)), "s": np.full((), 0.5, np.float32)}, outputs={"h": "hT", "s": "sT"},
               batch_axes={"h": np.int64(1), "s": 0})
    assert st.signature() == [("h", "hT", "float64", (2, 1), 1), ("s", "sT", "float32", (), 0)]


def test_repr_names_the_model_prefix_and_the_state_shapes():
    assert repr(state()) == ("StreamState(model='sha256:abababababab', at_start=False, steps=3, "
                             "state=[l.c0[1, 6], l.h0[1, 6]])")
