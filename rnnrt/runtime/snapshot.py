"""One stream's recurrent state detached from any pool: :class:`StreamState` and its byte format.

Serialized form (no pickle), format 2: the magic ``RNNRTSS2``, a little-endian u32 header length, a
JSON header, the raw little-endian tensor bytes in header order, then the SHA-256 of everything before
it (32 bytes). :meth:`StreamState.from_bytes` trusts nothing: the checksum must match (any flipped bit,
truncation or edited header entry is refused), every header field is type-checked and range-checked
(names, dtypes, sizes, batch dim 1, a step count an int64 holds, ``at_start`` only with 0 steps, no
unknown keys), and anything wrong is a :class:`rnnrt.errors.SnapshotError`. The checksum detects
corruption, not forgery: a party that can rewrite the bytes can recompute it, so keep snapshots where
only trusted code writes them (or sign them yourself).

Format 1 (magic ``RNNRTSS1``, no checksum; rnnrt before issue 22) is still read, with a
``UserWarning`` that its integrity cannot be checked; :meth:`StreamState.to_bytes` writes format 2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import struct
import warnings
from collections import abc
from typing import Any, Mapping

import numpy as np

from rnnrt.errors import ConfigError, SnapshotError, fmt

__all__ = ["StreamState", "model_digest"]

_MAGIC = b"RNNRTSS2"
_MAGIC_V1 = b"RNNRTSS1"   # format 1: no checksum, read with a warning
_FORMAT = 2
_DIGEST = 32              # bytes of the trailing SHA-256
_MAX_NAME = 4096          # characters of a model identity or tensor name
_HEADER_KEYS = {"format", "model", "at_start", "steps", "tensors"}
_TENSOR_KEYS = {"input", "output", "dtype", "shape", "batch_axis"}
_SAFE_DTYPES = {"float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool"}
_MAX_HEADER = 1 << 20     # bytes of JSON header
_MAX_DEPTH = 8            # nesting of the JSON header (it needs 4)
_MAX_INT = 2 ** 63 - 1
_MAX_TENSORS = 4096
_MAX_RANK = 16
_MAX_STEPS = 2**63 - 1    # steps since open/reset: what a pool counts (int64)


def _external_data_files(path: Any) -> list[str]:
    """The external-data files a model names (weights kept beside ``model.onnx``), in a stable order."""
    import os

    import onnx

    # A model with external weights is small without them; a large file holds its weights inside.
    if os.path.getsize(path) > (64 << 20):
        return []
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not an ONNX model we can read: its bytes alone are its identity
        return []
    names = {entry.value for init in model.graph.initializer for entry in init.external_data if entry.key == "location"}
    base = os.path.dirname(os.path.abspath(path))
    return [os.path.join(base, n) for n in sorted(names)]


def model_digest(path: Any) -> str:
    """Returns ``"sha256:<hex>"`` of a model file and its external-data files: the identity snapshots carry."""
    h = hashlib.sha256()
    try:
        for name in [path, *_external_data_files(path)]:
            with open(name, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    except OSError as err:
        raise ConfigError(fmt(f"Model {str(path)!r}", f"Cannot be read: {err.strerror}")) from err
    return "sha256:" + h.hexdigest()


def _corrupt(what: str) -> SnapshotError:
    return SnapshotError(fmt("StreamState.from_bytes", f"The data is corrupt: {what}",
                             "Pass what StreamState.to_bytes() returned, unmodified."))


def _no_constant(name: str) -> Any:
    raise _corrupt(f"non-finite number {name}")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _corrupt(f"number {text[:20]} out of range")
    return value


def _int(text: str) -> int:
    if len(text) > 20:
        raise _corrupt(f"integer {text[:20]}... out of range")
    return int(text)


def _depth(text: bytes) -> int:
    depth = deepest = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == 0x5C:
                esc = True
            elif ch == 0x22:
                in_str = False
        elif ch == 0x22:
            in_str = True
        elif ch in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > _MAX_DEPTH:
                return deepest
        elif ch in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _known_keys(d: Mapping, known: set, where: str) -> None:
    unknown = sorted(map(str, set(d) - known))
    if unknown:
        raise _corrupt(f"{where} has unknown keys {unknown[:5]}")


def _name(d: Mapping, key: str, where: str) -> str:
    value = _get(d, key, str, where)
    if not 0 < len(value) <= _MAX_NAME or not value.isprintable():
        raise _corrupt(f"{where}.{key} {value[:40]!r} is not a printable name of 1 to {_MAX_NAME} characters")
    return value


def _get(d: Mapping, key: str, kind: type, where: str) -> Any:
    if key not in d:
        raise _corrupt(f"{where} lacks {key!r}")
    value = d[key]
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not -_MAX_INT <= value <= _MAX_INT:
            raise _corrupt(f"{where}.{key} is {value}, out of the int64 range")
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise _corrupt(f"{where}.{key} is {type(value).__name__} {str(value)[:40]!r}, expected {kind.__name__}")
    return value


@dataclasses.dataclass(frozen=True, eq=False)
class StreamState:
    """One stream's recurrent state, detached from any pool.

    Args:
        model (str): Identity of the model that produced it (:func:`model_digest` of its ONNX file).
        tensors (Mapping[str, np.ndarray]): State rows keyed by state input name; each has the
            state's shape with batch dim 1.
        outputs (Mapping[str, str]): State output name of each state input (the pairing).
        batch_axes (Mapping[str, int]): Batch axis of each state tensor.
        at_start (bool): True when the stream's next frame is its t=0 (opened or reset, not stepped since).
        steps (int): Frames the stream has taken since it was opened or reset.

    Raises:
        SnapshotError: A field has the wrong type (a tensor that is not a numpy array, a name that is
            not a string, a pairing or axis missing for a tensor), or ``at_start`` is True with steps taken.
    """

    model: str
    tensors: Mapping[str, np.ndarray]
    outputs: Mapping[str, str]
    batch_axes: Mapping[str, int]
    at_start: bool = False
    steps: int = 0

    def __post_init__(self) -> None:
        def bad(what: str) -> SnapshotError:
            return SnapshotError(fmt("StreamState", what, "Build it with StreamPool.snapshot() or "
                                     "StreamState.from_bytes(); tensors are numpy arrays keyed by state input name."))

        if not isinstance(self.model, str):
            raise bad(f"model is a {type(self.model).__name__}, not a string")
        for field in ("tensors", "outputs", "batch_axes"):
            if not isinstance(getattr(self, field), abc.Mapping):
                raise bad(f"{field} is a {type(getattr(self, field)).__name__}, not a mapping")
        for name, arr in self.tensors.items():
            if not isinstance(name, str):
                raise bad(f"Tensor name {name!r} is not a string")
            if not isinstance(arr, np.ndarray) or isinstance(arr, np.ma.MaskedArray):
                raise bad(f"Tensor {name!r} is a {type(arr).__name__}, not a numpy array")
            if not isinstance(self.outputs.get(name), str):
                raise bad(f"Tensor {name!r} has no state output name")
            axis = self.batch_axes.get(name)
            if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not 0 <= axis < max(arr.ndim, 1):
                raise bad(f"Tensor {name!r} has batch axis {axis!r}")
        if not isinstance(self.at_start, (bool, np.bool_)):
            raise bad(f"at_start is {self.at_start!r}, not a bool")
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) \
                or not 0 <= self.steps <= _MAX_STEPS:
            raise bad(f"steps is {self.steps!r}, not a count in [0, {_MAX_STEPS}]")
        if self.at_start and self.steps:  # to_bytes would write what from_bytes refuses
            raise bad(f"at_start is True but steps is {self.steps!r} (a sequence start has taken no steps)")

    @classmethod
    def _from_pool(cls, model: str, tensors: dict, outputs: Mapping[str, str], batch_axes: Mapping[str, int],
                   at_start: bool, steps: int) -> "StreamState":
        """Built by a StreamPool from its own rows: the fields have the right types by construction, so the
        checks of ``__post_init__`` (meant for hand-built states) are skipped (a pool snapshots many
        streams per call)."""
        obj = object.__new__(cls)
        for name, value in (("model", model), ("tensors", tensors), ("outputs", outputs), ("batch_axes", batch_axes),
                            ("at_start", at_start), ("steps", steps)):
            object.__setattr__(obj, name, value)
        return obj

    def signature(self) -> list[tuple]:
        """``(input, output, dtype, shape, batch_axis)`` of every state tensor, sorted by name."""
        return sorted(
            (name, self.outputs[name], arr.dtype.name, tuple(arr.shape), int(self.batch_axes[name]))
            for name, arr in self.tensors.items()
        )

    def to_bytes(self) -> bytes:
        """Serializes the state (no pickle: a JSON header and the raw little-endian rows)."""
        header = {
            "format": _FORMAT,
            "model": self.model,
            "at_start": bool(self.at_start),
            "steps": int(self.steps),
            "tensors": [
                {"input": n, "output": self.outputs[n], "dtype": a.dtype.name, "shape": [int(d) for d in a.shape],
                 "batch_axis": int(self.batch_axes[n])}
                for n, a in self.tensors.items()
            ],
        }
        head = json.dumps(header, separators=(",", ":")).encode()
        body = [np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes() for a in self.tensors.values()]
        data = b"".join([_MAGIC, struct.pack("<I", len(head)), head, *body])
        return data + hashlib.sha256(data).digest()

    @classmethod
    def from_bytes(cls, data: Any) -> "StreamState":
        """Reads what :meth:`to_bytes` wrote.

        Raises:
            SnapshotError: The bytes are not a serialized StreamState, or are truncated or corrupt
                (every header field is checked: types, finite numbers, bounded ints and nesting).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SnapshotError(fmt("StreamState.from_bytes", f"Got a {type(data).__name__}",
                                    "Pass the bytes StreamState.to_bytes() returned."))
        data = bytes(data)
        if data.startswith(_MAGIC) and len(data) >= len(_MAGIC) + 4 + _DIGEST:
            version = _FORMAT
            data, digest = data[:-_DIGEST], data[-_DIGEST:]
            if hashlib.sha256(data).digest() != digest:
                raise _corrupt("the SHA-256 checksum does not match (bytes were changed, truncated or appended)")
        elif data.startswith(_MAGIC_V1) and len(data) >= len(_MAGIC_V1) + 4:
            version = 1
            warnings.warn("StreamState.from_bytes | Reading a format-1 snapshot, which has no checksum: its "
                          "integrity cannot be checked. Snapshot the stream again to get format 2.", UserWarning,
                          stacklevel=2)
        else:
            raise SnapshotError(fmt("StreamState.from_bytes", "The data is not a serialized StreamState",
                                    "Pass what StreamState.to_bytes() returned."))
        (n,) = struct.unpack_from("<I", data, len(_MAGIC))
        start = len(_MAGIC) + 4
        if n > _MAX_HEADER or start + n > len(data):
            raise _corrupt(f"header length {n} does not fit the {len(data)} bytes")
        raw = data[start:start + n]
        if _depth(raw) > _MAX_DEPTH:
            raise _corrupt(f"the header nests deeper than {_MAX_DEPTH} levels")
        try:
            header = json.loads(raw, parse_constant=_no_constant, parse_float=_float, parse_int=_int)
        except SnapshotError:
            raise
        except (ValueError, RecursionError) as err:
            raise _corrupt(f"the header is not JSON ({type(err).__name__}: {str(err)[:80]})") from err
        if not isinstance(header, dict):
            raise _corrupt(f"the header is a {type(header).__name__}, not an object")
        fmt_version = _get(header, "format", int, "header")
        if fmt_version != version:
            raise SnapshotError(fmt("StreamState.from_bytes", f"Format {fmt_version!r} does not match the magic "
                                    f"of format {version}", f"This rnnrt reads formats 1 and {_FORMAT}."))
        _known_keys(header, _HEADER_KEYS, "header")
        model = _name(header, "model", "header")
        at_start = _get(header, "at_start", bool, "header")
        steps = _get(header, "steps", int, "header")
        if not 0 <= steps <= _MAX_STEPS:
            raise _corrupt(f"steps is {steps}, not in [0, {_MAX_STEPS}]")
        if at_start and steps:
            raise _corrupt(f"at_start is true but steps is {steps} (a sequence start has taken no steps)")
        entries = _get(header, "tensors", list, "header")
        if len(entries) > _MAX_TENSORS:
            raise _corrupt(f"{len(entries)} tensors")
        offset = start + n
        tensors, outputs, axes = {}, {}, {}
        for i, t in enumerate(entries):
            where = f"tensors[{i}]"
            if not isinstance(t, dict):
                raise _corrupt(f"{where} is a {type(t).__name__}")
            _known_keys(t, _TENSOR_KEYS, where)
            name = _name(t, "input", where)
            out = _name(t, "output", where)
            dtype_name = _get(t, "dtype", str, where)
            if dtype_name not in _SAFE_DTYPES:
                raise _corrupt(f"{where}.dtype {dtype_name[:20]!r} is not one of {sorted(_SAFE_DTYPES)}")
            dims = _get(t, "shape", list, where)
            if len(dims) > _MAX_RANK or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2 ** 31
                                                for d in dims):
                raise _corrupt(f"{where}.shape {str(dims)[:60]} is not a list of sizes")
            axis = _get(t, "batch_axis", int, where)
            if not 0 <= axis < len(dims):
                raise _corrupt(f"{where}.batch_axis {axis} is out of range for shape {dims}")
            if dims[axis] != 1:
                raise _corrupt(f"{where}.shape {dims} has {dims[axis]} rows along batch_axis {axis}; "
                               "one stream's state has 1")
            if name in tensors:
                raise _corrupt(f"tensor {name!r} appears twice")
            dtype = np.dtype(dtype_name).newbyteorder("<")
            count = math.prod(dims)
            size = count * dtype.itemsize
            if offset + size > len(data):
                raise _corrupt(f"truncated: tensor {name!r} needs {size} bytes, {len(data) - offset} are left")
            arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(tuple(dims))
            tensors[name] = arr.astype(arr.dtype.newbyteorder("="))
            outputs[name] = out
            axes[name] = axis
            offset += size
        if offset != len(data):
            raise _corrupt(f"{len(data) - offset} trailing bytes")
        return cls(model=model, tensors=tensors, outputs=outputs, batch_axes=axes, at_start=at_start, steps=steps)

    def __repr__(self) -> str:
        sig = ", ".join(f"{n}{list(s)}" for n, _, _, s, _ in self.signature())
        return f"StreamState(model={self.model[:19]!r}, at_start={self.at_start}, steps={self.steps}, state=[{sig}])"
