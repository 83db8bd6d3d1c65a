"""A deliberately wrong host engine for ``rnnrt verify`` tests (not a test module).

``rnnrt verify --backends onnxruntime,tests.engines.perturbed:onnxruntime:step=K:output=NAME`` runs the
config's graph on ONNX Runtime and adds ``delta`` to output ``NAME`` from the K-th step on (step K of
the stream is the K-th ``execute`` call, counting from 0), so verify must fail at step K on that output.
"""

from __future__ import annotations

from typing import Any, Mapping

from rnnrt.engines.onnxruntime import OnnxRuntimeEngine


class PerturbedOnnxRuntimeEngine(OnnxRuntimeEngine):
    def __init__(self, *args: Any, step: int, output: str, delta: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step, self.output, self.delta, self.calls = step, output, delta, 0

    def execute_impl(self, feeds: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
        result = super().execute_impl(feeds, outputs)
        if self.calls >= self.step and self.output in result:
            result[self.output] = result[self.output] + self.delta
        self.calls += 1
        return result


def onnxruntime(config: Any, step: str = "0", output: str = "", delta: str = "1e-2") -> Any:
    model = config.model_path
    return lambda: PerturbedOnnxRuntimeEngine(model, step=int(step), output=output, delta=float(delta))
