"""The config of an ``onnx`` / ``plan`` export: Triton's onnxruntime / tensorrt backend behind the sequence
batcher's ``direct`` strategy, the state kept by Triton (implicit state, zero initial state) and START mapped
onto the continuation input."""

from __future__ import annotations

from typing import Any

from rnnrt.ir.config import ModelConfig
from rnnrt.serve.triton.layout import _START_FIELDS, _TritonShapes
from rnnrt.serve.triton.pbtxt import TRITON_DTYPES, _tensor, model_config_pb2


def _backend_config(cfg: ModelConfig, plan: _TritonShapes, name: str, engine: str, idle_us: int, kind: str) -> Any:
    pb = model_config_pb2()
    cont = plan.cont_spec
    msg = pb.ModelConfig(name=name, backend="onnxruntime" if engine == "onnx" else "tensorrt",
                         max_batch_size=plan.max_batch)
    for t in cfg.inputs:
        if cont is None or t.name != cont.name:
            msg.input.append(_tensor(pb, pb.ModelInput, t.name, t.dtype, plan.dims(t.shape, t.batch_axis, plan.folds.get(t.name))))
    for t in cfg.outputs:
        msg.output.append(_tensor(pb, pb.ModelOutput, t.name, t.dtype, plan.dims(t.shape, t.batch_axis, plan.folds.get(t.name))))
    seq = msg.sequence_batching
    seq.max_sequence_idle_microseconds = int(idle_us)
    seq.direct.SetInParent()
    Control = pb.ModelSequenceBatching.Control
    if cont is not None:
        field, _ = _START_FIELDS[cont.dtype]
        control = Control(kind=Control.CONTROL_SEQUENCE_START)
        getattr(control, field).extend([1, 0])
        seq.control_input.append(pb.ModelSequenceBatching.ControlInput(name=cont.name, control=[control]))
    for s in cfg.state:
        dims = plan.dims(s.shape, s.batch_axis)
        dt = pb.DataType.Value(TRITON_DTYPES[s.dtype])
        state = pb.ModelSequenceBatching.State(input_name=s.input, output_name=s.output, data_type=dt, dims=dims)
        state.initial_state.append(pb.ModelSequenceBatching.InitialState(data_type=dt, dims=dims, zero_data=True,
                                                                        name="zeros"))
        seq.state.append(state)
    msg.instance_group.append(pb.ModelInstanceGroup(count=1, kind=pb.ModelInstanceGroup.Kind.Value(kind)))
    return msg
