"""Caffe message classes, built at import time from ``caffe.desc`` plus plugin extensions.

rnnrt ships no ``*_pb2.py``: layer plugins from Caffe forks (SSD's ``Permute``, OCR forks'
``ContinuationIndicator``, ...) must add ``*_param`` fields to ``caffe.LayerParameter`` and the
prototxt parser must then accept them. A :class:`CaffeSchema` is one descriptor pool holding
``caffe.proto`` with those additions, and the message classes built from it::

    schema = CaffeSchema([ProtoExtension(
        messages=(ProtoMessage("PermuteParameter", (ProtoField("order", 1, "uint32", "repeated"),)),),
        layer_fields=(ProtoField("permute_param", 202, "PermuteParameter"),),
        origin="ssd_layers",
    )])
    net = schema.message("NetParameter")()
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
from typing import Any, Sequence

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from rnnrt.errors import ModelImportError, PluginError, fmt

_PACKAGE = "caffe"
_FILE = "caffe.proto"
_BUILTIN = "caffe.proto"  # the "origin" of built-in fields in clash messages
_RAW_PACKAGE = "rnnrt_caffe_raw"

_FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "double": _FDP.TYPE_DOUBLE,
    "float": _FDP.TYPE_FLOAT,
    "int32": _FDP.TYPE_INT32,
    "int64": _FDP.TYPE_INT64,
    "uint32": _FDP.TYPE_UINT32,
    "uint64": _FDP.TYPE_UINT64,
    "sint32": _FDP.TYPE_SINT32,
    "sint64": _FDP.TYPE_SINT64,
    "bool": _FDP.TYPE_BOOL,
    "string": _FDP.TYPE_STRING,
    "bytes": _FDP.TYPE_BYTES,
}
_LABELS = {"optional": _FDP.LABEL_OPTIONAL, "repeated": _FDP.LABEL_REPEATED}


@dataclasses.dataclass(frozen=True)
class ProtoField:
    """One field a plugin adds to ``caffe.LayerParameter`` or declares in its own message.

    Args:
        name (str): The field name as written in prototxts, e.g. ``"permute_param"``.
        number (int): The field number (that of the fork's caffe.proto, so caffemodels decode).
        type (str): A scalar type (``double float int32 int64 uint32 uint64 sint32 sint64 bool
            string bytes``), a message or enum declared in the same extension (an enum nested in
            the field's own message by its bare name, others as ``"Message.Enum"``), or an existing
            caffe message or enum such as ``"FillerParameter"``, ``"BlobShape"`` or ``"Phase"``.
        label (str): ``"optional"`` (default) or ``"repeated"``.
        default (object): Default of an optional scalar or enum field; None for none.
    """

    name: str
    number: int
    type: str
    label: str = "optional"
    default: object = None


@dataclasses.dataclass(frozen=True)
class ProtoEnum:
    """An enum nested in a plugin message.

    Args:
        name (str): The enum name.
        values (tuple[tuple[str, int], ...]): ``(NAME, number)`` pairs.
    """

    name: str
    values: tuple[tuple[str, int], ...]


@dataclasses.dataclass(frozen=True)
class ProtoMessage:
    """A message a plugin declares in package ``caffe``, e.g. ``PermuteParameter``.

    Args:
        name (str): The message name (no package).
        fields (tuple[ProtoField, ...]): Its fields.
        enums (tuple[ProtoEnum, ...]): Enums nested in it.
    """

    name: str
    fields: tuple[ProtoField, ...] = ()
    enums: tuple[ProtoEnum, ...] = ()


@dataclasses.dataclass(frozen=True)
class ProtoExtension:
    """What a layer plugin adds to the Caffe schema.

    Args:
        messages (tuple[ProtoMessage, ...]): New messages in package ``caffe``.
        layer_fields (tuple[ProtoField, ...]): Fields added to ``caffe.LayerParameter``.
        origin (str): The plugin's name, used in error messages.
    """

    messages: tuple[ProtoMessage, ...] = ()
    layer_fields: tuple[ProtoField, ...] = ()
    origin: str = ""


@functools.lru_cache(maxsize=1)
def _base_file_bytes() -> bytes:
    data = importlib.resources.files("rnnrt.importers.caffe").joinpath("caffe.desc").read_bytes()
    fds = descriptor_pb2.FileDescriptorSet.FromString(data)
    for f in fds.file:
        if f.name == _FILE:
            return f.SerializeToString()
    raise ModelImportError(
        fmt("rnnrt/importers/caffe/caffe.desc", f"Holds no {_FILE!r}", "Regenerate it with `make proto`")
    )


def _message_class(desc: Any) -> type[Message]:
    get = getattr(message_factory, "GetMessageClass", None)
    if get is not None:
        return get(desc)
    return message_factory.MessageFactory(desc.file.pool).GetPrototype(desc)  # protobuf < 4.22


def _origin(ext: ProtoExtension) -> str:
    return ext.origin or "<unnamed plugin>"


class _Builder:
    """Applies extensions to a copy of caffe.proto's FileDescriptorProto, checking for clashes."""

    def __init__(self, file_proto: descriptor_pb2.FileDescriptorProto) -> None:
        self.file = file_proto
        self.top_messages = {m.name: m for m in file_proto.message_type}
        self.top_enums = {e.name for e in file_proto.enum_type}
        self.message_origin = {name: _BUILTIN for name in self.top_messages}
        for name in self.top_enums:
            self.message_origin[name] = _BUILTIN
        self.layer = self.top_messages["LayerParameter"]
        self.layer_names = {f.name: _BUILTIN for f in self.layer.field}
        self.layer_numbers = {f.number: (f.name, _BUILTIN) for f in self.layer.field}

    def apply(self, ext: ProtoExtension) -> None:
        origin = _origin(ext)
        own = {m.name: m for m in ext.messages}
        for m in ext.messages:
            if m.name in self.message_origin:
                other = self.message_origin[m.name]
                raise PluginError(
                    fmt(
                        f"Plugin {origin!r}",
                        f"Declares message {m.name!r}, which {other!r} already declares",
                        "Each message name may be declared once; rename one of them",
                    )
                )
            self.message_origin[m.name] = origin
        for m in ext.messages:
            self.file.message_type.append(self._message(m, own, origin))
        for f in ext.layer_fields:
            self._check_layer_field(f, origin)
            self.layer.field.append(self._field(f, None, own, origin, "LayerParameter"))
            self.layer_names[f.name] = origin
            self.layer_numbers[f.number] = (f.name, origin)

    def _check_layer_field(self, f: ProtoField, origin: str) -> None:
        if f.name in self.layer_names:
            other = self.layer_names[f.name]
            raise PluginError(
                fmt(
                    f"Plugin {origin!r}",
                    f"Adds LayerParameter field {f.name!r}, which {other!r} already declares",
                    "Field names of caffe.LayerParameter must be unique",
                )
            )
        if f.number in self.layer_numbers:
            name, other = self.layer_numbers[f.number]
            raise PluginError(
                fmt(
                    f"Plugin {origin!r}",
                    f"Adds LayerParameter field {f.name!r} with number {f.number}, which {other!r} "
                    f"already uses for {name!r}",
                    "Field numbers of caffe.LayerParameter must be unique; use the fork's caffe.proto numbers",
                )
            )

    def _message(
        self, m: ProtoMessage, own: dict[str, ProtoMessage], origin: str
    ) -> descriptor_pb2.DescriptorProto:
        proto = descriptor_pb2.DescriptorProto(name=m.name)
        for e in m.enums:
            ep = proto.enum_type.add(name=e.name)
            for value_name, number in e.values:
                ep.value.add(name=value_name, number=number)
        names: set[str] = set()
        numbers: dict[int, str] = {}
        for f in m.fields:
            if f.name in names or f.number in numbers:
                what = (
                    f"Declares field {f.name!r} twice"
                    if f.name in names
                    else f"Gives fields {numbers[f.number]!r} and {f.name!r} the same number {f.number}"
                )
                raise PluginError(fmt(f"Plugin {origin!r}, message {m.name!r}", what, "Fields must be unique"))
            names.add(f.name)
            numbers[f.number] = f.name
            proto.field.append(self._field(f, m, own, origin, m.name))
        return proto

    def _field(
        self,
        f: ProtoField,
        parent: ProtoMessage | None,
        own: dict[str, ProtoMessage],
        origin: str,
        where: str,
    ) -> descriptor_pb2.FieldDescriptorProto:
        subject = f"Plugin {origin!r}, field {where}.{f.name}"
        if f.label not in _LABELS:
            raise PluginError(fmt(subject, f"Has label {f.label!r}", "Expected 'optional' or 'repeated'"))
        if not isinstance(f.number, int) or isinstance(f.number, bool) or not 0 < f.number < 2**29:
            raise PluginError(fmt(subject, f"Has number {f.number!r}", "Expected an int in [1, 2**29)"))
        fp = _FDP(name=f.name, number=f.number, label=_LABELS[f.label])
        enum_values: list[str] | None = None
        if f.type in _SCALARS:
            fp.type = _SCALARS[f.type]
        else:
            kind, full, enum_values = self._resolve(f.type, parent, own)
            if kind is None:
                raise PluginError(
                    fmt(
                        subject,
                        f"Has unknown type {f.type!r}",
                        "Expected a scalar type, a message or enum declared by the same plugin, or an "
                        "existing caffe message or enum (e.g. 'FillerParameter', 'BlobShape')",
                    )
                )
            fp.type = kind
            fp.type_name = full
        if f.default is not None:
            if f.label == "repeated" or fp.type == _FDP.TYPE_MESSAGE:
                raise PluginError(
                    fmt(subject, "Has a default", "Only optional scalar and enum fields take a default")
                )
            fp.default_value = self._default(f, fp, enum_values, subject)
        return fp

    def _resolve(
        self, type_name: str, parent: ProtoMessage | None, own: dict[str, ProtoMessage]
    ) -> tuple[int | None, str, list[str] | None]:
        if parent is not None:
            for e in parent.enums:
                if e.name == type_name:
                    return _FDP.TYPE_ENUM, f".{_PACKAGE}.{parent.name}.{e.name}", [v for v, _ in e.values]
        head, _, tail = type_name.partition(".")
        if head in own:
            if not tail:
                return _FDP.TYPE_MESSAGE, f".{_PACKAGE}.{head}", None
            for e in own[head].enums:
                if e.name == tail:
                    return _FDP.TYPE_ENUM, f".{_PACKAGE}.{type_name}", [v for v, _ in e.values]
            return None, "", None
        if head in self.top_messages and self.message_origin.get(head) == _BUILTIN:
            msg = self.top_messages[head]
            if not tail:
                return _FDP.TYPE_MESSAGE, f".{_PACKAGE}.{head}", None
            for e in msg.enum_type:
                if e.name == tail:
                    return _FDP.TYPE_ENUM, f".{_PACKAGE}.{type_name}", [v.name for v in e.value]
            return None, "", None
        if not tail:
            for e in self.file.enum_type:
                if e.name == head:
                    return _FDP.TYPE_ENUM, f".{_PACKAGE}.{head}", [v.name for v in e.value]
        return None, "", None

    @staticmethod
    def _default(f: ProtoField, fp: _FDP, enum_values: list[str] | None, subject: str) -> str:
        value = f.default
        if fp.type == _FDP.TYPE_ENUM:
            if value not in (enum_values or []):
                raise PluginError(
                    fmt(subject, f"Has default {value!r}", f"Expected one of the enum's names {enum_values}")
                )
            return str(value)
        if fp.type == _FDP.TYPE_BOOL:
            if not isinstance(value, bool):
                raise PluginError(fmt(subject, f"Has default {value!r}", "Expected True or False"))
            return "true" if value else "false"
        if fp.type in (_FDP.TYPE_STRING, _FDP.TYPE_BYTES):
            return str(value)
        if fp.type in (_FDP.TYPE_FLOAT, _FDP.TYPE_DOUBLE):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise PluginError(fmt(subject, f"Has default {value!r}", "Expected a number"))
            return repr(float(value))
        if not isinstance(value, int) or isinstance(value, bool):
            raise PluginError(fmt(subject, f"Has default {value!r}", "Expected an int"))
        return str(value)


def _raw_file() -> descriptor_pb2.FileDescriptorProto:
    """Shadow messages that decode a caffemodel's packed blob data as raw bytes.

    A packed ``repeated float`` and a ``bytes`` field share the wire format, so numpy can view the
    data without building a Python float per element. Layers keep each blob's serialized bytes so
    that a blob encoded otherwise (unpacked, or split over chunks) can fall back to BlobProto.
    """
    f = descriptor_pb2.FileDescriptorProto(name="rnnrt_caffe_raw.proto", package=_RAW_PACKAGE, syntax="proto2")
    f.dependency.append(_FILE)
    opt, rep = _FDP.LABEL_OPTIONAL, _FDP.LABEL_REPEATED
    blob = f.message_type.add(name="RawBlob")
    blob.field.add(name="shape", number=7, label=opt, type=_FDP.TYPE_MESSAGE, type_name=f".{_PACKAGE}.BlobShape")
    blob.field.add(name="data", number=5, label=opt, type=_FDP.TYPE_BYTES)
    blob.field.add(name="double_data", number=8, label=opt, type=_FDP.TYPE_BYTES)
    for number, name in enumerate(("num", "channels", "height", "width"), start=1):
        blob.field.add(name=name, number=number, label=opt, type=_FDP.TYPE_INT32)
    layer = f.message_type.add(name="RawLayer")
    layer.field.add(name="name", number=1, label=opt, type=_FDP.TYPE_STRING)
    layer.field.add(name="type", number=2, label=opt, type=_FDP.TYPE_STRING)
    layer.field.add(name="blobs", number=7, label=rep, type=_FDP.TYPE_BYTES)  # serialized BlobProto
    v1 = f.message_type.add(name="RawV1Layer")
    v1.field.add(name="name", number=4, label=opt, type=_FDP.TYPE_STRING)
    v1.field.add(name="blobs", number=6, label=rep, type=_FDP.TYPE_BYTES)
    net = f.message_type.add(name="RawNet")
    net.field.add(name="name", number=1, label=opt, type=_FDP.TYPE_STRING)
    net.field.add(name="layer", number=100, label=rep, type=_FDP.TYPE_MESSAGE, type_name=f".{_RAW_PACKAGE}.RawLayer")
    net.field.add(name="layers", number=2, label=rep, type=_FDP.TYPE_MESSAGE, type_name=f".{_RAW_PACKAGE}.RawV1Layer")
    return f


class CaffeSchema:
    """Caffe message classes built from ``caffe.desc`` plus extensions.

    Args:
        extensions (Sequence[ProtoExtension]): What layer plugins add. Defaults to none.

    Raises:
        PluginError: An extension clashes with caffe.proto or another extension (names both
            origins), or declares a field badly.

    Example::

        schema = CaffeSchema()
        layer = schema.message("LayerParameter")(name="ip1", type="InnerProduct")
    """

    def __init__(self, extensions: Sequence[ProtoExtension] = ()) -> None:
        self.extensions = tuple(extensions)
        file_proto = descriptor_pb2.FileDescriptorProto.FromString(_base_file_bytes())
        builder = _Builder(file_proto)
        for ext in self.extensions:
            builder.apply(ext)
        self._pool = descriptor_pool.DescriptorPool()
        try:
            self._pool.AddSerializedFile(file_proto.SerializeToString())
        except Exception as err:  # the pool's own checks: anything the builder let through
            origins = ", ".join(repr(_origin(e)) for e in self.extensions) or "none"
            raise PluginError(
                fmt("Caffe schema", f"Cannot build caffe.proto with the plugin extensions: {err}",
                    f"Extensions from: {origins}")
            ) from err
        self._pool.AddSerializedFile(_raw_file().SerializeToString())
        self._classes: dict[str, type[Message]] = {}

    def message(self, name: str) -> type[Message]:
        """The message class of ``caffe.<name>``.

        Args:
            name (str): A message name without package, e.g. ``"NetParameter"``, ``"BlobProto"``
                or a plugin's ``"PermuteParameter"``.

        Returns:
            type[Message]: The generated class.
        """
        return self._class(f"{_PACKAGE}.{name}")

    def raw_message(self, name: str) -> type[Message]:
        """A shadow message that reads caffemodel blob data as bytes (``"RawNet"``, ``"RawBlob"``)."""
        return self._class(f"{_RAW_PACKAGE}.{name}")

    def _class(self, full: str) -> type[Message]:
        cls = self._classes.get(full)
        if cls is None:
            try:
                desc = self._pool.FindMessageTypeByName(full)
            except KeyError:
                raise ModelImportError(
                    fmt("Caffe schema", f"Has no message {full!r}", "Plugins declare extra messages with ProtoMessage")
                ) from None
            cls = self._classes[full] = _message_class(desc)
        return cls

    @property
    def layer_param_fields(self) -> set[str]:
        """Names of every field of ``caffe.LayerParameter``, plugin fields included."""
        return {f.name for f in self.message("LayerParameter").DESCRIPTOR.fields}


@functools.lru_cache(maxsize=1)
def default_schema() -> CaffeSchema:
    """The schema without extensions (cached)."""
    return CaffeSchema()
