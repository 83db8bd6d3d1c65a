"""Weights kept out of the ModelProto: export a graph without copying its weights, write them as external data.

Protobuf cannot serialize a message over 2 GiB, and every serialization of a big ModelProto costs a
full copy of its weights (``onnx.checker`` serializes it once more, and parses it again in C++).
:func:`model_from_graph` exports an ONNX-GraphSurgeon graph with every weight replaced by an
external-data placeholder, checks that small model, and then either embeds the weights (one copy,
for models that protobuf can still serialize: :data:`EMBED_LIMIT`) or leaves them as numpy arrays beside the model;
:func:`save_with_external_data` streams those arrays into ``<name>.onnx.data`` next to the model.
Peak memory stays at the weights themselves plus at most one copy.

Example::

    model, weights = model_from_graph(graph, subject="Net 'big'")
    save_with_external_data(model, weights, "out/model.onnx")   # out/model.onnx + out/model.onnx.data
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Union

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx.external_data_helper import _get_all_tensors

from rnnrt.errors import ConfigError, ModelImportError, fmt
from rnnrt.safe_write import staged

EMBED_LIMIT = (1 << 31) - (64 << 20)
"""Weights up to this many bytes in total (2 GiB less room for the graph) are embedded in the
ModelProto, so that ``model.SerializeToString()`` still works; more stay external."""

FILE_EMBED_LIMIT = 64 << 20
"""What ``rnnrt convert`` embeds: a model with more weights is written as ``model.onnx`` +
``model.onnx.data``, streamed from the weights (no copy in a ModelProto, no serialization)."""

MIN_EXTERNAL_BYTES = 1024
"""Tensors smaller than this are always embedded (ONNX's own external-data threshold)."""

_ALIGN = 4096  # offsets in the data file, so that ONNX Runtime can mmap each tensor
_CHUNK = 64 << 20  # bytes per write when a weight is a strided view (a transpose)
_CHECK_LOCATION = "weights.placeholder"


def _constants(graph: gs.Graph, seen: dict[int, gs.Constant]) -> None:
    for node in graph.nodes:
        for t in node.inputs:
            if isinstance(t, gs.Constant):
                seen.setdefault(id(t), t)
        for value in node.attrs.values():
            if isinstance(value, gs.Graph):
                _constants(value, seen)


def _placeholder(name: str, arr: np.ndarray) -> onnx.TensorProto:
    t = onnx.TensorProto(name=name, dims=list(arr.shape), data_type=onnx.helper.np_dtype_to_tensor_dtype(arr.dtype))
    t.data_location = onnx.TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", _CHECK_LOCATION
    return t


def _external_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    for t in _get_all_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            yield t


def model_from_graph(
    graph: gs.Graph, *, subject: str, embed_limit: int = EMBED_LIMIT
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Exports ``graph`` to ONNX and checks it, without ever serializing its weights.

    Args:
        graph (gs.Graph): The graph (constants may be strided numpy views: they are not copied).
        subject (str): Names the model in errors, e.g. ``"Net 'lstm'"``.
        embed_limit (int): Embed the weights when they total at most this many bytes. Default:
            :data:`EMBED_LIMIT` (2 GiB less 64 MiB).

    Returns:
        tuple[onnx.ModelProto, dict[str, np.ndarray]]: The model and ``{}`` when the weights are
        embedded; otherwise the model with external-data placeholders and the weights by tensor
        name, to be written by :func:`save_with_external_data`.

    Raises:
        ModelImportError: The exported graph fails ``onnx.checker``.
    """
    found: dict[int, gs.Constant] = {}
    _constants(graph, found)
    weights: dict[str, np.ndarray] = {}
    swapped: list[tuple[gs.Constant, object]] = []
    for const in found.values():
        values = const._values
        if isinstance(values, np.ndarray) and values.nbytes >= MIN_EXTERNAL_BYTES and values.dtype != object:
            weights[const.name] = values
            swapped.append((const, values))
            const._values = gs.ir.tensor.LazyValues(_placeholder(const.name, values))
    try:
        model = gs.export_onnx(graph, do_type_check=False)
    finally:
        for const, values in swapped:
            const._values = values
    model.ir_version = 8
    model.producer_name = "rnnrt"
    _check(model, subject)
    if sum(a.nbytes for a in weights.values()) > embed_limit:
        return model, weights
    for t in _external_tensors(model):
        arr = weights.get(t.name)
        if arr is None:
            continue
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT
        t.raw_data = arr.tobytes()  # C order from any strides: one copy (little-endian hosts only)
    return model, {}


def _check(model: onnx.ModelProto, subject: str) -> None:
    # The checker wants each external file to exist; an empty one will do, the weights are not read.
    with tempfile.TemporaryDirectory(prefix="rnnrt-check-") as tmp:
        Path(tmp, _CHECK_LOCATION).touch()
        path = os.path.join(tmp, "model.onnx")
        onnx.save_model(model, path)
        try:
            onnx.checker.check_model(path)
        except onnx.checker.ValidationError as err:
            raise ModelImportError(fmt(subject, f"The emitted ONNX graph is invalid: {err}")) from err


def _write_array(f, arr: np.ndarray) -> None:
    if arr.flags.c_contiguous:
        f.write(memoryview(arr).cast("B"))
    elif arr.nbytes <= _CHUNK or arr.ndim == 1:
        f.write(arr.tobytes())
    else:
        per_row = max(1, _CHUNK // max(1, arr[0].nbytes))
        for i in range(0, arr.shape[0], per_row):
            part = arr[i : i + per_row]
            if per_row == 1:
                _write_array(f, part[0])
            else:
                f.write(part.tobytes())


def save_with_external_data(
    model: onnx.ModelProto,
    weights: Mapping[str, np.ndarray],
    onnx_path: Union[str, os.PathLike],
    location: str | None = None,
) -> Path:
    """Writes ``model`` to ``onnx_path`` and its placeholder weights to ``location`` next to it.

    Args:
        model (onnx.ModelProto): A model from :func:`model_from_graph` (placeholders for ``weights``).
        weights (Mapping[str, np.ndarray]): The weights by tensor name.
        onnx_path (str | os.PathLike): The ``.onnx`` file to write.
        location (str | None): The data file's name, relative to the model's folder. Default:
            ``<model file name>.data``.

    Returns:
        Path: The data file.

    Raises:
        ConfigError: A file cannot be written; ModelImportError: a placeholder has no weights.
    """
    onnx_path = Path(onnx_path)
    location = location or f"{onnx_path.name}.data"
    data_path = onnx_path.parent / location
    try:
        with staged([onnx_path, data_path], "Model file") as (onnx_tmp, data_tmp):
            _write_weights(model, weights, onnx_tmp, data_tmp, location)
    except OSError as err:
        raise ConfigError(fmt(f"Model file {str(onnx_path)!r}", f"Cannot be written: {err.strerror or err}")) from err
    return data_path


def _write_weights(model: onnx.ModelProto, weights: Mapping[str, np.ndarray], onnx_path: Path, data_path: Path,
                   location: str) -> None:
    """Writes the weights file and then the model (the temporary paths of save_with_external_data)."""
    with open(data_path, "wb") as f:
        for t in _external_tensors(model):
            arr = weights.get(t.name)
            if arr is None:
                raise ModelImportError(fmt(f"Tensor {t.name!r}", "Is an external-data placeholder without weights"))
            offset = -f.tell() % _ALIGN + f.tell()
            f.seek(offset)
            _write_array(f, arr)
            del t.external_data[:]
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(arr.nbytes))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
    onnx.save_model(model, str(onnx_path))


def external_data_files(onnx_path: Union[str, os.PathLike]) -> list[Path]:
    """The external-data files a saved ONNX model refers to (relative to its folder), weights not read.

    Args:
        onnx_path (str | os.PathLike): The ``.onnx`` file.

    Returns:
        list[Path]: Each data file once, relative to the model's folder, in the order the model names
        them; ``[]`` for a self-contained model.

    Raises:
        ConfigError: A location is absolute or leaves the model's folder (ONNX forbids both).
    """
    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path), load_external_data=False)
    folder = onnx_path.parent.resolve()
    seen: dict[Path, None] = {}
    for t in _external_tensors(model):
        for entry in t.external_data:
            if entry.key != "location":
                continue
            rel = Path(entry.value)
            if rel.is_absolute() or ".." in rel.parts or not (folder / rel).resolve().is_relative_to(folder):
                raise ConfigError(
                    fmt(f"Model {str(onnx_path)!r} tensor {t.name!r}", f"Its external data location {entry.value!r} leaves the model's folder",
                        "External data lives beside the model (a relative path inside its folder).")
                )
            seen.setdefault(rel, None)
    return list(seen)


__all__ = ["EMBED_LIMIT", "external_data_files", "FILE_EMBED_LIMIT", "MIN_EXTERNAL_BYTES", "model_from_graph", "save_with_external_data"]
