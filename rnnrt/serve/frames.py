"""The frames of an rnnrt model on the wire, as the client packs and unpacks them.

A served model's config carries its binding layout (``rnnrt_bindings``: each input's and output's batch
axis, and the continuation input). :class:`ModelLayout` reads it once and turns what a batch-1
``Session.step`` takes (a mapping of binding name to an array with batch dim 1, or a bare array for a
model with one input besides the continuation input) into request inputs ``[1, K, ...]`` (the binding's
shape without its batch axis, K frames), and replies back into what ``Session.step`` returns.
"""

from __future__ import annotations

import json
from typing import Any, Hashable, Mapping, Optional, Sequence

import numpy as np

from rnnrt.errors import BindingError, ConfigError, fmt
from rnnrt.ir.streams import single_input
from rnnrt.serve.wire import infer_input

__all__ = ["ModelLayout"]


class ModelLayout:
    """The model's bindings as the client packs them (from the model config's ``rnnrt_bindings``)."""

    def __init__(self, config: Any) -> None:
        from tritonclient.utils import triton_to_np_dtype

        params = config.parameters
        if "rnnrt_bindings" not in params:
            raise ConfigError(fmt(f"Model {config.name!r}", "Is not an rnnrt python-backend model (no rnnrt_bindings)",
                                  "Export it with `rnnrt export-triton --engine python` or serve it with `rnnrt serve`."))
        layout = json.loads(params["rnnrt_bindings"].string_value)
        self.in_axes: dict[str, int] = layout["inputs"]
        self.out_axes: dict[str, int] = layout["outputs"]
        self.cont: Optional[str] = layout.get("continuation")
        from tritonclient.grpc import model_config_pb2 as pb

        types = {t.name: pb.DataType.Name(t.data_type)[len("TYPE_"):] for t in config.input}
        self.wire = {n: ("BYTES" if types[n] == "STRING" else types[n]) for n in self.in_axes}
        self.dtypes = {n: np.dtype(triton_to_np_dtype(self.wire[n])) for n in self.in_axes}
        self.single = single_input(self.in_axes, [self.cont])

    def pack(self, stream_id: Hashable, frames: Sequence[Any]) -> dict[str, np.ndarray]:
        """A stream's frames checked and packed: per input ``[K, ...]`` (the binding's shape without its batch axis).

        Raises:
            BindingError: A bare array for a model of several inputs, frames of one chunk that feed different
                inputs or differ in shape, an unknown input, a dtype that does not cast safely, or a frame
                whose batch dim is not 1.
        """
        layout = self
        mappings = []
        for frame in frames:
            if type(frame) is not dict and not isinstance(frame, Mapping):
                if layout.single is None:
                    raise BindingError(fmt(f"Stream {stream_id!r}", f"Got a bare {type(frame).__name__}",
                                           f"This model has several inputs; pass a mapping of {sorted(layout.in_axes)}."))
                frame = {layout.single: frame}
            mappings.append(frame)
        names = list(mappings[0])
        keys = mappings[0].keys()
        if any(frame.keys() != keys for frame in mappings[1:]):
            raise BindingError(fmt(f"Stream {stream_id!r}", "Frames of one chunk feed different inputs",
                                   f"Every frame must feed {sorted(names)}."))
        packed = {}
        for name in names:
            if name not in layout.in_axes:
                raise BindingError(fmt(f"Stream {stream_id!r}", f"Frame has unknown input {name!r}",
                                       f"Inputs: {sorted(layout.in_axes)}."))
            axis, dtype = layout.in_axes[name], layout.dtypes[name]
            rows = []
            for frame in mappings:
                arr = frame[name]
                if type(arr) is not np.ndarray:
                    arr = np.asarray(arr)
                if arr.dtype != dtype:
                    if not np.can_cast(arr.dtype, dtype, "safe") and arr.dtype.kind != dtype.kind:
                        raise BindingError(fmt(f"Stream {stream_id!r} input {name!r}", f"Received dtype {arr.dtype.name}",
                                               f"Expected {dtype.name}."))
                    if not np.can_cast(arr.dtype, dtype, "safe"):
                        raise BindingError(fmt(f"Stream {stream_id!r} input {name!r}", f"Received dtype {arr.dtype.name}",
                                               f"Expected {dtype.name} (or a type that casts to it safely)."))
                    arr = arr.astype(dtype)
                if arr.ndim <= axis or arr.shape[axis] != 1:
                    raise BindingError(fmt(f"Stream {stream_id!r} input {name!r}", f"Received shape {list(arr.shape)}",
                                           f"Expected batch dim {axis} of size 1 (one stream's frame)."))
                rows.append(arr)
            try:
                # Along the batch axis (each frame has 1 there), then that axis first: [K, ...].
                data = rows[0] if len(rows) == 1 else np.concatenate(rows, axis=axis)
            except ValueError as err:
                raise BindingError(fmt(f"Stream {stream_id!r} input {name!r}", f"Frames of one chunk differ in shape: {err}")) from err
            if axis:
                data = np.moveaxis(data, axis, 0)
            packed[name] = np.ascontiguousarray(data)
        return packed

    def inputs(self, arrays: Mapping[str, np.ndarray]) -> list:
        """The request inputs ``[1, K, ...]`` of packed frames."""
        return [infer_input(name, data[None], self.wire[name]) for name, data in arrays.items()]

    def requested_outputs(self) -> list:
        import tritonclient.grpc as grpcclient

        return [grpcclient.InferRequestedOutput(n) for n in self.out_axes]

    def unpack(self, result: Any, count: int, start: int = 0,
               arrays: Optional[dict[str, np.ndarray]] = None) -> list[dict[str, np.ndarray]]:
        """Frames ``start .. start+count`` of a reply's outputs, each what a batch-1 ``Session.step`` returns."""
        if arrays is None:
            arrays = self.frames_of(result)
        names = list(arrays)
        if len(names) == 1:
            name, arr = names[0], arrays[names[0]]
            return [{name: arr[k]} for k in range(start, start + count)]
        return [dict(zip(names, rows)) for rows in zip(*(arr[start:start + count] for arr in arrays.values()))]

    def frames_of(self, result: Any) -> dict[str, np.ndarray]:
        """A reply's outputs ``[1, F, ...]`` as ``[F, *binding shape with batch dim 1]`` views (frame k: ``[k]``)."""
        frames = {}
        for name, axis in self.out_axes.items():
            arr = result.as_numpy(name)
            rest = arr.shape[2:]
            frames[name] = arr.reshape((arr.shape[1],) + rest[:axis] + (1,) + rest[axis:])
        return frames
