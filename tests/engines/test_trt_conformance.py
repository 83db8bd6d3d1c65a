"""Conformance: every TensorRT name rnnrt touches exists in TensorRT's real Python modules.

No TensorRT engine can execute on this machine, but TensorRT's genuine *runtime* can be installed:
the lean runtime wheels (``tensorrt-lean-cu12``, module ``tensorrt_lean``, 11.4, in the dev extra;
and 10.16 in ``$VENV/trt10-lean``, installed by ``make test`` since both versions share one module
name) and the dispatch runtime (``tensorrt-dispatch-cu12``, module ``tensorrt_dispatch``, 11.4). The builder parts are checked against ``tensorrt_rtx`` (whose builder runs here).

The names come from the source itself: the test walks the AST of ``rnnrt/trt_compat.py``,
``rnnrt/engines/trt.py`` and ``rnnrt/build/`` (builder, engine_info, inspect) and collects every attribute used on a TensorRT
object (``trt.X``, ``engine.get_tensor_name``, ``ctx.execute_async_v3``, ``config.set_flag`` ...; the
receiver's TensorRT class comes from :data:`RECEIVERS`), plus the enum members the code names as
strings. A name the code uses that the real module lacks fails the test, unless the code only probes
for it (``getattr(x, NAME, default)``/``hasattr``). The table of what was checked must equal the one in
docs/build.md (between the ``conformance`` markers); the test never writes the source tree unless asked:
``RNNRT_UPDATE_DOCS=1 pytest tests/engines/test_trt_conformance.py`` rewrites that table.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rnnrt.errors import EngineError
from tests.conftest import REPO

import tensorrt_dispatch  # noqa: E402  (dev extra: a missing module must fail, not skip)
import tensorrt_lean  # noqa: E402

FILES = ["rnnrt/trt_compat.py", "rnnrt/engines/trt.py", "rnnrt/build/builder.py", "rnnrt/build/engine_info.py",
         "rnnrt/build/inspect.py"]

# Receiver expression -> TensorRT class path (relative to the module), per file. "" is the module.
RECEIVERS: dict[str, dict[str, str]] = {
    "rnnrt/trt_compat.py": {"trt": "", "sev": "ILogger.Severity", "trt.ILogger": "ILogger",
                            "trt.ILogger.Severity": "ILogger.Severity", "engine": "ICudaEngine",
                            "config": "IRuntimeConfig", "cache": "IRuntimeCache",
                            "trt.NetworkDefinitionCreationFlag": "NetworkDefinitionCreationFlag"},
    "rnnrt/engines/trt.py": {"trt": "", "engine": "ICudaEngine", "self._engine": "ICudaEngine",
                             "ctx": "IExecutionContext", "context.ctx": "IExecutionContext",
                             "self._runtime": "Runtime", "trt.TensorIOMode": "TensorIOMode"},
    "rnnrt/build/builder.py": {"trt": "", "builder": "Builder", "config": "IBuilderConfig",
                               "network": "INetworkDefinition", "parser": "OnnxParser", "perr": "ParserError",
                               "profile": "IOptimizationProfile", "layer": "ILayer", "cache": "ITimingCache",
                               "engine": "ICudaEngine", "inspector": "EngineInspector", "runtime": "Runtime",
                               "trt.TensorIOMode": "TensorIOMode", "trt.MemoryPoolType": "MemoryPoolType",
                               "trt.LayerInformationFormat": "LayerInformationFormat",
                               "trt.IProgressMonitor": "IProgressMonitor"},
    "rnnrt/build/engine_info.py": {"network": "INetworkDefinition", "layer": "ILayer"},
    "rnnrt/build/inspect.py": {"trt": "", "engine": "ICudaEngine", "inspector": "EngineInspector",
                               "runtime": "Runtime", "trt.TensorIOMode": "TensorIOMode",
                               "trt.LayerInformationFormat": "LayerInformationFormat"},
}

# Names the code uses through strings (enum members looked up by name).
BY_STRING = [
    ("rnnrt/trt_compat.py", "BuilderFlag", "VERSION_COMPATIBLE", False),
    ("rnnrt/trt_compat.py", "BuilderFlag", "EXCLUDE_LEAN_RUNTIME", False),
    ("rnnrt/trt_compat.py", "ComputeCapability", "SM86", False),
    ("rnnrt/trt_compat.py", "ComputeCapability", "CURRENT", True),
] + [("rnnrt/build/engine_info.py", "DataType", m, m in ("FP8", "INT4")) for m in
     ("FLOAT", "HALF", "BF16", "INT8", "UINT8", "INT32", "INT64", "BOOL", "FP8", "INT4")]

# Classes only the builder uses (checked in tensorrt_rtx), and runtime parts only TensorRT-RTX has.
BUILDER = {"Builder", "IBuilderConfig", "INetworkDefinition", "OnnxParser", "ParserError", "IOptimizationProfile",
           "ILayer", "ITimingCache", "IProgressMonitor", "MemoryPoolType", "BuilderFlag",
           "NetworkDefinitionCreationFlag", "ComputeCapability"}
RTX_ONLY = {"IRuntimeConfig", "IRuntimeCache", "ICudaEngine.create_runtime_config"}
NOT_EXPORTED_BY_LEAN = {"EngineInspector"}  # lean returns one from create_engine_inspector but exports no class


def _uses() -> list[dict]:
    """(file, class path, attribute, optional) for every TensorRT attribute the code uses."""
    found: dict[tuple, dict] = {}

    def add(file: str, cls: str, attr: str, optional: bool) -> None:
        if cls == "" and attr[0].islower() and attr not in ("nptype",):
            return  # module dunders/helpers are not TensorRT API
        if cls == "" and attr.startswith("__"):
            return
        key = (cls, attr)
        entry = found.setdefault(key, {"cls": cls, "attr": attr, "files": set(), "optional": True})
        entry["files"].add(file)
        entry["optional"] = entry["optional"] and optional

    for file in FILES:
        receivers = RECEIVERS[file]
        tree = ast.parse((REPO / file).read_text())
        probed: set = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") \
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
                recv = ast.unparse(node.args[0])
                if recv in receivers:
                    add(file, receivers[recv], node.args[1].value, True)
                    probed.add((recv, node.args[1].value))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                recv = ast.unparse(node.value)
                if recv in receivers and (recv, node.attr) not in probed:
                    add(file, receivers[recv], node.attr, False)
    for file, cls, attr, optional in BY_STRING:
        add(file, cls, attr, optional)
    # trt.X used as a module attribute is the class X itself.
    return sorted(found.values(), key=lambda e: (e["cls"], e["attr"]))


def _part(entry: dict) -> str:
    top = entry["cls"].split(".")[0] or entry["attr"]
    if top in BUILDER or f"{entry['cls']}.{entry['attr']}" in RTX_ONLY or top in RTX_ONLY:
        return "builder" if top in BUILDER else "runtime (RTX only)"
    return "runtime"


def _present(module, cls: str, attr: str) -> bool:
    obj = module
    for part in [p for p in cls.split(".") if p]:
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return hasattr(obj, attr) or attr in getattr(obj, "__members__", {})


CHECK_SCRIPT = """
import json, sys
import tensorrt_lean_bindings as m
pairs = json.loads(sys.argv[1])
def present(cls, attr):
    obj = m
    for p in [p for p in cls.split('.') if p]:
        obj = getattr(obj, p, None)
        if obj is None:
            return False
    return hasattr(obj, attr) or attr in getattr(obj, '__members__', {})
