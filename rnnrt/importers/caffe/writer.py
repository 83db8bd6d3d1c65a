"""Writes Caffe prototxts and caffemodels, for the demo and the tests to create models.

Example::

    net = parse_prototxt('layer { name: "ip" type: "InnerProduct" ... }')
    save_prototxt("deploy.prototxt", net)
    save_caffemodel("weights.caffemodel", {"ip": [W, b]})
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import Message

from rnnrt.importers.caffe.proto import CaffeSchema, default_schema
from rnnrt.errors import ModelImportError, fmt
from rnnrt.safe_write import write_bytes, write_text


def net_to_prototxt(net: Message) -> str:
    """Formats a ``caffe.NetParameter`` as prototxt text.

    Args:
        net (Message): The NetParameter (any schema's class).

    Returns:
        str: The text, which :func:`rnnrt.importers.caffe.reader.parse_prototxt` reads back.
    """
    return text_format.MessageToString(net, as_utf8=True)


def save_prototxt(path: str | os.PathLike, net: Message) -> None:
    """Writes ``net`` to ``path`` as prototxt text.

    Args:
        path (str | os.PathLike): The file to write.
        net (Message): The NetParameter.
    """
    write_text(path, net_to_prototxt(net), "Prototxt")


def save_caffemodel(
    path: str | os.PathLike,
    layers: Mapping[str, Sequence[np.ndarray]],
    *,
    name: str = "",
    schema: CaffeSchema | None = None,
) -> None:
    """Writes trained blobs as a binary caffemodel (``layer { name blobs }`` per entry).

    Blobs get a ``BlobShape`` and packed float32 ``data``, as Caffe writes them; the reader matches
    them to layers by name.

    Args:
        path (str | os.PathLike): The file to write.
        layers (Mapping[str, Sequence[np.ndarray]]): Blobs per layer name, in blob order.
        name (str): The net name stored in the file. Defaults to ``""``.
        schema (CaffeSchema | None): Message classes to use. Defaults to the default schema.

    Raises:
        ModelImportError: A blob is not a real-valued numeric array.
    """
    schema = schema or default_schema()
    net = schema.raw_message("RawNet")(name=name)
    for layer_name, blobs in layers.items():
        layer = net.layer.add(name=layer_name)
        for i, blob in enumerate(blobs):
            arr = np.asarray(blob)
            if arr.dtype.kind not in "fiub":
                raise ModelImportError(
                    fmt(f"Layer {layer_name!r}, blob {i}", f"Has dtype {arr.dtype}", "Expected a real-valued array")
                )
            out = schema.raw_message("RawBlob")()
            out.shape.dim.extend(int(d) for d in arr.shape)
            # Raw little-endian bytes encode exactly like Caffe's packed `repeated float data`.
            out.data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
            layer.blobs.append(out.SerializeToString())
    write_bytes(path, net.SerializeToString(), "Caffemodel")
