"""`rnnrt verify`: backends side by side over one stateful stream.

CPU: ONNX Runtime against itself (graph optimisation levels), against a deliberately perturbed engine
(must fail at the right step and output, exit non-zero), against the recordings of real BVLC Caffe
(every golden case's io.npz), the fp16 graph a build made against the fp32 graph, the JSON schema, the
plot. GPU (``@pytest.mark.gpu``): ONNX Runtime against the torch stand-in GPU engine
(tests/engines/standin.py) over several golden cases and stream counts, and a perturbed stand-in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnrt.errors import BindingError, ConfigError
from rnnrt.runtime.verify import SCHEMA, TOLERANCES, compare, parse_backends, parse_resets, verify
from tests.conftest import GOLDEN, REPO, converted_golden, golden_cases


def cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rnnrt.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout + proc.stderr)
    return proc


@pytest.fixture(scope="module")
def models(tmp_path_factory, golden):
    cache: dict = {}

    def get(name: str, batch: str | None = None) -> Path:
        if (name, batch) not in cache:
            cache[(name, batch)] = converted_golden(golden(name), tmp_path_factory, batch)
        return cache[(name, batch)]

    return get


# ---------------------------------------------------------------------------------------------------
def test_compare_semantics():
    ref = np.array([1.0, -2.0, 0.0, np.nan], dtype=np.float32)
    a, r, beyond = compare(ref, ref.copy(), 1e-5, 1e-4)
    assert (a, r, beyond) == (0.0, 0.0, False)  # NaN where the reference has NaN agrees
    a, r, beyond = compare(ref, np.array([1.0, -2.0, 1e-6, np.nan]), 1e-5, 1e-4)
    assert a == pytest.approx(1e-6) and not beyond
    a, r, beyond = compare(ref, np.array([1.001, -2.0, 0.0, np.nan]), 1e-5, 1e-4)
    assert a == pytest.approx(1e-3, rel=1e-3) and r == pytest.approx(1e-3, rel=1e-3) and beyond
    a, _, beyond = compare(ref, np.array([1.0, -2.0, np.nan, np.nan]), 1e-5, 1e-4)
    assert a == float("inf") and beyond


def test_parse_backends_and_resets():
    specs = parse_backends("onnxruntime,onnxruntime:opt=disable,tests.engines.perturbed:onnxruntime:step=3:label=bad")
    assert [(s.base, s.options, s.label) for s in specs] == [
        ("onnxruntime", {}, "onnxruntime"),
        ("onnxruntime", {"opt": "disable"}, "onnxruntime:opt=disable"),
        ("tests.engines.perturbed:onnxruntime", {"step": "3", "label": "bad"}, "bad"),
    ]
    with pytest.raises(ConfigError, match="Names 'onnxruntime' twice"):
        parse_backends("onnxruntime,onnxruntime")
    with pytest.raises(ConfigError, match="empty item"):
        parse_backends("onnxruntime,")
    assert parse_resets(["10,20", "15:0,2"]) == [(10, None), (20, None), (15, [0, 2])]
    with pytest.raises(ConfigError, match="--reset-at 'x'"):
        parse_resets(["x"])


def test_ort_vs_ort_optimisation_levels_pass(models):
    yaml = models("c_lstm_stacked_ip_softmax", "dynamic")
    report = verify(yaml, "onnxruntime,onnxruntime:opt=disable,onnxruntime:opt=basic", steps=30, streams=4,
                    resets=[(10, None), (20, [1, 3])])
    assert report.passed, report.table()
    tensors = {(c.candidate, c.tensor) for c in report.comparisons}
    assert ("onnxruntime:opt=disable", "prob") in tensors
    assert any(t.startswith("state:") for _, t in tensors)  # the carried state is compared too
    assert all(len(c.max_abs) == 30 for c in report.comparisons)
    assert report.feed.batch == 4 and report.precision == "fp32"
    assert (report.atol, report.rtol) == TOLERANCES["fp32"]


def test_perturbed_engine_fails_at_the_right_step_and_output(models, tmp_path):
    yaml = models("b_lstm_batch_resets", "dynamic")
    out = tmp_path / "report.json"
    proc = cli("verify", yaml, "--backends", "onnxruntime,tests.engines.perturbed:onnxruntime:step=7:output=lstm1",
               "--steps", 12, "--streams", 3, "--reset-at", "4", "--json", out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout and "first: tests.engines.perturbed:onnxruntime:step=7:output=lstm1 lstm1 at step 7" \
        in proc.stdout, proc.stdout
    data = json.loads(out.read_text())
    assert data["passed"] is False
    bad = [c for c in data["comparisons"] if not c["passed"]]
    assert [(c["tensor"], c["first_failure"]) for c in bad] == [("lstm1", 7)]
    assert bad[0]["per_step"]["max_abs"][6] == 0.0 and bad[0]["per_step"]["max_abs"][7] == pytest.approx(1e-2, rel=1e-3)
    # The same stream with a tolerance above the perturbation passes: exit status by tolerance.
    proc = cli("verify", yaml, "--backends", "onnxruntime,tests.engines.perturbed:onnxruntime:step=7:output=lstm1",
               "--steps", 12, "--streams", 3, "--atol", "0.02")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED" in proc.stdout


@pytest.mark.parametrize("name", golden_cases())
def test_caffe_recording_feed(models, name):
    """`rnnrt verify model.yaml --feed io.npz` on CPU: ONNX Runtime against real BVLC Caffe, every call."""
    yaml = models(name)
    report = verify(yaml, "onnxruntime", feed=GOLDEN / name / "io.npz", atol=1e-5, rtol=1e-4)
    assert report.passed, report.table()
    assert {c.reference for c in report.comparisons} == {"recorded"}
    assert report.feed.has_recording and report.steps == len({k.split("/")[0] for k in np.load(GOLDEN / name / "io.npz").files})


def test_caffe_recording_feed_cli_default_backends(models):
    yaml = models("i_embed_lstm_lm_stream")
    proc = cli("verify", yaml, "--feed", GOLDEN / "i_embed_lstm_lm_stream" / "io.npz")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "recorded   onnxruntime" in proc.stdout and "PASSED" in proc.stdout
    assert "tensorrt not run" in proc.stdout  # no plan/GPU here: said, not hidden


def test_generated_ids_stay_in_the_embedding_table(models):
    yaml = models("i_embed_lstm_lm_stream")
    from rnnrt.ir.config import load_config
    from rnnrt.runtime.verify import generate_feed

    feed = generate_feed(load_config(yaml), steps=50, seed=3)
    ids = np.stack([f["input_sentence"] for f in feed.calls])
    assert ids.min() >= 0 and ids.max() <= 16 and len(np.unique(ids)) > 8  # V = 17
    assert "cont_sentence" not in feed.calls[0]  # the Session fills the continuation input
    feed = generate_feed(load_config(yaml), steps=3, values={"input_sentence": 5})
    assert all((f["input_sentence"] == 5).all() for f in feed.calls)
    with pytest.raises(ConfigError, match="--shared nope \\| Names no input"):
        generate_feed(load_config(yaml), steps=3, values={"nope": 1})


def test_fp16_build_graph_vs_fp32_with_fp16_tolerance(models, tmp_path):
    """A --precision fp16 build keeps its rewritten graph; `onnxruntime:graph=plan` runs it on CPU."""
    pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx (dev extra) builds the plan")
    import shutil

    src = models("h3_lstm_large", "dynamic")
    d = tmp_path / "m"
    shutil.copytree(src.parent, d)
    yaml = d / "model.yaml"
    cli("build", yaml, "--precision", "fp16", "--batch-profile", "1:4:8", check=True)
    report = verify(yaml, "onnxruntime,onnxruntime:graph=plan", steps=60, streams=4, resets=[(30, [2])])
    assert report.precision == "fp16" and (report.atol, report.rtol) == TOLERANCES["fp16"]
    assert report.passed, report.table()
    worst = max(max(c.max_abs) for c in report.comparisons)
    assert 1e-5 < worst < TOLERANCES["fp16"][0]  # really reduced precision, within the fp16 tolerance
    strict = verify(yaml, "onnxruntime,onnxruntime:graph=plan", steps=60, streams=4, precision="fp32", atol=1e-6,
                    rtol=0)
    assert not strict.passed


def test_json_schema_is_stable(models, tmp_path):
    yaml = models("f_rnn_vanilla")
    out = tmp_path / "r.json"
    proc = cli("verify", yaml, "--backends", "onnxruntime,onnxruntime:opt=disable", "--steps", 5, "--json", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["schema"] == SCHEMA == "rnnrt.verify/1"
    assert set(data) == {"schema", "config", "passed", "backends", "reference", "recorded", "feed", "resets",
                         "tolerance", "comparisons", "notes"}
    assert set(data["backends"][0]) == {"label", "spec", "kind", "precision", "note"}
    assert set(data["feed"]) == {"source", "steps", "streams", "seed"}
    assert set(data["tolerance"]) == {"precision", "atol", "rtol"}
    assert set(data["comparisons"][0]) == {"reference", "candidate", "tensor", "kind", "max_abs", "max_rel",
                                           "worst_step", "first_failure", "steps", "passed", "error", "per_step"}
    assert set(data["comparisons"][0]["per_step"]) == {"max_abs", "max_rel"}
    assert data["feed"] == {"source": "generated", "steps": 5, "streams": 2, "seed": 0}
    # --json - writes the JSON to stdout instead of the table.
    proc = cli("verify", yaml, "--backends", "onnxruntime,onnxruntime:opt=disable", "--steps", 2, "--json", "-")
    assert json.loads(proc.stdout)["passed"] is True


def test_plot(models, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is the optional 'plot' extra")
    yaml = models("b_lstm_batch_resets", "dynamic")
    png = tmp_path / "err.png"
    proc = cli("verify", yaml, "--backends", "onnxruntime,tests.engines.perturbed:onnxruntime:step=5:output=lstm1:delta=1e-3",
               "--steps", 20, "--streams", 2, "--reset-at", "10", "--plot", png)
    assert proc.returncode == 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_installed_backend_entry_point_is_loaded_when_named(models, monkeypatch):
    import importlib.metadata as md

    ep = md.EntryPoint(name="wrong", value="tests.engines.perturbed:onnxruntime", group="rnnrt.engines")
    monkeypatch.setattr(md, "entry_points", lambda group=None: [ep] if group == "rnnrt.engines" else [])
    report = verify(models("a_lstm_stream_t1n1"), "onnxruntime,wrong:step=2:output=lstm1", steps=4)
    bad = [c for c in report.comparisons if not c.passed]
    assert [(c.candidate, c.tensor, c.first_failure) for c in bad] == [("wrong:step=2:output=lstm1", "lstm1", 2)]


def test_bad_input_is_typed(models, tmp_path):
    yaml = models("a_lstm_stream_t1n1")
    with pytest.raises(ConfigError, match="Has nothing to compare"):
        verify(yaml, "onnxruntime", steps=2)
    with pytest.raises(ConfigError, match="Backend 'nope' \\| Is not known"):
        verify(yaml, "onnxruntime,nope", steps=2)
    with pytest.raises(ConfigError, match="Module 'no_such_module' cannot be imported"):
        verify(yaml, "onnxruntime,no_such_module:f", steps=2)
    with pytest.raises(ConfigError, match="Has no option 'bogus'"):
        verify(yaml, "onnxruntime,onnxruntime:bogus=1", steps=2)
    with pytest.raises(ConfigError, match="static batch of 1"):
        verify(yaml, "onnxruntime,onnxruntime:opt=basic", steps=2, streams=4)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{"call0/nope": np.zeros(3)})
    with pytest.raises(BindingError, match="Feed key 'call0/nope' \\| Names 'nope'"):
        verify(yaml, "onnxruntime,onnxruntime:opt=basic", feed=bad)
    proc = cli("verify", yaml, "--backends", "onnxruntime,tensorrt")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no TensorRT plan was built" in proc.stderr or "none was built" in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------------------
GPU_CASES = ["a_lstm_stream_t1n1", "b_lstm_batch_resets", "c_lstm_stacked_ip_softmax", "f_rnn_vanilla",
             "h3_lstm_large", "h7_lstm_cont_fractional"]


def _gpu() -> bool:
    from rnnrt import cuda

    try:
        import torch
    except ImportError:
        return False
    return cuda.available() and torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.parametrize("name", GPU_CASES)
def test_gpu_standin_vs_onnxruntime(models, name):
    """On the GPU: ONNX Runtime vs the stand-in device engine behind the same interface TrtEngine has."""
    if not _gpu():
        pytest.skip("no CUDA GPU (cuda.available() is False or torch.cuda is unavailable)")
    standin = "tests.engines.standin:verify_engine"
    # The recorded Caffe stream: ORT and the stand-in against the recording and against each other.
    report = verify(models(name), f"onnxruntime,{standin}", feed=GOLDEN / name / "io.npz", atol=1e-5, rtol=1e-4)
    assert report.passed, report.table()
    assert {c.reference for c in report.comparisons} == {"recorded", "onnxruntime"}
    # Generated streams over several stream counts, with resets, copy/swap feedback, CUDA graphs.
    for streams, opts in ((1, ""), (8, ":feedback=swap"), (64, ":cuda_graph=1"), (256, ":feedback=swap:cuda_graph=1")):
        report = verify(models(name, "dynamic"), f"onnxruntime,{standin}{opts}", steps=40, streams=streams,
                        resets=[(10, None), (25, [0, streams - 1])], seed=streams)
        assert report.passed, report.table()
        assert report.feed.batch == streams


@pytest.mark.gpu
def test_gpu_perturbed_standin_fails(models):
    if not _gpu():
        pytest.skip("no CUDA GPU (cuda.available() is False or torch.cuda is unavailable)")
    yaml = models("c_lstm_stacked_ip_softmax", "dynamic")
    proc = cli("verify", yaml, "--backends",
               "onnxruntime,tests.engines.standin:verify_engine:step=13:output=prob:delta=1e-3:label=standin",
               "--steps", 30, "--streams", 16, "--reset-at", "5", "--json", "-")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    bad = [c for c in data["comparisons"] if not c["passed"]]
    assert [(c["candidate"], c["tensor"], c["first_failure"]) for c in bad] == [("standin", "prob", 13)]