print(json.dumps({"version": m.__version__, "present": [present(c, a) for c, a in pairs]}))
"""


def _trt10_lean() -> Path:
    return Path(os.environ.get("RNNRT_TRT10_LEAN", Path(sys.prefix) / "trt10-lean"))


def _check_in_trt10(pairs: list) -> tuple[str, list] | None:
    path = _trt10_lean()
    if not (path / "tensorrt_lean_bindings").is_dir():
        return None
    env = {**os.environ, "PYTHONPATH": str(path)}
    proc = subprocess.run([sys.executable, "-c", CHECK_SCRIPT, json.dumps(pairs)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return data["version"], data["present"]


def test_every_tensorrt_name_rnnrt_uses_exists_in_the_real_modules():
    trt_rtx = pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx (dev extra) holds the builder API")
    uses = _uses()
    assert len(uses) > 60, "the AST walk found too few names; RECEIVERS no longer matches the code"
    pairs = [(e["cls"], e["attr"]) for e in uses]
    trt10 = _check_in_trt10(pairs)
    if trt10 is None and os.environ.get("RNNRT_REQUIRE_TRT10_LEAN"):
        pytest.fail(f"TensorRT 10 lean bindings not found at {_trt10_lean()} (make test installs them)")
    missing = []
    rows = []
    for i, e in enumerate(uses):
        part = _part(e)
        name = ".".join(p for p in (e["cls"], e["attr"]) if p)
        top = e["cls"].split(".")[0] or e["attr"]
        in_rtx = _present(trt_rtx, e["cls"], e["attr"])
        cells = []
        if part == "runtime":
            if top in NOT_EXPORTED_BY_LEAN:
                in_lean11: bool | None = None
                in_lean10: bool | None = None
                in_disp: bool | None = None
            else:
                in_lean11 = _present(tensorrt_lean, e["cls"], e["attr"])
                in_lean10 = trt10[1][i] if trt10 is not None else None
                in_disp = _present(tensorrt_dispatch, e["cls"], e["attr"])
            for ok, what in ((in_lean11, f"tensorrt_lean {tensorrt_lean.__version__}"),
                             (in_lean10, f"tensorrt_lean {trt10[0] if trt10 else '10'}"),
                             (in_disp, f"tensorrt_dispatch {tensorrt_dispatch.__version__}")):
                if ok is False and not e["optional"]:
                    missing.append(f"{name} (used in {sorted(e['files'])}) is missing in {what}")
            cells = [in_lean11, in_lean10, in_disp, in_rtx]
        else:
            if not in_rtx and not e["optional"]:
                missing.append(f"{name} (used in {sorted(e['files'])}) is missing in tensorrt_rtx {trt_rtx.__version__}")
            cells = [None, None, None, in_rtx]
        mark = lambda ok: "n/a" if ok is None else ("yes" if ok else "**no**")  # noqa: E731
        rows.append(f"| `{name}` | {', '.join(Path(f).name for f in sorted(e['files']))} | {part}"
                    f"{' (probed)' if e['optional'] else ''} | " + " | ".join(mark(c) for c in cells) + " |")
    v10 = trt10[0] if trt10 else "10.x (not installed)"
    table = "\n".join([
        f"Generated by `tests/engines/test_trt_conformance.py`: {len(uses)} names; runtime parts checked in the "
        f"genuine lean runtime modules, builder parts in tensorrt_rtx. *probed*: the code checks for the name "
        f"with getattr/hasattr and works without it.",
        "",
        f"| TensorRT name | used in | part | tensorrt_lean {tensorrt_lean.__version__} | tensorrt_lean {v10} | "
        f"tensorrt_dispatch {tensorrt_dispatch.__version__} | tensorrt_rtx {trt_rtx.__version__} |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])
    assert not missing, "\n".join(missing)
    if trt10 is not None:  # without TensorRT 10's lean runtime this machine cannot make the documented table
        _compare_docs(table)


def _compare_docs(table: str) -> None:
    """The conformance table in docs/build.md equals ``table`` (rewritten instead with RNNRT_UPDATE_DOCS=1)."""
    doc = REPO / "docs" / "build.md"
    text = doc.read_text()
    begin, end = "<!-- conformance:begin -->", "<!-- conformance:end -->"
    assert begin in text and end in text, "docs/build.md lost its conformance markers"
    new = text[: text.index(begin) + len(begin)] + "\n" + table + "\n" + text[text.index(end):]
    if new == text:
        return
    if os.environ.get("RNNRT_UPDATE_DOCS") == "1":
        doc.write_text(new)
        return
    documented = text[text.index(begin) + len(begin):text.index(end)].strip().splitlines()
    changed = sorted(set(table.splitlines()) ^ set(documented))
    raise AssertionError("docs/build.md's TensorRT conformance table is out of date; lines that differ:\n" +
                         "\n".join(changed[:20]) + "\nRewrite it: RNNRT_UPDATE_DOCS=1 pytest tests/engines/test_trt_conformance.py")


def test_conformance_catches_a_name_the_module_lacks():
    """The check itself can fail: a made-up method on a real class is reported missing."""
    assert _present(tensorrt_lean, "ICudaEngine", "get_tensor_name")
    assert not _present(tensorrt_lean, "ICudaEngine", "get_binding_index")  # removed in TensorRT 10
    assert not _present(tensorrt_lean, "IExecutionContext", "execute_async_v2")  # removed in TensorRT 10
    assert _present(tensorrt_lean, "TensorIOMode", "INPUT")


@pytest.mark.parametrize("runtime", ["tensorrt_lean", "tensorrt_dispatch"])
def test_genuine_lean_runtime_failure_is_a_typed_engine_error(tmp_path, caplog, runtime):
    """The real lean/dispatch runtime on a machine without a usable CUDA driver: EngineError naming the plan
    and TensorRT's own message (TensorRT hands back a dead Runtime there; calling it would crash)."""
    from rnnrt import cuda
    from rnnrt.engines.trt import TrtEngine

    if cuda.available():
        pytest.skip("a CUDA driver is present: the lean runtime starts (covered on GPU machines)")
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"\x00" * 256)
    engine = TrtEngine(plan, flavour=runtime)
    with caplog.at_level(logging.CRITICAL + 1, logger="rnnrt.trt"), pytest.raises(EngineError) as info:
        engine.activate()
    msg = str(info.value)
    module = {"tensorrt_lean": tensorrt_lean, "tensorrt_dispatch": tensorrt_dispatch}[runtime]
    assert msg.startswith(f"TrtEngine: plan {str(plan)!r} | {runtime} {module.__version__} could not"), msg
    assert "CUDA" in msg and ("Error Code" in msg or "cudaError" in msg), msg
    assert not engine.is_active


