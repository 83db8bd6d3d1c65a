"""Reads a Caffe deploy prototxt and (optionally) its caffemodel into a :class:`CaffeNet`.

Follows Caffe's own loading: layers are filtered by the net state (phase, level, stages) with
Caffe's NetStateRule semantics, and trained blobs are matched to layers by layer name, as Caffe's
``Net::CopyTrainedLayersFrom`` does.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import re
import stat
import sys
from typing import Any, Sequence

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError, Message

from rnnrt.importers.caffe.proto import CaffeSchema, default_schema
from rnnrt.errors import ModelImportError, fmt

_PHASES = ("TRAIN", "TEST")  # index == caffe.Phase number
_V1_NET = re.compile(r"^\s*layers\s*\{", re.MULTILINE)
_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')


@dataclasses.dataclass
class CaffeLayer:
    """One layer of a Caffe net, after include/exclude filtering.

    Args:
        name (str): The layer name (not necessarily unique: Caffe accepts duplicates).
        type (str): The layer type, e.g. ``"LSTM"``.
        bottoms (list[str]): Input blob names.
        tops (list[str]): Output blob names.
        param (Message): The ``caffe.LayerParameter`` from the prototxt; read the layer's
            parameters from it, e.g. ``layer.param.recurrent_param.num_output``.
        blobs (list[np.ndarray]): Trained float32 blobs from the caffemodel in the blob's shape
            (legacy 4-D blobs stay 4-D); ``[]`` without a caffemodel or for layers without blobs.
        param_names (list[str]): ``param { name }`` per blob index, ``""`` where unnamed.
        index (int): Position in the filtered net.
    """

    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    param: Message
    blobs: list[np.ndarray]
    param_names: list[str]
    index: int


@dataclasses.dataclass
class CaffeNet:
    """A Caffe net ready for conversion.

    Args:
        name (str): The net name.
        inputs (dict[str, tuple[int, ...]]): Legacy net-level inputs (``input`` with
            ``input_shape`` or ``input_dim``), in order; ``()`` where no shape is given. ``Input``
            layers are not listed here: they stay ordinary layers.
        layers (list[CaffeLayer]): The layers kept for the net state.
        has_weights (bool): Whether a caffemodel was read.
    """

    name: str
    inputs: dict[str, tuple[int, ...]]
    layers: list[CaffeLayer]
    has_weights: bool


def parse_prototxt(text: str, *, schema: CaffeSchema | None = None, filename: str = "<string>") -> Message:
    """Parses prototxt text into a ``caffe.NetParameter``.

    Args:
        text (str): The prototxt.
        schema (CaffeSchema | None): Message classes to parse with; plugins' extra fields need
            theirs. Defaults to :func:`rnnrt.importers.caffe.proto.default_schema`.
        filename (str): Named in error messages. Defaults to ``"<string>"``.

    Returns:
        Message: The NetParameter.

    Raises:
        ModelImportError: The text does not parse (names file, line and column), or is a V1
            (``layers {}``) net.
    """
    schema = schema or default_schema()
    net = schema.message("NetParameter")()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as err:
        if _V1_NET.search(_strip_comments(text)):
            raise ModelImportError(_v1_message(filename)) from None
        line, column = err.GetLine(), err.GetColumn()
        where = f"{filename}:{line}:{column}" if line else filename
        detail = str(err)
        # The parser prefixes "line:column : "; the location is already in the subject.
        detail = re.sub(r"^\d+:\d+\s*:\s*", "", detail)
        note = None
        unknown = _UNKNOWN_FIELD.search(detail)
        if unknown and unknown.group(1) == "caffe.LayerParameter":
            note = (
                f"{unknown.group(2)!r} is not a BVLC Caffe layer field; the layer probably comes from a "
                "Caffe fork. A layer plugin can declare the field and its message (--plugins)"
            )
        elif unknown:
            note = f"{unknown.group(1)!r} has no such field in BVLC Caffe; check the spelling"
        raise ModelImportError(fmt(where, f"Cannot parse the prototxt: {detail}", note)) from None
    if len(net.layers):
        raise ModelImportError(_v1_message(filename))
    return net


def load_net(
    prototxt: str | os.PathLike,
    caffemodel: str | os.PathLike | None = None,
    *,
    phase: str = "TEST",
    level: int = 0,
    stages: Sequence[str] = (),
    schema: CaffeSchema | None = None,
    progress: bool = False,
) -> CaffeNet:
    """Reads a deploy prototxt and, optionally, its trained weights.

    Args:
        prototxt (str | os.PathLike): The net definition (text NetParameter).
        caffemodel (str | os.PathLike | None): Trained weights (binary NetParameter); None to
            read the structure only. Defaults to None.
        phase (str): ``"TEST"`` (default) or ``"TRAIN"``; selects layers with include/exclude rules.
        level (int): The net state level. Defaults to 0.
        stages (Sequence[str]): The net state stages. Defaults to none.
        schema (CaffeSchema | None): Message classes with plugin extensions. Defaults to
            :func:`rnnrt.importers.caffe.proto.default_schema`.
        progress (bool): Show a progress bar on stderr while converting blobs. Defaults to False.

    Returns:
        CaffeNet: The filtered layers with their blobs.

    Raises:
        ModelImportError: A file cannot be read or parsed, the net is V1, a layer has both include
            and exclude rules, a bottom is unknown, a top has two producers, or a blob's data does
            not fill its shape.

    Example::

        net = load_net("deploy.prototxt", "weights.caffemodel")
        lstm = next(layer for layer in net.layers if layer.type == "LSTM")
        W_xc, b_c, W_hc = lstm.blobs
    """
    schema = schema or default_schema()
    if phase not in _PHASES:
        raise ModelImportError(fmt("Net state", f"Unknown phase {phase!r}", f"Expected one of {list(_PHASES)}"))
    path = os.fspath(prototxt)
    text = _read_prototxt(path)
    net = parse_prototxt(text, schema=schema, filename=path)
    inputs = _net_inputs(net, path)
    state = _State(phase=phase, level=level, stages=frozenset(stages))
    kept = [lp for lp in net.layer if _included(lp, state, path)]
    layers = [
        CaffeLayer(
            name=lp.name,
            type=lp.type,
            bottoms=list(lp.bottom),
            tops=list(lp.top),
            param=lp,
            blobs=[],
            param_names=[p.name for p in lp.param],
            index=i,
        )
        for i, lp in enumerate(kept)
    ]
    _check_blobs(inputs, layers, path)
    if caffemodel is not None:
        _attach_weights(os.fspath(caffemodel), layers, schema, progress)
    for layer in layers:
        layer.param_names += [""] * (len(layer.blobs) - len(layer.param_names))
    return CaffeNet(name=net.name, inputs=inputs, layers=layers, has_weights=caffemodel is not None)


MAX_PROTOTXT_BYTES = 256 << 20
"""The largest prototxt read (real deploy prototxts are kilobytes; a net of 10^5 layers is ~10 MB)."""


def _read_prototxt(path: str) -> str:
    # A regular file of bounded size: /dev/zero or a FIFO would otherwise read forever.
    subject = f"Prototxt {path!r}"
    try:
        # stat before open: opening a FIFO blocks until someone writes to it.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ModelImportError(fmt(subject, "Is not a regular file", "Pass the deploy .prototxt file."))
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size > MAX_PROTOTXT_BYTES:
                raise ModelImportError(
                    fmt(subject, f"Is {st.st_size} bytes", f"Expected a prototxt of at most {MAX_PROTOTXT_BYTES} bytes.")
                )
            data = f.read(MAX_PROTOTXT_BYTES + 1)
    except OSError as err:
        raise ModelImportError(fmt(subject, f"Cannot be read: {err}")) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ModelImportError(fmt(subject, f"Is not UTF-8 text: {err}", "A prototxt is protobuf text format.")) from None


def _strip_comments(text: str) -> str:
    return re.sub(r"#[^\n]*", "", text)


def _v1_message(filename: str) -> str:
    return fmt(
        f"Prototxt {filename!r}",
        "Is a V1 net (`layers { ... }` with enum layer types), which rnnrt does not read",
        "Upgrade it with Caffe's `upgrade_net_proto_text` tool, or rewrite it with `layer { ... }` "
        "and string types",
    )


def _net_inputs(net: Message, path: str) -> dict[str, tuple[int, ...]]:
    names = list(net.input)
    subject = f"Prototxt {path!r}"
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ModelImportError(fmt(subject, f"Declares net input {dup!r} twice", "Input names must be unique"))
    if len(net.input_shape) and len(net.input_dim):
        raise ModelImportError(
            fmt(subject, "Gives both input_shape and input_dim", "Use input_shape (or legacy input_dim) only")
        )
    if len(net.input_shape):
        if len(net.input_shape) != len(names):
            raise ModelImportError(
                fmt(subject, f"Has {len(names)} inputs but {len(net.input_shape)} input_shape entries",
                    "Expected exactly one input_shape per input")
            )
        return {n: tuple(int(d) for d in s.dim) for n, s in zip(names, net.input_shape)}
    if len(net.input_dim):
        dims = [int(d) for d in net.input_dim]
        if len(dims) != 4 * len(names):
            raise ModelImportError(
                fmt(subject, f"Has {len(names)} inputs but {len(dims)} input_dim values",
                    "Expected four input_dim values (num, channels, height, width) per input")
            )
        return {n: tuple(dims[4 * i : 4 * i + 4]) for i, n in enumerate(names)}
    return {n: () for n in names}


@dataclasses.dataclass(frozen=True)
class _State:
    phase: str
    level: int
    stages: frozenset[str]


def _meets(rule: Message, state: _State) -> bool:
    # Caffe's Net::StateMeetsRule: every condition the rule sets must hold.
    if rule.HasField("phase") and rule.phase != _PHASES.index(state.phase):
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    if any(s not in state.stages for s in rule.stage):
        return False
    return not any(s in state.stages for s in rule.not_stage)


def _included(lp: Message, state: _State, path: str) -> bool:
    # Caffe's Net::FilterNet: with include rules a layer is kept if ANY matches; with exclude rules
    # it is dropped if ANY matches; both kinds at once is an error.
    if len(lp.include) and len(lp.exclude):
        raise ModelImportError(
            fmt(f"Layer {lp.name!r} in {path!r}", "Has both include and exclude rules",
                "Caffe allows include rules or exclude rules, not both")
        )
    if len(lp.include):
        return any(_meets(r, state) for r in lp.include)
    return not any(_meets(r, state) for r in lp.exclude)


def _check_blobs(inputs: dict[str, tuple[int, ...]], layers: list[CaffeLayer], path: str) -> None:
    # Caffe's Net::AppendBottom / AppendTop: a bottom must exist already; a top may rewrite an
    # existing blob only in place (the bottom at the same index has the same name).
    available = set(inputs)
    for layer in layers:
        subject = f"Layer {layer.name!r} ({layer.type}) in {path!r}"
        for i, b in enumerate(layer.bottoms):
            if b not in available:
                raise ModelImportError(
                    fmt(subject, f"Bottom {i} {b!r} is not produced by an earlier layer",
                        "A bottom must be a net input or a top of a layer above it")
                )
        for i, t in enumerate(layer.tops):
            in_place = i < len(layer.bottoms) and layer.bottoms[i] == t
            if t in available and not in_place:
                raise ModelImportError(
                    fmt(subject, f"Top {i} {t!r} is already produced by another layer",
                        "Caffe allows rewriting a blob only in place (top i == bottom i)")
                )
            available.add(t)


def _attach_weights(path: str, layers: list[CaffeLayer], schema: CaffeSchema, progress: bool) -> None:
    subject = f"Caffemodel {path!r}"
    # The file is mapped, not read: blob data packed as Caffe writes it is viewed in place (numpy
    # arrays over the mapping), so a caffemodel costs its own size in memory, once. The mapping is
    # copy-on-write: the arrays stay writable and writes never reach the file.
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # before open: a FIFO would block it
            raise ModelImportError(fmt(subject, "Is not a regular file", "Pass the .caffemodel file written by Caffe"))
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size else b""
    except OSError as err:
        raise ModelImportError(fmt(subject, f"Cannot be read: {err}")) from None
    buf = memoryview(data)
    try:
        sources = _scan_net(buf)
    except _WireError as err:
        raise ModelImportError(
            fmt(subject, f"Is not a binary Caffe NetParameter: {err}", "Pass the .caffemodel written by Caffe")
        ) from None
    if not sources and size:
        raise ModelImportError(
            fmt(subject, "Holds no layers", "Pass the .caffemodel written by Caffe for this prototxt")
        )
    first_by_name: dict[str, CaffeLayer] = {}
    for layer in layers:
        first_by_name.setdefault(layer.name, layer)
    # Caffe's CopyTrainedLayersFrom: each source layer goes to the first target layer of that name;
    # source layers absent from the (filtered) net are ignored.
    matched = [(first_by_name[name], blobs) for name, blobs in sources if name in first_by_name and len(blobs)]
    total = sum(len(blobs) for _, blobs in matched)
    bar = _progress_bar(total, progress, os.path.basename(path))
    try:
        for layer, blobs in matched:
            layer.blobs = [_blob_array(buf, span, layer, i, schema, bar) for i, span in enumerate(blobs)]
    finally:
        if bar is not None:
            bar.close()


class _WireError(Exception):
    """The protobuf wire format is broken at some offset."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _WireError(f"truncated or overlong varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview, pos: int, end: int):
    """Yields (field number, wire type, value or (start, end) of a length-delimited payload)."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _WireError(f"field number 0 at byte {pos}")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _WireError(f"field {number} of {length} bytes at byte {pos} runs past its message")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise _WireError(f"truncated fixed-width field {number} at byte {pos}")
            yield number, wire, (pos, pos + width)
            pos += width
        else:
            raise _WireError(f"unsupported wire type {wire} (field {number}) at byte {pos}")


# NetParameter.layer (100) is a LayerParameter: name 1, blobs 7; NetParameter.layers (2) is a
# V1LayerParameter: name 4, blobs 6 (V1 caffemodels: blobs matched by layer name anyway).
_LAYER_FIELDS = {100: (1, 7), 2: (4, 6)}


def _scan_net(buf: memoryview) -> list[tuple[str, list[tuple[int, int]]]]:
    """The caffemodel's layers: (name, [(start, end) of each serialized BlobProto]), without copying data."""
    out = []
    for number, wire, value in _fields(buf, 0, len(buf)):
        if number not in _LAYER_FIELDS or wire != 2:
            continue
        name_field, blob_field = _LAYER_FIELDS[number]
        name, blobs = "", []
        for n, w, v in _fields(buf, *value):
            if n == name_field and w == 2:
                try:
                    name = str(buf[v[0] : v[1]], "utf-8")
                except UnicodeDecodeError:
                    raise _WireError(f"a layer name at byte {v[0]} is not UTF-8") from None
            elif n == blob_field and w == 2:
                blobs.append(v)
        out.append((name, blobs))
    return out


