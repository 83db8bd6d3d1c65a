"""ONNX Runtime behind the device-engine interface, over the host simulation of ``rnnrt.cuda`` (tests/cudasim.py)."""

from __future__ import annotations

import ctypes

import numpy as np

from rnnrt.ir.config import load_config
from rnnrt.engines.base import BaseDeviceEngine, Binding


class SimOrtEngine(BaseDeviceEngine):
    """ONNX Runtime behind the device-engine interface, in the host simulation: "device" pointers are host
    addresses, so any converted model (here: folded LRCN rows the torch stand-in cannot compute) runs
    through the device executor's code paths (staging, scatter, gather, graphs, feedback)."""

    def __init__(self, yaml, sim_cuda):
        super().__init__("sim-ort")
        self._cfg, self._sim = load_config(yaml), sim_cuda
        self._shapes: dict = {}

    def activate_impl(self):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self._ort = ort.InferenceSession(str(self._cfg.model_path), opts, providers=["CPUExecutionProvider"])
        cfg = self._cfg
        self._inputs = [Binding(t.name, np.dtype(t.dtype), tuple(t.shape)) for t in cfg.inputs] + \
            [Binding(s.input, np.dtype(s.dtype), tuple(s.shape)) for s in cfg.state]
        self._outputs = [Binding(t.name, np.dtype(t.dtype), tuple(t.shape)) for t in cfg.outputs] + \
            [Binding(s.output, np.dtype(s.dtype), tuple(s.shape)) for s in cfg.state]

    def deactivate_impl(self):
        self._ort = None

    def input_bindings_impl(self):
        return list(self._inputs)

    def output_bindings_impl(self):
        return list(self._outputs)

    def create_context_impl(self):
        return {}

    def destroy_context_impl(self, context):
        context.clear()

    def output_shapes_impl(self, context, input_shapes):
        key = tuple(sorted((n, tuple(s)) for n, s in input_shapes.items()))
        if key not in self._shapes:
            feeds = {b.name: np.zeros(input_shapes[b.name], b.dtype) for b in self._inputs}
            names = [b.name for b in self._outputs]
            self._shapes[key] = {n: r.shape for n, r in zip(names, self._ort.run(names, feeds))}
        return dict(self._shapes[key])

    @staticmethod
    def _host(t):
        nbytes = int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype).itemsize
        raw = (ctypes.c_char * max(nbytes, 1)).from_address(t.ptr)
        return np.frombuffer(raw, dtype=t.dtype, count=nbytes // np.dtype(t.dtype).itemsize).reshape(t.shape)

    def enqueue_impl(self, context, feeds, outputs, stream):
        names = list(outputs)

        def run():
            results = self._ort.run(names, {n: self._host(t).copy() for n, t in feeds.items()})
            for n, r in zip(names, results):
                self._host(outputs[n])[...] = r

        self._sim.run(run, stream)