def test_genuine_runtimes_through_load(tmp_path):
    """rnnrt.load on a version-compatible manifest takes the first installed runtime it lists (tensorrt is
    not installed here, so tensorrt_dispatch; or tensorrt_lean when the manifest lists only that) and fails
    with the same typed error (in a subprocess: nothing else of TensorRT imported)."""
    from rnnrt import cuda

    if cuda.available():
        pytest.skip("a CUDA driver is present")
    from tests.models import MODELS

    yaml_path = MODELS["lstm_t1"]().save(tmp_path)
    (tmp_path / "model.plan").write_bytes(b"\x00" * 256)
    code = ("import rnnrt, sys\n"
            "from rnnrt.errors import EngineError\n"
            f"try:\n    rnnrt.load({str(yaml_path)!r}, backend='tensorrt')\n"
            "except EngineError as e:\n    print('EngineError', e)\n")
    for runtimes, expected in ((None, "tensorrt_dispatch"), (["tensorrt_lean"], "tensorrt_lean")):
        manifest = {"plan": "model.plan", "flavour": "tensorrt", "version": "11.4.0.106", "version_compatible": True}
        if runtimes:
            manifest["runtimes"] = runtimes
        (tmp_path / "model.plan.json").write_text(json.dumps(manifest))
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert f"EngineError TrtEngine: plan {str(tmp_path / 'model.plan')!r} | {expected} 11.4" in proc.stdout, proc.stdout


