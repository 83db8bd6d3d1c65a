"""Builds and takes apart StreamState bytes (format 2) for the snapshot tests: a good state, its header and body,
and bytes made from an edited header (with a valid checksum unless told otherwise)."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np

from rnnrt.runtime.snapshot import StreamState

MAGIC_LEN = 8


def state(**changes) -> StreamState:
    """Two float32 state rows of width 6 ('l.h0' first), 3 steps taken; ``changes`` replace fields."""
    fields = dict(model="sha256:" + "ab" * 32,
                  tensors={"l.h0": np.arange(6, dtype=np.float32).reshape(1, 6),
                           "l.c0": np.linspace(-1, 1, 6, dtype=np.float32).reshape(1, 6)},
                  outputs={"l.h0": "l.hT", "l.c0": "l.cT"}, batch_axes={"l.h0": 0, "l.c0": 0}, steps=3)
    fields.update(changes)
    return StreamState(**fields)


def split(blob: bytes) -> tuple[dict, bytes]:
    """The JSON header and the tensor bytes of format-2 bytes (the checksum dropped)."""
    (n,) = struct.unpack_from("<I", blob, MAGIC_LEN)
    return json.loads(blob[MAGIC_LEN + 4:MAGIC_LEN + 4 + n]), blob[MAGIC_LEN + 4 + n:-32]


def seal(data: bytes) -> bytes:
    """``data`` followed by its SHA-256, as format 2 ends."""
    return data + hashlib.sha256(data).digest()


def join(header: dict | bytes, body: bytes, magic: bytes = b"RNNRTSS2", checksum: bool = True) -> bytes:
    """Bytes of a header (a dict, or raw JSON bytes) and a body; with a valid checksum unless ``checksum`` is False."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    data = magic + struct.pack("<I", len(head)) + head + body
    return seal(data) if checksum else data


def edited(change: dict, st: StreamState | None = None) -> bytes:
    """Format-2 bytes of ``st`` (default :func:`state`) with header fields changed and a valid checksum.

    Keys are header keys or ``tensors.I.FIELD``; a value of ``...`` deletes the field.
    """
    header, body = split((st or state()).to_bytes())
    for key, value in change.items():
        where, field = header, key
        if key.startswith("tensors."):
            _, i, field = key.split(".")
            where = header["tensors"][int(i)]
        if value is ...:
            del where[field]
        else:
            where[field] = value
    return join(header, body)
