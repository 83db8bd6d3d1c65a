"""An engine that runs the step graph with ONNX Runtime (CPU by default).

onnxruntime is imported lazily, so this module imports without it; :meth:`activate` fails clearly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from rnnrt.engines.base import BaseEngine, Binding
from rnnrt.errors import BindingError, ConfigError, EngineError, ModelImportError, RnnrtError, fmt

# ORT type strings -> numpy dtypes.
_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}

_ORT_TO_NUMPY = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(bool)": np.dtype(np.bool_),
}


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise RnnrtError(
            fmt("OnnxRuntimeEngine", f"Cannot import onnxruntime: {err}", "Install it: pip install onnxruntime")
        ) from err
    return onnxruntime


def _ort_error_kind(err: BaseException) -> str:
    # The pybind exception classes (InvalidArgument, InvalidGraph, NoSuchFile, Fail ...) live in a
    # private module; their names are stable across releases, their import path is not.
    return type(err).__name__


class OnnxRuntimeEngine(BaseEngine):
    """Runs an ONNX step graph with ONNX Runtime.

    Example::

        with OnnxRuntimeEngine("model.onnx", threads=1) as engine:
            outs = engine.execute({"data": x, "cont": c, "lstm1.h0": h, "lstm1.c0": c0})
    """

    memory = "host"

    def __init__(
        self,
        model_path_or_bytes: Union[str, os.PathLike, bytes],
        threads: Optional[int] = None,
        providers: Optional[Sequence[Any]] = None,
        name: Optional[str] = None,
        optimization: Optional[str] = None,
    ) -> None:
        """
        Args:
            model_path_or_bytes (str | os.PathLike | bytes): The ONNX file (external data next to it is
                found) or its serialized bytes.
            threads (int | None): Intra-op threads. Defaults to None (ONNX Runtime's choice).
            providers (Sequence | None): Execution providers. Defaults to ``["CPUExecutionProvider"]``.
            name (str | None): Name for messages. Defaults to the class name.
            optimization (str | None): Graph optimization level: ``"disable"``, ``"basic"``, ``"extended"``
                or ``"all"``. Defaults to None (ONNX Runtime's default, all).
        """
        super().__init__(name)
        if optimization not in (None, *_OPT_LEVELS):
            raise ConfigError(fmt(f"ONNX Runtime optimization {optimization!r}", "Is not a level",
                                  f"Expected one of {list(_OPT_LEVELS)}."))
        self.optimization = optimization
        if isinstance(model_path_or_bytes, (str, os.PathLike)):
            model_path_or_bytes = str(Path(model_path_or_bytes))
        self._model = model_path_or_bytes
        self.threads = threads
        self.providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        self._sess: Any = None
        self._inputs: list[Binding] = []
        self._outputs: list[Binding] = []
        self._output_names: list[str] = []

    def _describe(self) -> str:
        return repr(self._model) if isinstance(self._model, str) else f"<{len(self._model)} bytes>"

    def activate_impl(self) -> None:
        ort = _import_onnxruntime()
        opts = ort.SessionOptions()
        if self.threads is not None:
            opts.intra_op_num_threads = int(self.threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        if self.optimization is not None:
            opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[self.optimization])
        try:
            self._sess = ort.InferenceSession(self._model, sess_options=opts, providers=self.providers)
        except Exception as err:
            kind = _ort_error_kind(err)
            raise ModelImportError(
                fmt(f"{self.name}: model {self._describe()}", f"ONNX Runtime cannot load it ({kind}): {err}")
            ) from err

        def binding(arg: Any) -> Binding:
            dtype = _ORT_TO_NUMPY.get(arg.type)
            if dtype is None:
                raise ModelImportError(
                    fmt(f"{self.name}: tensor {arg.name!r}", f"Has unsupported type {arg.type!r}",
                        f"Supported: {sorted(_ORT_TO_NUMPY)}.")
                )
            shape = tuple(d if isinstance(d, (int, str)) else -1 for d in arg.shape)
            return Binding(arg.name, dtype, shape)

        self._inputs = [binding(a) for a in self._sess.get_inputs()]
        self._outputs = [binding(a) for a in self._sess.get_outputs()]
        self._output_names = [b.name for b in self._outputs]

    def deactivate_impl(self) -> None:
        self._sess = None

    def input_bindings_impl(self) -> list[Binding]:
        return list(self._inputs)

    def output_bindings_impl(self) -> list[Binding]:
        return list(self._outputs)

    def execute_impl(self, feeds: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
        try:
            values = self._sess.run(self._output_names, feeds)
        except Exception as err:
            kind = _ort_error_kind(err)
            # ORT raises ValueError/TypeError from Python for missing or mistyped feeds.
            if kind in ("InvalidArgument", "ValueError", "TypeError"):
                raise BindingError(
                    fmt(f"{self.name}", f"ONNX Runtime rejected the feeds: {err}",
                        f"Inputs: {[(b.name, str(b.dtype), b.shape) for b in self._inputs]}.")
                ) from err
            raise EngineError(fmt(f"{self.name}", f"ONNX Runtime failed to run ({kind}): {err}")) from err
        result = dict(zip(self._output_names, values))
        for name, dst in outputs.items():
            src = result[name]
            if dst.shape != src.shape:
                raise BindingError(
                    fmt(f"Output {name!r}", f"Has shape {src.shape}, its destination has shape {dst.shape}",
                        "Destination buffers must match the output shape.")
                )
            np.copyto(dst, src, casting="no")
            result[name] = dst
        return result
