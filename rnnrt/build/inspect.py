"""``rnnrt inspect`` of a plan: deserialize it and list its bindings and layers, or say what its manifest knows.

Apart from the builder: inspecting a plan needs a TensorRT runtime (or only the manifest), never onnx.

Example::

    from rnnrt.build.inspect import inspect_plan

    print(inspect_plan("out/model.plan").text())
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Union

from rnnrt import trt_compat
from rnnrt.build.engine_info import BindingInfo, trt_dtype_name
from rnnrt.errors import RnnrtError, fmt

PathLike = Union[str, os.PathLike]

__all__ = ["PlanInspection", "inspect_plan"]


@dataclasses.dataclass
class PlanInspection:
    """What :func:`inspect_plan` found out about a plan file.

    Args:
        path (Path): The plan file.
        size (int): Its size in bytes.
        flavour (str | None): TensorRT module used to deserialize it (None if none is installed).
        bindings (list[BindingInfo]): Engine bindings (empty if it could not be deserialized).
        layers (list[str]): Layer information from the engine inspector.
        error (str | None): Why the engine could not be deserialized, with TensorRT's message.
        build_record (dict | None): The manifest ``<plan>.json`` as JSON, if it matches the plan.
        manifest (EngineManifest | None): The manifest, if it matches the plan.
        manifest_error (str | None): Why the manifest could not be used (missing, unreadable, other plan).
    """

    path: Path
    size: int
    flavour: str | None = None
    bindings: list[BindingInfo] = dataclasses.field(default_factory=list)
    layers: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    build_record: dict[str, Any] | None = None
    manifest: Any = None
    manifest_error: str | None = None

    def text(self) -> str:
        """A human-readable report (what ``rnnrt inspect model.plan`` prints)."""
        out = [f"Plan {str(self.path)!r}: {self.size} bytes"]
        if self.manifest is not None:
            m = self.manifest
            out.append(f"Manifest {str(m.path)!r}: {m.describe()}")
            out.append(f"  built from {m.config!r}, io {m.io_dtype}, state {m.state_dtype}"
                       + (f", graph {m.graph!r}" if m.graph else "")
                       + (f", runtime cache {m.runtime_cache!r}" if m.runtime_cache else "")
                       + (f", targets {','.join(m.targets)}" if m.targets else ""))
            for rewrite in self.manifest.record.get("graph_rewrites") or []:
                out.append(f"  graph rewrite {rewrite.get('rewrite')}: {rewrite.get('op')} node {rewrite.get('node')!r}, "
                           f"Add(x, -0.0) before {rewrite.get('input')!r} (cut from {rewrite.get('source')!r})")
        else:
            out.append(f"Manifest: none ({self.manifest_error})")
        if self.bindings:
            out.append(f"Engine bindings ({self.flavour}):")
            out.extend(f"  {b.describe()}" for b in self.bindings)
            out.append(f"Engine layers ({len(self.layers)}):")
            out.extend(f"  {line}" for line in self.layers)
        else:
            out.append(f"Engine: not deserialized ({self.error})")
            if self.build_record is not None:
                rec = self.build_record
                out.append(
                    f"Build record ({rec.get('flavour')} {rec.get('version')}, {rec.get('precision')}, "
                    f"built in {rec.get('build_seconds')} s):"
                )
                for b in rec.get("bindings", []):
                    prof = b.get("profile")
                    info = BindingInfo(b["name"], b["mode"], b["dtype"], tuple(b["shape"]),
                                       tuple(tuple(s) for s in prof) if prof else None)  # type: ignore[arg-type]
                    out.append(f"  {info.describe()}")
                out.append(f"  network layers: {rec.get('num_network_layers')}")
                out.append("Engine layers (from the builder log):")
                out.extend(f"  {line}" for line in rec.get("engine_layers", []))
        return "\n".join(out)


def inspect_plan(path: PathLike, trt_module: str | None = None) -> PlanInspection:
    """Deserializes a plan and lists its bindings and layers; falls back to what is known without it.

    Deserializing needs a GPU that the plan's TensorRT flavour supports. When it fails (no GPU, no
    TensorRT, a plan of another version) the result carries the error and what the plan's manifest
    ``<plan>.json`` says about it.

    Args:
        path (PathLike): The plan file.
        trt_module (str | None): TensorRT module to use; None: the first installed runtime the manifest
            lists, else auto.

    Returns:
        PlanInspection: Call :meth:`PlanInspection.text` for the report; ``error`` is None on success.

    Raises:
        EngineError: The file does not exist.
    """
    from rnnrt.ir.manifest import manifest_path, read_manifest
    from rnnrt.errors import EngineError

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise EngineError(fmt(f"Plan {str(path)!r}", f"Cannot be read: {err.strerror}")) from err
    report = PlanInspection(path=path, size=len(data))
    mpath = manifest_path(path)
    if not mpath.is_file():
        report.manifest_error = f"{str(mpath)!r} does not exist"
    else:
        try:
            manifest = read_manifest(mpath)
        except RnnrtError as err:
            report.manifest_error = str(err)
        else:
            if manifest.plan_sha256 and manifest.plan_sha256 != hashlib.sha256(data).hexdigest():
                report.manifest_error = f"{str(mpath)!r} describes another plan (SHA-256 differs)"
            else:
                report.manifest = manifest
                report.build_record = manifest.to_json()
    module = trt_module
    if module is None and report.manifest is not None:
        installed = trt_compat.available_flavours(tuple(report.manifest.runtimes))
        module = installed[0] if installed else report.manifest.runtimes[0]
    try:
        trt = trt_compat.import_trt(module, purpose="run")
    except RnnrtError as err:
        report.error = str(err)
        return report
    report.flavour = trt_compat.flavour_of(trt)
    try:
        runtime = trt_compat.create_runtime(trt, f"Plan {str(path)!r}")
    except RnnrtError as err:
        report.error = str(err).split("\nNote:")[0]
        return report
    with trt_compat.capture_log() as log:
        engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        report.error = (
            f"{report.flavour} {trt.__version__} could not deserialize it: "
            f"{trt_compat.errors_in(log) or 'no error message'}"
        )
        return report
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = tuple(engine.get_tensor_shape(name))
        profile = None
        if is_input and -1 in shape and engine.num_optimization_profiles > 0:
            profile = tuple(tuple(s) for s in engine.get_tensor_profile_shape(name, 0))
        report.bindings.append(
            BindingInfo(name, "input" if is_input else "output", trt_dtype_name(engine.get_tensor_dtype(name)), shape, profile)  # type: ignore[arg-type]
        )
    inspector = engine.create_engine_inspector() if hasattr(engine, "create_engine_inspector") else None
    if inspector is not None:
        for i in range(engine.num_layers):
            report.layers.append(str(inspector.get_layer_information(i, trt.LayerInformationFormat.ONELINE)))
    return report
