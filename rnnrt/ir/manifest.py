"""The plan manifest: what ``rnnrt build`` records next to a plan, and how a plan is found again.

It is the contract between build (which writes it) and the engines (which read it to load a plan):
plain JSON, read here without onnx, TensorRT or the builder.

``rnnrt build model.yaml`` writes two files and never touches the YAML:

- ``model.plan``: the serialized engine;
- ``model.plan.json``: this manifest. What the plan needs to run (builder flavour and version, the
  runtime modules that can load it, version compatibility, precision, binding dtypes, the batch
  profile, the compute-capability targets), the files that belong to it (the rewritten graph the plan
  was built from, the runtime cache; both beside the plan), and the build record (bindings, engine
  layer lines, timings, the plan's SHA-256) that ``rnnrt inspect`` prints when the plan cannot be
  deserialized.

The manifest's name is the plan's name plus ``.json``, so ``rnnrt inspect model.plan`` reads it
without searching, and ``rnnrt.load("model.yaml")`` finds ``model.plan`` (the config's name with
``.plan``) and its manifest the same way (:func:`find_engine`). A plan written elsewhere (``build -o``)
is passed explicitly (``rnnrt.load(yaml, plan=...)``, ``--plan``). Because the YAML stays as ``rnnrt
convert`` wrote it, building again from the same config always works.

Paths inside a manifest are file *names* beside the plan; a manifest naming a file anywhere else
(``../x``, ``/etc/passwd``) is refused, so a manifest cannot make an engine write outside its folder.

Example::

    from rnnrt.ir.config import load_config
    from rnnrt.ir.manifest import find_engine

    manifest = find_engine(load_config("out/model.yaml"))
    print(manifest.plan_path, manifest.runtimes, manifest.precision)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from rnnrt.errors import ConfigError, fmt
from rnnrt.safe_write import write_text

PathLike = Union[str, os.PathLike]

MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".json"
MAX_MANIFEST_BYTES = 64 << 20


def manifest_path(plan: PathLike) -> Path:
    """Where the manifest of ``plan`` lives: ``model.plan`` -> ``model.plan.json``."""
    return Path(f"{plan}{MANIFEST_SUFFIX}")


def default_plan_path(config_path: PathLike) -> Path:
    """The plan ``rnnrt build`` writes for a config by default: ``model.yaml`` -> ``model.plan``."""
    return Path(config_path).with_suffix(".plan")


def beside(plan: PathLike, name: str, what: str) -> Path:
    """``name`` as a file in the plan's folder; refuses anything that is not a plain file name there.

    Args:
        plan (PathLike): The plan file.
        name (str): A file name, or a path that resolves into the plan's folder.
        what (str): What the file is, for messages.

    Raises:
        ConfigError: ``name`` is empty or resolves outside the plan's folder.
    """
    folder = Path(plan).absolute().parent
    text = str(name)
    candidate = Path(text)
    if not text or text in (".", "..") or candidate.name in ("", ".", ".."):
        raise ConfigError(fmt(f"{what} {text!r}", "Is not a file name"))
    path = candidate if candidate.is_absolute() else folder / candidate
    if os.path.realpath(path.parent) != os.path.realpath(folder):
        raise ConfigError(
            fmt(f"{what} {text!r}", f"Is not in the plan's folder {str(folder)!r}",
                "A build records only files beside its plan; pass another location at run time "
                "(`rnnrt.load(..., runtime_cache=PATH)`, `--runtime-cache PATH`).")
        )
    return folder / path.name


@dataclasses.dataclass
class EngineManifest:
    """What a plan needs and what was recorded when it was built (the ``<plan>.json`` file).

    Args:
        plan (str): The plan's file name (beside the manifest).
        flavour (str): The builder: ``"tensorrt"`` or ``"tensorrt_rtx"``.
        version (str): The builder's TensorRT version.
        runtimes (list[str]): Runtime modules that can deserialize the plan, most capable first.
        version_compatible (bool): Built with ``--version-compatible``.
        exclude_lean_runtime (bool): Built with ``--exclude-lean-runtime`` (the plan carries no lean runtime).
        tf32 (bool): fp32 matrix products may run in TF32 (``rnnrt build --tf32``).
        precision (str): Compute precision (``fp32``, ``fp16``, ``bf16``).
        io_dtype (str): dtype of the user inputs and outputs.
        state_dtype (str): dtype of the state bindings.
        profile (list[int] | None): ``[min, opt, max]`` batch of the optimization profile.
        targets (list[str]): TensorRT-RTX compute capabilities; empty: the builder's default.
        graph (str | None): File name of the rewritten graph the plan was built from (reduced precision),
            None when the plan was built from the config's own graph.
        runtime_cache (str | None): File name of the TensorRT-RTX runtime cache beside the plan.
        config (str | None): The config the plan was built from (path relative to the plan's folder).
        model_sha256 (str | None): SHA-256 of that config's ONNX graph at build time.
        plan_bytes (int): Size of the plan.
        plan_sha256 (str): SHA-256 of the plan.
        record (dict): The build record: bindings, layer counts, engine layer lines, timings.
        path (Path | None): Where the manifest was read from or written to (not serialized).
    """

    plan: str
    flavour: str
    version: str
    runtimes: list[str]
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    tf32: bool = False
    precision: str = "fp32"
    io_dtype: str = "float32"
    state_dtype: str = "float32"
    profile: Optional[list[int]] = None
    targets: list[str] = dataclasses.field(default_factory=list)
    graph: Optional[str] = None
    runtime_cache: Optional[str] = None
    config: Optional[str] = None
    model_sha256: Optional[str] = None
    plan_bytes: int = 0
    plan_sha256: str = ""
    record: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: Optional[Path] = dataclasses.field(default=None, compare=False)

    @property
    def plan_path(self) -> Path:
        """The plan file (beside the manifest)."""
        assert self.path is not None
        return beside(self.path, self.plan, "Manifest plan")

    @property
    def graph_path(self) -> Optional[Path]:
        """The rewritten graph the plan was built from, or None (built from the config's graph)."""
        return None if self.graph is None or self.path is None else beside(self.path, self.graph, "Manifest graph")

    @property
    def max_batch(self) -> Optional[int]:
        """The largest batch of the optimization profile, or None when the plan has no profile."""
        return None if not self.profile else int(self.profile[-1])

    @property
    def runtime_cache_path(self) -> Optional[Path]:
        """The runtime cache file beside the plan, or None."""
        if self.runtime_cache is None or self.path is None:
            return None
        return beside(self.path, self.runtime_cache, "Manifest runtime_cache")

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("path", "record")}
        data = {"manifest_version": MANIFEST_VERSION, **data}
        # The build record's keys sit at the top level too (older readers of <plan>.json read them there).
        return {**self.record, **data}

    def write(self, path: Optional[PathLike] = None) -> Path:
        """Writes the manifest (by default beside its plan) and returns its path."""
        target = Path(path) if path is not None else self.path
        assert target is not None
        write_text(target, json.dumps(self.to_json(), indent=1) + "\n", "Manifest")
        self.path = target
        return target

    def describe(self) -> str:
        """One line: ``tensorrt 10.13 fp16, batch 1:8:64, runs on tensorrt/tensorrt_dispatch/tensorrt_lean``."""
        text = f"{self.flavour} {self.version} {self.precision}" + (" (TF32 allowed)" if self.tf32 else "")
        if self.profile:
            text += ", batch " + ":".join(str(v) for v in self.profile)
        if self.version_compatible:
            text += ", version-compatible" + (" (lean runtime excluded)" if self.exclude_lean_runtime else "")
        return text + ", runs on " + "/".join(self.runtimes)


_FIELDS = {f.name for f in dataclasses.fields(EngineManifest)} - {"path", "record"}


def read_manifest(path: PathLike) -> EngineManifest:
    """Reads a manifest file.

    Raises:
        ConfigError: The file cannot be read, is not a manifest, or names files outside its folder.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ConfigError(fmt(f"Manifest {str(path)!r}", f"Is larger than {MAX_MANIFEST_BYTES >> 20} MiB"))
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ConfigError(fmt(f"Manifest {str(path)!r}", f"Cannot be read: {err}", "Run `rnnrt build` again.")) from err
    if not isinstance(data, dict) or not all(k in data for k in ("plan", "flavour", "version")):
        raise ConfigError(fmt(f"Manifest {str(path)!r}", "Is not an engine manifest (no plan/flavour/version)",
                              "Run `rnnrt build` again; builds before the manifest wrote only a build record."))
    fields = {k: v for k, v in data.items() if k in _FIELDS}
    record = {k: v for k, v in data.items() if k not in _FIELDS and k != "manifest_version"}
    if "runtimes" not in fields:
        from rnnrt.trt_compat import runtimes_for

        fields["runtimes"] = runtimes_for(str(fields["flavour"]), bool(fields.get("version_compatible")))
    try:
        manifest = EngineManifest(**fields, record=record, path=path)
    except TypeError as err:
        raise ConfigError(fmt(f"Manifest {str(path)!r}", f"Is malformed: {err}")) from err
    for what, name in (("plan", manifest.plan), ("graph", manifest.graph), ("runtime_cache", manifest.runtime_cache)):
        if name is not None:
            if not isinstance(name, str):
                raise ConfigError(fmt(f"Manifest {str(path)!r} {what}", f"Is {name!r}, not a file name"))
            beside(path, name, f"Manifest {str(path)!r} {what}")
    return manifest


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_engine(cfg: Any, plan: Optional[PathLike] = None,
                config_path: Optional[PathLike] = None) -> Optional[EngineManifest]:
    """The manifest of the plan built from a config, or None when there is none.

    Looks at ``plan`` (when given), else at the config's file name with ``.plan`` and at its model's
    name with ``.plan`` (``model.onnx`` -> ``model.plan``, what ``convert`` + ``build`` make), and reads
    ``<plan>.json``.
    A config written by an older ``rnnrt build`` (an ``engine:`` section in the YAML, which
    :func:`rnnrt.ir.config.load_config` read once into ``cfg.legacy_engine``) is honoured when no manifest
    is found.

    Args:
        cfg (ModelConfig): The loaded config.
        plan (PathLike | None): The plan, when it is not the config's default. Defaults to None.
        config_path (PathLike | None): The YAML file the config came from. Defaults to None.

    Raises:
        ConfigError: ``plan`` was given and neither it nor its manifest exists, or the manifest is bad.
    """
    if plan is not None:
        plan = Path(plan)
        mpath = manifest_path(plan)
        if not mpath.is_file():
            if not plan.is_file():
                raise ConfigError(fmt(f"Plan {str(plan)!r}", "Does not exist", "Run `rnnrt build` first."))
            raise ConfigError(fmt(f"Plan {str(plan)!r}", f"Has no manifest {str(mpath)!r}",
                                  "Rebuild it with `rnnrt build` (the manifest says what runtime it needs)."))
        return read_manifest(mpath)
    candidates = []
    if config_path is not None:
        candidates.append(default_plan_path(config_path))
    candidates.append(Path(cfg.base_dir) / Path(cfg.model).with_suffix(".plan").name)
    for candidate in candidates:
        if manifest_path(candidate).is_file():
            return read_manifest(manifest_path(candidate))
    return getattr(cfg, "legacy_engine", None)


def legacy_manifest(plan: PathLike, flavour: str, version: str, **fields: Any) -> EngineManifest:
    """The manifest of a plan an older ``rnnrt build`` recorded in the YAML's ``engine:`` section.

    Made once, by :func:`rnnrt.ir.config.load_config` (see :attr:`ModelConfig.legacy_engine`); it lives in
    memory only (its ``path`` names no file). A ``runtime_cache`` given here (the deprecated
    ``session.runtime_cache``) is checked when it is used: it must lie beside the plan.

    Args:
        plan (PathLike): The plan file, resolved against the YAML's folder.
        flavour (str): The builder recorded in the section.
        version (str): The builder's version recorded in the section.
        **fields: Further :class:`EngineManifest` fields (``precision``, ``io_dtype``, ``state_dtype``,
            ``profile``, ``runtime_cache``).
    """
    from rnnrt.trt_compat import runtimes_for

    plan = Path(plan)
    return EngineManifest(plan=plan.name, flavour=flavour, version=version, runtimes=runtimes_for(flavour),
                          path=manifest_path(plan), **fields)


def config_for_plan(cfg: Any, manifest: EngineManifest) -> Any:
    """The config with its float bindings re-typed to the plan's ``io_dtype``/``state_dtype``.

    The YAML keeps the dtypes of the fp32 graph ``rnnrt convert`` wrote; a plan built with
    ``--io-dtype float16`` takes fp16 frames. Sessions over that plan use this copy (never saved).
    """
    if manifest.io_dtype == "float32" and manifest.state_dtype == "float32":
        return cfg
    floats = ("float32", "float16", "bfloat16")
    inputs = [t.model_copy(update={"dtype": manifest.io_dtype}) if t.dtype in floats else t for t in cfg.inputs]
    outputs = [t.model_copy(update={"dtype": manifest.io_dtype}) if t.dtype in floats else t for t in cfg.outputs]
    state = [s.model_copy(update={"dtype": manifest.state_dtype}) if s.dtype in floats else s for s in cfg.state]
    copy = cfg.model_copy(update={"inputs": inputs, "outputs": outputs, "state": state})
    return copy.with_base_dir(cfg.base_dir) if hasattr(copy, "with_base_dir") else copy
