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


# Ops whose cost is weights x positions: a step costs the sum over them of multiply-accumulates (MACs).
_WEIGHTED_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "LSTM", "GRU", "RNN"}
# MACs one intra-op thread should have to itself before a second one pays: ~1-3 ms of one core's work.
# Below it ONNX Runtime's per-op fork/join (and spinning threads on busy cores) costs more than it saves.
THREAD_GRAIN_MACS = 32_000_000


def step_macs(model: Union[str, os.PathLike, bytes], rows: int = 1) -> int:
    """Estimated multiply-accumulates of one run of an ONNX graph (its weighted ops: MatMul, Gemm, Conv,
    ConvTranspose, LSTM, GRU, RNN).

    Per op: the size of its constant weight inputs times the positions it is applied at (the output's
    known dims but the last for MatMul/Gemm, the output's spatial dims for a convolution, the sequence
    length for a recurrent op; dims shape inference leaves unknown count 1). Symbolic dims (a dynamic
    batch) are not known here: ``rows`` multiplies the total (pass the Session's batch size for a dynamic
    batch, 1 when the graph's batch dim is fixed). Weights are read without their data (external data
    is not loaded). An estimate, used to choose threads; 0 when the graph cannot be read.
    """
    try:
        import onnx
        from onnx import shape_inference

        from rnnrt.ir.bindings import onnx_tensor_type

        if isinstance(model, bytes):
            proto = onnx.load_from_string(model)
        else:
            proto = onnx.load(str(model), load_external_data=False)
        try:
            proto = shape_inference.infer_shapes(proto)
        except Exception:  # noqa: BLE001 - shapes only sharpen the estimate
            pass
    except Exception:  # noqa: BLE001 - an unreadable graph: ONNX Runtime will say why at load
        return 0
    g = proto.graph
    weights = {t.name: tuple(t.dims) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            weights[node.output[0]] = tuple(node.attribute[0].t.dims)
    shapes = {}
    for vi in (*g.input, *g.value_info, *g.output):
        shapes[vi.name] = [d if isinstance(d, int) else None for d in (onnx_tensor_type(vi, unnamed="")[1] or [])]
    total = 0
    for node in g.node:
        if node.op_type not in _WEIGHTED_OPS:
            continue
        size = sum(int(np.prod(weights[i], dtype=np.int64)) for i in node.input[1:3] if i in weights)
        out = shapes.get(node.output[0]) or []
        if node.op_type in ("MatMul", "Gemm"):
            where = out[:-1]
        elif node.op_type in ("Conv", "ConvTranspose"):
            where = out[2:]
        else:  # LSTM / GRU / RNN: [seq, batch, input] (layout 0)
            where = (shapes.get(node.input[0]) or [None])[:1]
        positions = 1
        for d in where:
            positions *= d if d else 1
        total += size * positions
    return total * max(int(rows), 1)


def choose_threads(macs: int, cores: Optional[int] = None) -> int:
    """The default intra-op thread count for a step of ``macs`` multiply-accumulates: one thread per
    :data:`THREAD_GRAIN_MACS` (at least 1), at most the CPU cores this process may run on.

    Small recurrent steps (Silero VAD: ~0.3 M MACs per stream, 20 M at 64 streams; a 2-layer LSTM 512 at
    batch 1: ~4 M) get one thread; large steps get more.
    """
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))  # a process pinned to some cores gets no more threads
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    return int(max(1, min(cores, macs // THREAD_GRAIN_MACS)))


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
        rows: int = 1,
    ) -> None:
        """
        Args:
            model_path_or_bytes (str | os.PathLike | bytes): The ONNX file (external data next to it is
                found) or its serialized bytes.
            threads (int | None): Intra-op threads. Defaults to None: chosen from the step's cost,
                :func:`choose_threads` of :func:`step_macs` (one thread for small steps such as Silero
                VAD's), recorded in :attr:`threads_used` once active.
            providers (Sequence | None): Execution providers. Defaults to ``["CPUExecutionProvider"]``.
            name (str | None): Name for messages. Defaults to the class name.
            optimization (str | None): Graph optimization level: ``"disable"``, ``"basic"``, ``"extended"``
                or ``"all"``. Defaults to None (ONNX Runtime's default, all).
            rows (int): Batch rows one step carries beyond the graph's fixed dims (the Session's batch
                size when the batch dim is dynamic), for the default thread count only. Defaults to 1.
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
        self.rows = rows
        self.threads_used: Optional[int] = None
        """The intra-op threads of the active session (``threads``, or the one chosen)."""
        self.providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        self._sess: Any = None
        self._run: Any = None
        self._inputs: list[Binding] = []
        self._outputs: list[Binding] = []
        self._output_names: list[str] = []
        self._input_names: frozenset[str] = frozenset()
        self._run_bound: Any = None
        self._bound: dict[int, _BoundRun] = {}
        self._seen: dict[int, Mapping[str, Any]] = {}  # destination mappings used once (kept alive: keyed by id)

    def _describe(self) -> str:
        return repr(self._model) if isinstance(self._model, str) else f"<{len(self._model)} bytes>"

    def activate_impl(self) -> None:
        ort = _import_onnxruntime()
        opts = ort.SessionOptions()
        threads = self.threads
        if threads is None:
            threads = choose_threads(step_macs(self._model, self.rows))
        opts.intra_op_num_threads = int(threads)
        self.threads_used = int(threads)
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

        # The step's hot call: the compiled session's run, without the Python wrapper's per-call checks
        # (missing feeds, OrtValue ownership, graph capture: ~1.5 us a step): the Session checks every
        # feed and feeds only numpy arrays, and the CPU provider has no fallback. An onnxruntime without
        # that attribute goes through the wrapper.
        compiled = getattr(self._sess, "_sess", None)
        cpu = self.providers == ["CPUExecutionProvider"]
        if compiled is not None and callable(getattr(compiled, "run", None)) and cpu:
            self._run = lambda names, feeds: compiled.run(names, feeds, None)
        else:
            self._run = self._sess.run
        self._inputs = [binding(a) for a in self._sess.get_inputs()]
        self._outputs = [binding(a) for a in self._sess.get_outputs()]
        self._output_names = [b.name for b in self._outputs]
        self._input_names = frozenset(b.name for b in self._inputs)
        self._run_bound = None
        if cpu and compiled is not None and callable(getattr(compiled, "run_with_iobinding", None)):
            self._run_bound = lambda io: compiled.run_with_iobinding(io._iobinding, None)
        self._bound = {}
        self._seen = {}

    def deactivate_impl(self) -> None:
        self._sess = self._run = self._run_bound = None
        self._bound = {}
        self._seen = {}

    def input_bindings_impl(self) -> list[Binding]:
        return list(self._inputs)

    def output_bindings_impl(self) -> list[Binding]:
        return list(self._outputs)

    def execute_impl(self, feeds: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
        if outputs and self._run_bound is not None:
            result = self._execute_bound(feeds, outputs)
            if result is not None:
                return result
        try:
            # As many feeds as inputs (what a Session feeds): the direct call; else the wrapper names what is missing.
            run = self._run if len(feeds) == len(self._inputs) else self._sess.run
            values = run(self._output_names, feeds)
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

    def _execute_bound(self, feeds: Mapping[str, Any], outputs: Mapping[str, Any]) -> Optional[dict[str, Any]]:
        """The run with destinations through an ONNX Runtime IO binding, from the second call with the same
        destinations mapping on: the engine writes those outputs straight into them (no copy), and feeds
        that are the same arrays as last time stay bound (a Session's state and continuation buffers).

        None when this run cannot take it (a feed missing or unknown, a destination that is not a
        C-contiguous writable array, a feed overlapping a destination, or a failed run): the plain run then
        runs it and names what went wrong."""
        if feeds.keys() != self._input_names:
            return None
        key = id(outputs)
        entry = self._bound.get(key)
        if entry is None or entry.outputs is not outputs or not entry.same_destinations():
            if self._seen.get(key) is not outputs:  # bound from its second use: a one-off mapping runs plain
                if len(self._seen) >= _BOUND_RUNS:
                    self._seen.clear()
                self._seen[key] = outputs
                return None
            if len(self._bound) >= _BOUND_RUNS:
                self._bound.clear()
            entry = self._bound[key] = _BoundRun(self._sess, outputs, self._output_names, self._inputs)
        if entry.io is None:
            return None
        try:
            if not entry.bind(feeds):
                return None
            self._run_bound(entry.io)
        except Exception:
            entry.inputs.clear()  # bind every input again next time
            return None
        return entry.results()


# IO bindings one engine keeps (one per destinations mapping: a Session has one per state arena).
_BOUND_RUNS = 8


class _BoundRun:
    """One ONNX Runtime IO binding of an engine: some outputs bound to fixed destination arrays, the
    others allocated by ONNX Runtime at each run, and the inputs bound last time (by identity).

    ONNX Runtime binds a C-contiguous numpy array of the input's dtype by reference (it reads the array
    when it runs: ``tests/engines/test_onnxruntime.py`` pins that) and any other array by copy, so only
    the former stay bound from call to call; every other feed is bound again at each call. An input bound
    by reference must not overlap a destination (the engine would read what it is writing)."""

    def __init__(self, sess: Any, outputs: Mapping[str, Any], output_names: Sequence[str],
                 inputs: Sequence[Binding]) -> None:
        self.outputs = outputs  # kept alive: its id is the engine's key
        self.destinations = dict(outputs)
        self.input_dtypes = {b.name: b.dtype for b in inputs}
        self.names = list(output_names)
        self.fresh: list[tuple[int, str]] = []  # (position in io.get_outputs(), name): ORT-allocated outputs
        self.spans: list[tuple[int, int]] = []  # the destinations' byte ranges
        self.inputs: dict[str, Any] = {}
        self.io: Any = None
        for dst in self.destinations.values():
            if type(dst) is not np.ndarray or not dst.flags.c_contiguous or not dst.flags.writeable:
                return  # the plain run copies into it
        if not set(self.destinations) <= set(self.names):
            return
        io = sess.io_binding()
        for i, name in enumerate(self.names):
            dst = self.destinations.get(name)
            if dst is None:
                self.fresh.append((i, name))
                io.bind_output(name, "cpu")
            else:
                io.bind_output(name, "cpu", 0, dst.dtype, list(dst.shape), dst.ctypes.data)
                self.spans.append((dst.ctypes.data, dst.ctypes.data + dst.nbytes))
        self.io = io

    def same_destinations(self) -> bool:
        """Whether the destinations mapping still holds the arrays bound (by identity, same keys)."""
        dests = self.destinations
        if len(self.outputs) != len(dests):
            return False
        for name, dst in self.outputs.items():
            if dests.get(name) is not dst:
                return False
        return True

    def bind(self, feeds: Mapping[str, Any]) -> bool:
        """Binds the feeds not bound last time; False when one overlaps a destination."""
        bound = self.inputs
        for name, value in feeds.items():
            if bound.get(name) is value:
                continue
            bound.pop(name, None)
            by_reference = type(value) is np.ndarray and value.flags.c_contiguous and \
                value.dtype == self.input_dtypes[name]
            if by_reference:
                lo = value.ctypes.data
                hi = lo + value.nbytes
                for start, end in self.spans:
                    if lo < end and start < hi:
                        return False
            self.io.bind_cpu_input(name, value)
            if by_reference:
                bound[name] = value
        return True

    def results(self) -> dict[str, Any]:
        result = dict(self.destinations)
        values = self.io.get_outputs()
        for i, name in self.fresh:
            # A copy: numpy() is a view of memory ONNX Runtime reuses at the next run.
            result[name] = values[i].numpy().copy()
        return result
