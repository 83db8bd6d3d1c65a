"""The config of a ``python`` export: Triton's python backend running an rnnrt StreamPool
(:mod:`rnnrt.serve.backend`) behind the sequence batcher's ``oldest`` strategy, with the values of the inputs
shared by every stream."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from rnnrt.errors import ConfigError, fmt
from rnnrt.ir.config import ModelConfig
from rnnrt.ir.manifest import EngineManifest
from rnnrt.serve.triton.layout import DEFAULT_MAX_BATCH
from rnnrt.serve.triton.pbtxt import _tensor, model_config_pb2


PYTHON_MODEL_DIR = "rnnrt_model"
"""Folder of the rnnrt config and model files next to ``model.py`` (never ``rnnrt``: it would shadow the package)."""


def _shared_values(cfg: ModelConfig, shared: Optional[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The values of the inputs without a batch axis, checked against their bindings (dtype exact, shape)."""
    if shared is None:
        shared = {}
    if not isinstance(shared, Mapping):
        raise ConfigError(fmt("export-triton shared=", f"Is a {type(shared).__name__}, not a mapping",
                              "Pass shared={input name: value}, e.g. shared={'sr': 16000}."))
    inputs = {t.name: t for t in cfg.inputs}
    values = {}
    for key, value in shared.items():
        t = inputs.get(key)
        if t is None or t.batch_axis is not None:
            raise ConfigError(fmt(f"export-triton shared={{{key!r}: ...}}", "Is not an input without a batch axis",
                                  f"Such inputs: {sorted(n for n, i in inputs.items() if i.batch_axis is None)}."))
        try:
            raw = np.asarray(value)
            arr = raw.astype(np.dtype(t.dtype))
            exact = raw.shape == arr.shape and bool(np.all(arr == raw))
        except (TypeError, ValueError):
            exact = False
        if not exact:
            raise ConfigError(fmt(f"Input {key!r}", f"Value {value!r} is not exactly a {t.dtype} value",
                                  f"Give a {t.dtype} value of shape {list(t.shape)}."))
        if arr.ndim != len(t.shape) or any(isinstance(d, int) and d != n for d, n in zip(t.shape, arr.shape)):
            raise ConfigError(fmt(f"Input {key!r}", f"Value has shape {list(arr.shape)}", f"Expected {list(t.shape)}."))
        values[key] = arr
    return values


