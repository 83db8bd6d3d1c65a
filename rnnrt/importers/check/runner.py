"""One model in ONNX Runtime for the convert-time check, and the exception that marks a check as not run."""

from __future__ import annotations

import copy
from typing import Mapping, Optional

import numpy as np
import onnx


class _Runner:
    """One model in ONNX Runtime; ``expose`` makes every intermediate tensor an output too; ``external``:
    the weights the model holds as external-data placeholders (a big Caffe net's, kept in memory)."""

    def __init__(self, model: onnx.ModelProto, expose: bool = False,
                 external: Optional[Mapping[str, np.ndarray]] = None) -> None:
        import onnxruntime as ort

        if expose:
            model = copy.deepcopy(model)
            have = {o.name for o in model.graph.output}
            for node in model.graph.node:
                for name in node.output:
                    if name and name not in have:
                        model.graph.output.append(onnx.ValueInfoProto(name=name))
                        have.add(name)
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.intra_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        if external:
            names = list(external)
            self._values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(external[n])) for n in names]
            opts.add_external_initializers(names, self._values)
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(self.outputs, {k: v for k, v in feeds.items() if k in self.inputs})))


class _NotRun(Exception):
    """A check that cannot run (with the reason)."""