def test_version_compatible_flags_from_the_genuine_tensorrt_11_module():
    """trt_compat picks VERSION_COMPATIBLE/EXCLUDE_LEAN_RUNTIME from a real non-RTX TensorRT module (the lean
    runtime carries the same BuilderFlag enum as the full TensorRT 11 builder); TensorRT-RTX refuses."""
    from rnnrt import trt_compat
    from rnnrt.errors import BuildError

    flags = trt_compat.version_compatible_flags(tensorrt_lean, exclude_lean_runtime=True)
    assert flags == [tensorrt_lean.BuilderFlag.VERSION_COMPATIBLE, tensorrt_lean.BuilderFlag.EXCLUDE_LEAN_RUNTIME]
    assert trt_compat.flavour_of(tensorrt_lean) == "tensorrt_lean" and not trt_compat.has_builder(tensorrt_lean)
    rtx = pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx (dev extra)")
    with pytest.raises(BuildError, match="TensorRT-RTX engines only run on the TensorRT-RTX release that built them"):
        trt_compat.version_compatible_flags(rtx)
    with pytest.raises(BuildError, match="Is a runtime without a builder"):
        trt_compat.import_trt("tensorrt_lean")
    assert trt_compat.import_trt("tensorrt_lean", purpose="run") is tensorrt_lean
    assert trt_compat.runtimes_for("tensorrt", True) == ["tensorrt", "tensorrt_dispatch", "tensorrt_lean"]
    assert trt_compat.runtimes_for("tensorrt") == ["tensorrt"] and trt_compat.runtimes_for("tensorrt_rtx") == ["tensorrt_rtx"]


def test_version_compatible_manifest_allows_the_plans_lean_runtime(tmp_path):
    """A version-compatible plan that carries its lean runtime gets engine_host_code_allowed; one built
    --exclude-lean-runtime, or not version-compatible, does not."""
    from rnnrt.ir.manifest import find_engine
    from rnnrt.ir.config import load_config
    from rnnrt.engines.trt import tensorrt_backend
    from tests.models import MODELS

    yaml_path = MODELS["lstm_t1"]().save(tmp_path)
    (tmp_path / "model.plan").write_bytes(b"\x00" * 16)
    cfg = load_config(yaml_path)
    for vc, exclude, allowed in ((True, False, True), (True, True, False), (False, False, False)):
        (tmp_path / "model.plan.json").write_text(json.dumps(
            {"plan": "model.plan", "flavour": "tensorrt", "version": "11.4.0.106", "version_compatible": vc,
             "exclude_lean_runtime": exclude}))
        assert find_engine(cfg, config_path=yaml_path).runtimes[-1] == ("tensorrt_lean" if vc else "tensorrt")
        _, factory = tensorrt_backend(cfg, config_path=yaml_path)
        engine = factory()
        assert engine.host_code_allowed is allowed and engine.flavour == find_engine(cfg, config_path=yaml_path).runtimes
