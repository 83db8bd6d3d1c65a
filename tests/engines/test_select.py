"""The engine registry (rnnrt.engines.select): a third-party engine installed under the ``rnnrt.engines``
entry-point group is what ``rnnrt.load``, ``verify`` and the served model run; loading a plan imports neither
onnx nor the builder."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import rnnrt
from rnnrt.engines.select import BUILTIN_BACKENDS, ENTRY_POINT_GROUP, backend_names, check_backend_name, engine_for
from rnnrt.errors import ConfigError
from rnnrt.ir.config import load_config
from rnnrt.runtime.verify import verify
from tests.conftest import REPO
from tests.engines.perturbed import PerturbedOnnxRuntimeEngine
from tests.models import MODELS

STEP = 2  # the installed engine adds OFFSET to output lstm1 from this step on
OFFSET = 0.5


def offset_engine(config, **options):
    """The installed third-party engine: ONNX Runtime, off by OFFSET from step STEP on (so its use shows).

    Takes the options ``rnnrt.load`` passes on (``threads`` from a served model); any other is refused."""
    unknown = set(options) - {"threads", "providers"}
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}")
    model = config.model_path
    return lambda: PerturbedOnnxRuntimeEngine(model, step=STEP, output="lstm1", delta=OFFSET)


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """A distribution on sys.path whose entry_points.txt registers ``offset`` under ``rnnrt.engines``."""
    site = tmp_path / "site"
    info = site / "rnnrt_offset_engine-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rnnrt-offset-engine\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\noffset = tests.engines.test_select:offset_engine\n")
    monkeypatch.syspath_prepend(str(site))
    return "offset"


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (1, 1, 5)).astype(np.float32) for _ in range(n)]


def test_backend_names_lists_builtins_then_installed_engines(installed):
    assert backend_names()[:3] == list(BUILTIN_BACKENDS) == ["auto", "onnxruntime", "tensorrt"]
    assert "offset" in backend_names()
    assert check_backend_name("offset") == "offset"
    assert check_backend_name("pkg.module:make") == "pkg.module:make"  # imported only when used
    with pytest.raises(ConfigError, match=r"(?s)Backend 'cuda' \| Is not known.*'offset'"):
        check_backend_name("cuda")


def test_load_runs_the_installed_engine(installed, tmp_path):
    path = MODELS["lstm_t1"]().save(tmp_path)
    frames = _frames(4)
    with rnnrt.load(path, backend="onnxruntime") as ref, rnnrt.load(path, backend=installed) as got:
        assert isinstance(got.engine, PerturbedOnnxRuntimeEngine)
        diffs = [float(np.abs(got.step(f)["lstm1"] - ref.step(f)["lstm1"]).max()) for f in frames]
    assert diffs[:STEP] == [0.0] * STEP and all(d == pytest.approx(OFFSET) for d in diffs[STEP:])


def test_config_session_backend_may_name_the_installed_engine(installed, tmp_path):
    from rnnrt.ir.config import save_config

    path = MODELS["lstm_t1"]().save(tmp_path)
    save_config(load_config(path).with_session(backend=installed), path)
    with rnnrt.load(path) as s:  # backend="auto" takes the config's session.backend
        assert isinstance(s.engine, PerturbedOnnxRuntimeEngine)
    save_config(load_config(path).with_session(backend="nope"), path)
    with pytest.raises(ConfigError, match=r"Backend 'nope' \| Is not known"):
        rnnrt.load(path)


def test_verify_runs_the_installed_engine(installed, tmp_path):
    path = MODELS["lstm_t1"]().save(tmp_path)
    report = verify(path, f"onnxruntime,{installed}", steps=5, state=False)
    assert [b.kind for b in report.backends] == ["onnxruntime", installed]
    [c] = report.comparisons
    assert (c.candidate, c.tensor, c.first_failure) == (installed, "lstm1", STEP)


def test_the_served_model_runs_the_installed_engine(installed, dynamic, tmp_path, monkeypatch):
    from rnnrt.serve.triton import export_triton
    from tests.serve.test_backend import install_fake_triton_utils, python_model

    install_fake_triton_utils(monkeypatch)
    model_dir = export_triton(dynamic("a_lstm_stream_t1n1"), tmp_path / "repo", engine="python", name="m",
                              max_sequences=4, backend=installed)
    m = python_model(model_dir)
    try:
        assert isinstance(m.session.engine, PerturbedOnnxRuntimeEngine)
    finally:
        m.finalize()
    with pytest.raises(ConfigError, match=r"Backend 'nope' \| Is not known"):
        export_triton(dynamic("a_lstm_stream_t1n1"), tmp_path / "repo2", engine="python", name="m", backend="nope")


def test_old_entry_point_group_still_works_with_a_warning(tmp_path, monkeypatch):
    import importlib.metadata as md

    ep = md.EntryPoint(name="old", value="tests.engines.test_select:offset_engine", group="rnnrt.backends")
    monkeypatch.setattr(md, "entry_points", lambda group=None: [ep] if group == "rnnrt.backends" else [])
    path = MODELS["lstm_t1"]().save(tmp_path)
    with pytest.warns(FutureWarning, match="'rnnrt.backends', which is deprecated; register it under 'rnnrt.engines'"):
        choice = engine_for(load_config(path), "old")
    assert choice.backend == "old" and choice.config.model_path == path.parent / "model.onnx"


def test_engine_for_refuses_unknown_options_and_ignores_the_other_builtins(tmp_path):
    cfg = load_config(MODELS["lstm_t1"]().save(tmp_path))
    with pytest.raises(ConfigError, match=r"Backend 'onnxruntime' \| Has no option 'flavour'"):
        engine_for(cfg, "onnxruntime", flavour="x")
    choice = engine_for(cfg, "onnxruntime", runtime_cache="x.cache", threads=1)  # a TensorRT option: ignored
    assert choice.backend == "onnxruntime" and choice.precision == "fp32" and choice.config is cfg
    with pytest.raises(ConfigError, match=r"threads=0 is not a positive integer"):
        engine_for(cfg, "onnxruntime", threads=0)


def _imported(code: str) -> dict:
    """Runs ``code`` in a fresh interpreter and returns which heavy modules it imported."""
    probe = textwrap.dedent(code) + textwrap.dedent("""
        import json, sys
        print(json.dumps({m: m in sys.modules for m in ("onnx", "onnxruntime", "rnnrt.build.builder",
                                                         "rnnrt.build.precision", "tensorrt_rtx")}))
    """)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_rnnrt_runtime_imports_no_onnx_nor_builder():
    seen = _imported("import rnnrt, rnnrt.runtime, rnnrt.runtime.session, rnnrt.runtime.pool")
    assert not any(seen.values()), seen


def test_load_of_a_plan_imports_no_onnx_nor_builder(tmp_path):
    from rnnrt.ir.manifest import EngineManifest, manifest_path

    path = MODELS["lstm_t1"]().save(tmp_path)
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not a real plan")  # TensorRT refuses it: the load gets as far as deserializing
    EngineManifest(plan=plan.name, flavour="tensorrt_rtx", version="1.0", runtimes=["tensorrt_rtx"],
                   path=manifest_path(plan)).write()
    seen = _imported(f"""
        import rnnrt
        try:
            rnnrt.load({str(path)!r}, backend="tensorrt")
        except rnnrt.RnnrtError as err:  # no GPU here, or a plan TensorRT refuses
            print(type(err).__name__, str(err).splitlines()[0])
    """)
    assert not seen["onnx"] and not seen["onnxruntime"], seen
    assert not seen["rnnrt.build.builder"] and not seen["rnnrt.build.precision"], seen