def _progress_bar(total: int, progress: bool, desc: str) -> Any:
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="blob", file=sys.stderr, disable=not sys.stderr.isatty())


_MAX_BLOB_VALUES = 1 << 40  # no caffemodel holds a blob of 4 TiB; anything larger is a corrupt shape


def _scan_blob(buf: memoryview, span: tuple[int, int]) -> tuple[tuple[int, ...] | None, list, list, bool]:
    """(shape or None, float data chunks, double data chunks, simple): ``simple`` is False where the
    blob needs the real BlobProto parse (unpacked values, legacy fields, a repeated shape)."""
    dims: list[int] | None = None
    legacy: dict[int, int] = {}
    floats, doubles, simple = [], [], True
    for n, w, v in _fields(buf, *span):
        if n == 7 and w == 2:
            if dims is not None:
                simple = False
            dims = []
            for dn, dw, dv in _fields(buf, *v):
                if dn == 1 and dw == 0:
                    dims.append(dv - (1 << 64) if dv >= 1 << 63 else dv)  # int64: two's complement
                elif dn == 1 and dw == 2:
                    pos, end = dv
                    while pos < end:
                        d, pos = _varint(buf, pos, end)
                        dims.append(d - (1 << 64) if d >= 1 << 63 else d)
        elif n in (1, 2, 3, 4) and w == 0:
            legacy[n] = v
        elif n in (5, 8):  # data, double_data: packed (wire type 2) is Caffe's encoding; else unpacked
            if w == 2:
                (floats if n == 5 else doubles).append(v)
            else:
                simple = False
    if legacy:
        return None, floats, doubles, False
    return tuple(dims or ()), floats, doubles, simple