def _python_config(cfg: ModelConfig, name: str, idle_us: int, kind: str, max_sequences: Optional[int],
                   backend: str, queue_delay_us: int = 0, shared: Optional[Mapping[str, Any]] = None,
                   max_frames: Optional[int] = None, max_request_bytes: Optional[int] = None,
                   manifest: Optional[EngineManifest] = None) -> Any:
    from rnnrt.serve.wire import (CONTROL_INPUT, FLAGS_INPUT, FRAMES_INPUT, MAX_FRAMES, MAX_REQUEST_BYTES,
                                  STATE_TENSOR, STATUS_TENSOR, STREAMS_INPUT)

    pb = model_config_pb2()
    from rnnrt.engines.select import check_backend_name

    check_backend_name(backend)  # the served model resolves it with rnnrt.load (rnnrt.engines.select)
    shared_values = _shared_values(cfg, shared)
    for role, tensors in (("Input", cfg.inputs), ("Output", cfg.outputs)):
        for t in tensors:
            if role == "Input" and t.batch_axis is None:
                if t.name not in shared_values:
                    raise ConfigError(fmt(f"Input {t.name!r}", f"Has no batch axis (shape {list(t.shape)}): one value "
                                          "for every stream of the server",
                                          f"Give it: shared={{{t.name!r}: value}} (CLI: --shared {t.name}=VALUE), "
                                          f"or fold it in at conversion (--set {t.name}=VALUE)."))
                continue
            if t.batch_axis is None or not isinstance(t.shape[t.batch_axis], str):
                raise ConfigError(fmt(f"{role} {t.name!r}", f"Has no dynamic batch dim (shape {list(t.shape)}, "
                                      f"batch_axis {t.batch_axis}), so streams cannot get their own slots",
                                      "Convert with --batch dynamic for --engine python."))
    profile_max = manifest.max_batch if manifest is not None else None
    slots = int(max_sequences) if max_sequences is not None else (profile_max if profile_max is not None
                                                                   else DEFAULT_MAX_BATCH)
    if profile_max is not None and slots > profile_max:
        raise ConfigError(fmt("export-triton", f"max_sequences={slots} exceeds the plan's profile max {profile_max}",
                              "Rebuild with a larger --batch range or lower --max-sequences."))

    def per_request(shape: list, axis: int) -> list[int]:
        # [frames, ...shape without the batch axis]; Triton adds the request's batch dim 1 in front.
        return [-1] + [-1 if isinstance(d, str) else int(d) for i, d in enumerate(shape) if i != axis]

    msg = pb.ModelConfig(name=name, backend="python", max_batch_size=slots)
    batched = [t for t in cfg.inputs if t.name not in shared_values]
    for t in batched:
        msg.input.append(_tensor(pb, pb.ModelInput, t.name, t.dtype, per_request(t.shape, t.batch_axis), optional=True))
    msg.input.append(pb.ModelInput(name=CONTROL_INPUT, data_type=pb.TYPE_INT32, dims=[1], optional=True))
    msg.input.append(pb.ModelInput(name=STATE_TENSOR, data_type=pb.TYPE_UINT8, dims=[-1], optional=True))
    # Multi-stream requests (rnnrt.serve.backend): the streams, their frame counts and flags.
    msg.input.append(pb.ModelInput(name=STREAMS_INPUT, data_type=pb.TYPE_UINT64, dims=[-1], optional=True))
    msg.input.append(pb.ModelInput(name=FRAMES_INPUT, data_type=pb.TYPE_INT32, dims=[-1], optional=True))
    msg.input.append(pb.ModelInput(name=FLAGS_INPUT, data_type=pb.TYPE_INT32, dims=[-1], optional=True))
    for t in cfg.outputs:
        msg.output.append(_tensor(pb, pb.ModelOutput, t.name, t.dtype, per_request(t.shape, t.batch_axis)))
    msg.output.append(pb.ModelOutput(name=STATE_TENSOR, data_type=pb.TYPE_UINT8, dims=[-1]))
    msg.output.append(pb.ModelOutput(name=STATUS_TENSOR, data_type=pb.TYPE_UINT8, dims=[-1]))
    seq = msg.sequence_batching
    seq.max_sequence_idle_microseconds = int(idle_us)
    seq.oldest.max_candidate_sequences = slots
    seq.oldest.max_queue_delay_microseconds = int(queue_delay_us)
    Control = pb.ModelSequenceBatching.Control
    for cname, ckind in (("START", Control.CONTROL_SEQUENCE_START), ("END", Control.CONTROL_SEQUENCE_END),
                         ("READY", Control.CONTROL_SEQUENCE_READY)):
        control = Control(kind=ckind, int32_false_true=[0, 1])
        seq.control_input.append(pb.ModelSequenceBatching.ControlInput(name=cname, control=[control]))
    corrid = Control(kind=Control.CONTROL_SEQUENCE_CORRID, data_type=pb.TYPE_UINT64)
    seq.control_input.append(pb.ModelSequenceBatching.ControlInput(name="CORRID", control=[corrid]))
    msg.instance_group.append(pb.ModelInstanceGroup(count=1, kind=pb.ModelInstanceGroup.Kind.Value(kind)))
    layout = {"inputs": {t.name: t.batch_axis for t in batched},
              "outputs": {t.name: t.batch_axis for t in cfg.outputs},
              "continuation": cfg.continuation.input if cfg.continuation is not None else None}
    params = {"rnnrt_config": f"{PYTHON_MODEL_DIR}/model.yaml", "rnnrt_bindings": json.dumps(layout),
              "rnnrt_backend": backend, "rnnrt_max_frames": str(int(max_frames or MAX_FRAMES)),
              "rnnrt_max_request_bytes": str(int(max_request_bytes or MAX_REQUEST_BYTES))}
    if shared_values:
        params["rnnrt_shared"] = json.dumps({n: {"value": a.tolist(), "dtype": a.dtype.name}
                                             for n, a in shared_values.items()})
    for key, value in params.items():
        msg.parameters[key].string_value = value
    return msg
