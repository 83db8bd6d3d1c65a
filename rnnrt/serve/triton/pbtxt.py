"""Triton's ``ModelConfig`` protobuf messages: the module that defines them (shipped by ``tritonclient``), one
tensor entry, and the ``config.pbtxt`` text."""

from __future__ import annotations

from typing import Any

from rnnrt.errors import ConfigError, fmt
from rnnrt.ir.config import ModelConfig


TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float64": "TYPE_FP64",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "bool": "TYPE_BOOL",
}


def model_config_pb2() -> Any:
    """Triton's ``ModelConfig`` protobuf module (shipped by ``tritonclient``)."""
    try:
        from tritonclient.grpc import model_config_pb2 as pb
    except ImportError as err:
        raise ConfigError(fmt("export-triton", "Needs Triton's model config messages, which tritonclient ships",
                              "pip install 'rnnrt[serve]' (tritonclient[grpc]).")) from err
    return pb


def _to_text(cfg: ModelConfig, msg: Any) -> str:
    from google.protobuf import text_format

    header = f"# Triton model config written by `rnnrt export-triton` from {cfg.model_path.name}.\n"
    return header + text_format.MessageToString(msg)


def _tensor(pb: Any, cls: Any, name: str, dtype: str, dims: list[int], optional: bool = False) -> Any:
    t = cls(name=name, data_type=pb.DataType.Value(TRITON_DTYPES[dtype]), dims=dims)
    if optional:
        t.optional = True
    return t