def _blob_array(buf: memoryview, span: tuple[int, int], layer: CaffeLayer, index: int, schema: CaffeSchema, bar: Any) -> np.ndarray:
    subject = f"Layer {layer.name!r} ({layer.type}), blob {index}"
    try:
        shape, floats, doubles, simple = _scan_blob(buf, span)
    except _WireError as err:
        raise ModelImportError(fmt(subject, f"Is not a valid BlobProto: {err}")) from None
    arr = None
    if simple and shape is not None:
        count = _blob_count(shape, subject)
        chunks, dtype, itemsize = (doubles, "<f8", 8) if doubles else (floats, "<f4", 4)
        if len(chunks) == 1 and chunks[0][1] - chunks[0][0] == count * itemsize:
            # Caffe's own encoding: one packed chunk of the right size; viewed, not copied.
            arr = np.frombuffer(buf, dtype=dtype, count=count, offset=chunks[0][0])
        elif not chunks and count == 0:
            arr = np.zeros(0, np.float32)
    if arr is None:
        # Another valid encoding (unpacked, split chunks, legacy 4-D fields) or a wrong length:
        # decode with the real BlobProto, which handles every valid encoding.
        try:
            blob = schema.message("BlobProto").FromString(bytes(buf[span[0] : span[1]]))
        except (DecodeError, RuntimeError, ValueError) as err:
            raise ModelImportError(fmt(subject, f"Is not a valid BlobProto: {err}")) from None
        shape = _blob_shape(blob)
        count = _blob_count(shape, subject)
        if len(blob.double_data):
            arr = np.asarray(blob.double_data, dtype=np.float64)
        else:
            arr = np.asarray(blob.data, dtype=np.float32)
        if arr.size != count:
            raise ModelImportError(
                fmt(
                    subject,
                    f"The caffemodel holds {arr.size} values for shape {shape}",
                    f"Expected {count} values (the product of the shape)",
                )
            )
    if bar is not None:
        bar.update(1)
    return arr.astype(np.float32, copy=False).reshape(shape)


def _blob_count(shape: tuple[int, ...], subject: str) -> int:
    if any(d < 0 for d in shape):
        raise ModelImportError(fmt(subject, f"Has a negative dimension in its shape {list(shape)}", "Blob dimensions are sizes (>= 0)"))
    count = 1
    for d in shape:
        count *= d
    if count > _MAX_BLOB_VALUES:
        raise ModelImportError(
            fmt(subject, f"Its shape {list(shape)} holds {count} values", f"Expected at most {_MAX_BLOB_VALUES} (a corrupt shape?)")
        )
    return count


def _blob_shape(blob: Message) -> tuple[int, ...]:
    # Caffe's Blob::FromProto: any legacy field present means the legacy 4-D shape.
    if any(blob.HasField(n) for n in ("num", "channels", "height", "width")):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(int(d) for d in blob.shape.dim)
