"""``export_triton``: the repository entry (config.pbtxt and the version folder) written into a staging folder
beside it and moved into place once complete, so a failure leaves the repository as it was."""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from rnnrt.errors import ConfigError, fmt
from rnnrt.ir.config import ModelConfig, load_config
from rnnrt.ir.manifest import EngineManifest, default_plan_path, find_engine, manifest_path
from rnnrt.safe_write import check_target
from rnnrt.serve.triton.config import ENGINES, check_model_name, triton_config
from rnnrt.serve.triton.layout import _TritonShapes
from rnnrt.serve.triton.pbtxt import _to_text
from rnnrt.serve.triton.python_config import PYTHON_MODEL_DIR
from rnnrt.serve.triton.wrap import _build_wrapped_plan, _wrap_model

G_LOGGER = logging.getLogger("rnnrt")

_MODEL_PY = '''# Written by `rnnrt export-triton --engine python`: Triton's python backend loads this file.
# The model (rnnrt.serve.backend) runs an rnnrt StreamPool behind the sequence batcher; the rnnrt
# config and model files are in rnnrt_model/ beside this file. rnnrt must be importable by the
# python backend's interpreter: installed there, or in the folders of $RNNRT_PYTHONPATH (`rnnrt serve` sets it).
import os
import sys

sys.path[:0] = [p for p in os.environ.get("RNNRT_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

from rnnrt.serve.backend import TritonPythonModel  # noqa: E402,F401
'''


def _write_python_model(cfg: ModelConfig, manifest: Optional[EngineManifest], version_dir: Path) -> None:
    from rnnrt.ir.config import save_config

    target = version_dir / PYTHON_MODEL_DIR
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    from rnnrt.ir.weights import external_data_files

    model = cfg.model_path
    shutil.copyfile(model, target / model.name)
    for rel in external_data_files(model):  # big models: model.onnx.data beside it
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model.parent / rel, target / rel)
    new = cfg.model_copy(update={"model": model.name}).with_base_dir(target)
    save_config(new, target / "model.yaml")
    if manifest is not None and manifest.plan_path.is_file():
        # Found by the served model's rnnrt.load as any build's: model.plan and model.plan.json beside model.yaml.
        plan = default_plan_path(target / "model.yaml")
        shutil.copyfile(manifest.plan_path, plan)
        dataclasses.replace(manifest, plan=plan.name, graph=None, runtime_cache=None,
                            config="model.yaml").write(manifest_path(plan))
    (version_dir / "model.py").write_text(_MODEL_PY)


