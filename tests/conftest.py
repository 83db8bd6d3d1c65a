"""Shared fixtures: where the read-only ground truth lives (never copied into the repo)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden" / "caffe"
REALWORLD = SHARED / "realworld"


def golden_cases() -> list[str]:
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "deploy.prototxt").is_file()) if GOLDEN.is_dir() else []


def realworld_results() -> dict:
    """load_results.json: what real BVLC Caffe reported for each realworld prototxt."""
    if not REALWORLD.is_dir():
        return {}
    return json.loads((REALWORLD / "load_results.json").read_text())


def realworld_loadable() -> list[str]:
    """The realworld prototxts that load and run in BVLC Caffe."""
    return sorted(n for n, r in realworld_results().items() if r.get("loaded") and r.get("forward_ok"))


class GoldenCase:
    """One ground-truth case produced by real BVLC Caffe."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dir = GOLDEN / name
        self.prototxt = self.dir / "deploy.prototxt"
        self.caffemodel = self.dir / "weights.caffemodel"
        self.meta = json.loads((self.dir / "case.json").read_text())
        with np.load(self.dir / "io.npz") as io:
            self.io = {k: io[k] for k in io.files}
        self.num_calls = int(self.meta["num_calls"])

    def call(self, k: int) -> tuple[dict, dict]:
        ins = {n: self.io[f"call{k}/{n}"] for n in self.meta["inputs"]}
        outs = {n: self.io[f"call{k}/{n}"] for n in self.meta["outputs"]}
        return ins, outs


def converted_golden(case: GoldenCase, tmp_path_factory, batch: str | None = None) -> Path:
    """Converts a golden case (fixed or dynamic batch) into a fresh directory; returns its model.yaml."""
    from rnnrt.importers.caffe.convert import convert_caffe
    from rnnrt.ir.config import save_step_graph

    step = convert_caffe(case.prototxt, case.caffemodel, batch=batch)
    return save_step_graph(step, tmp_path_factory.mktemp(f"{case.name}_{batch or 'fixed'}"))


@pytest.fixture(scope="session")
def golden():
    if not GOLDEN.is_dir():
        pytest.skip(f"ground truth not found at {GOLDEN}")
    cache: dict[str, GoldenCase] = {}

    def get(name: str) -> GoldenCase:
        if name not in cache:
            cache[name] = GoldenCase(name)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def dynamic(tmp_path_factory, golden):
    """``dynamic(name)``: a golden case converted with a dynamic batch, once per test module."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = converted_golden(golden(name), tmp_path_factory, "dynamic")
        return cache[name]

    return get


@pytest.fixture
def lstm_yaml(tmp_path: Path) -> Path:
    """A saved tiny one-step LSTM model (model.yaml + model.onnx) in the test's tmp_path."""
    from tests.models import MODELS

    return MODELS["lstm_t1"]().save(tmp_path)


def edit_yaml(path: Path, fn) -> Path:
    """Applies ``fn`` to the YAML document at ``path`` (loaded as plain data) and writes it back."""
    import yaml

    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