def export_triton(
    config: Union[str, os.PathLike, ModelConfig],
    repo: Union[str, os.PathLike],
    *,
    engine: str = "plan",
    name: Optional[str] = None,
    version: int = 1,
    max_batch_size: Optional[int] = None,
    idle_us: int = 60_000_000,
    instance_kind: str = "auto",
    max_sequences: Optional[int] = None,
    backend: str = "auto",
    queue_delay_us: int = 0,
    shared: Optional[Mapping[str, Any]] = None,
    dims: Optional[Mapping[str, Any]] = None,
    max_frames: Optional[int] = None,
    max_request_bytes: Optional[int] = None,
) -> Path:
    """Writes a Triton model repository entry for a model config.

    The entry is written into a temporary folder beside it and moved into place once complete: a failure
    leaves the repository as it was (a repository folder this call created is removed again).

    Args:
        config (str | os.PathLike | ModelConfig): The model YAML config (or a loaded one).
        repo (str | os.PathLike): The model repository directory; created if missing.
        engine (str): ``"plan"`` (the config's TensorRT plan, rebuilt if the layout needs wrapping),
            ``"onnx"`` (the ONNX step graph for Triton's ONNX Runtime backend) or ``"python"`` (Triton's
            python backend running an rnnrt StreamPool; see :mod:`rnnrt.serve.backend`). Defaults to ``"plan"``.
        name (str | None): Triton model name: one folder name, never a path. Defaults to the config's
            directory name.
        version (int): Model version directory. Defaults to 1.
        max_batch_size (int | None): onnx/plan: defaults to the plan's profile max, or 64 for a
            dynamic-batch model without a profile.
        idle_us (int): ``max_sequence_idle_microseconds``. Defaults to 60 s.
        instance_kind (str): ``auto`` (``KIND_GPU`` when a GPU is usable here, else ``KIND_CPU``),
            ``KIND_GPU`` or ``KIND_CPU``. Defaults to ``auto``.
        max_sequences (int | None): python: ``max_candidate_sequences``, the pool's slots. Defaults to
            the plan's profile max, or 64.
        backend (str): python: the rnnrt backend inside the server. Defaults to ``auto``.
        queue_delay_us (int): python: ``max_queue_delay_microseconds`` of the oldest strategy. Defaults to 0.
        shared (Mapping[str, Any] | None): python: values of the inputs without a batch axis (one for
            every stream, as ``StreamPool(shared=...)``). Required for each such input. Defaults to None.
        dims (Mapping[str, Any] | None): plan: range of each dynamic non-batch dim (``{"chunk": "512"}``,
            ``{"T": "1:16:256"}``) for the plan rebuilt around the wrapped graph. Defaults to None.
        max_frames (int | None): python: the most frames one request may carry; more is refused with a
            ``BindingError``. Defaults to :data:`rnnrt.serve.wire.MAX_FRAMES`.
        max_request_bytes (int | None): python: the most input bytes (frames and state) one request may
            carry. Defaults to :data:`rnnrt.serve.wire.MAX_REQUEST_BYTES`.

    Returns:
        Path: ``repo/<name>``.

    Raises:
        ConfigError: ``engine='plan'`` without a built plan, an unknown engine, a name that is not a
            plain folder name, a negative count, or a continuation dtype Triton's START control cannot drive.
        BuildError: The wrapped graph's plan could not be built.
    """
    cfg = config if isinstance(config, ModelConfig) else load_config(config)
    manifest = find_engine(cfg, config_path=None if isinstance(config, ModelConfig) else config)
    if engine not in ENGINES:
        raise ConfigError(fmt("export-triton", f"Unknown engine {engine!r}", "Use 'plan', 'onnx' or 'python'."))
    name = check_model_name(name if name is not None else cfg.base_dir.name)
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ConfigError(fmt(f"export-triton version={version!r}", "Is not an integer >= 1"))
    if engine == "plan" and (manifest is None or not manifest.plan_path.is_file()):
        raise ConfigError(
            fmt(f"Config {str(cfg.model_path.with_suffix('.yaml'))!r}", "Records no built plan" if manifest is None
                else f"Its plan {str(manifest.plan_path)!r} does not exist",
                "Run `rnnrt build` first, or pass --engine onnx.")
        )
    msg = triton_config(cfg, name, engine, max_batch_size, idle_us, instance_kind, max_sequences=max_sequences,
                        backend=backend, queue_delay_us=queue_delay_us, shared=shared, max_frames=max_frames,
                        max_request_bytes=max_request_bytes, manifest=manifest)
    if dims:
        from rnnrt.build.api import dim_range

        dims = {n: dim_range(v, f"--dim {n}") for n, v in dims.items()}  # checked before anything is written
    repo_dir = Path(repo).absolute()
    model_dir = repo_dir / name
    if model_dir.resolve().parent != repo_dir.resolve():
        raise ConfigError(fmt(f"Model name {name!r}", f"Resolves outside the repository {str(repo_dir)!r}"))
    check_target(model_dir / "config.pbtxt", "Triton config")  # never through a link or over a special file
    created = repo_dir
    while not created.parent.exists() and created.parent != created:
        created = created.parent
    created = None if created.exists() else created  # the topmost folder this call creates, removed on failure
    try:
        repo_dir.mkdir(parents=True, exist_ok=True)
        staging = repo_dir / f".{name}.{secrets.token_hex(6)}.tmp"
        staging.mkdir()
    except OSError as err:
        raise ConfigError(fmt(f"Repository {str(repo)!r}", f"Cannot be created: {err.strerror}")) from err
    try:
        _write_model(cfg, manifest, staging, str(int(version)), msg, engine, max_batch_size, dims)
        _move_into_place(staging, model_dir, str(int(version)))
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir


def _write_model(cfg: ModelConfig, manifest: Optional[EngineManifest], model_dir: Path, version: str, msg: Any,
                 engine: str, max_batch_size: Optional[int], dims: Optional[Mapping[str, Any]]) -> None:
    """Writes ``model_dir/config.pbtxt`` and ``model_dir/<version>/`` (into the staging folder)."""
    version_dir = model_dir / version
    version_dir.mkdir()
    if engine == "python":
        _write_python_model(cfg, manifest, version_dir)
    elif engine == "onnx":
        import onnx

        plan = _TritonShapes(cfg, max_batch_size, manifest)
        target = version_dir / "model.onnx"
        if plan.wrap:
            onnx.save(_wrap_model(cfg, plan), str(target))
        else:
            shutil.copyfile(cfg.model_path, target)
            from rnnrt.ir.weights import external_data_files

            for rel in external_data_files(cfg.model_path):  # big models: model.onnx.data beside it
                (version_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cfg.model_path.parent / rel, version_dir / rel)
    else:
        assert manifest is not None  # export_triton refuses engine='plan' without one
        plan = _TritonShapes(cfg, max_batch_size, manifest)
        target = version_dir / "model.plan"
        if manifest.flavour == "tensorrt_rtx":
            G_LOGGER.warning("export-triton | The plan was built by TensorRT-RTX; Triton's 'tensorrt' backend loads "
                             "plans of standard TensorRT only. Rebuild with --trt-module tensorrt for Triton.")
        if plan.wrap:
            _build_wrapped_plan(cfg, manifest, plan, target, dims)
        else:
            shutil.copyfile(manifest.plan_path, target)
    (model_dir / "config.pbtxt").write_text(_to_text(cfg, msg))


def _move_into_place(staging: Path, model_dir: Path, version: str) -> None:
    """Moves a complete staged entry to ``model_dir``; other versions already there are kept."""
    if not model_dir.exists():
        os.rename(staging, model_dir)
        return
    old = model_dir / version
    if old.exists():
        os.rename(old, staging / f".{version}.old")  # inside the staging folder: removed with it
    os.rename(staging / version, old)
    check_target(model_dir / "config.pbtxt", "Triton config")  # again: it may have changed while we wrote
    os.replace(staging / "config.pbtxt", model_dir / "config.pbtxt")
