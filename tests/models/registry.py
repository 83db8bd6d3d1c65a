"""Registry of tiny test models."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import onnx

from rnnrt.ir.config import config_from_step_graph, save_config
from rnnrt.ir.stepgraph import StepGraph

MODELS: dict[str, Callable[..., "TinyModel"]] = {}


def register(name: str) -> Callable:
    """Registers a model builder under ``name`` (twice is an error)."""

    def deco(fn: Callable[..., "TinyModel"]) -> Callable[..., "TinyModel"]:
        if name in MODELS:
            raise ValueError(f"Model {name!r} already registered")
        MODELS[name] = fn
        return fn

    return deco


@dataclasses.dataclass
class TinyModel:
    """A step graph with its weights and a numpy reference.

    ``reference(feeds, state) -> (outputs, new_state)``: ``feeds`` maps input names to arrays,
    ``state`` maps state *input* names to arrays (None = zeros); ``new_state`` is keyed by state
    input names too.
    """

    name: str
    step: StepGraph
    weights: dict[str, Any]
    reference: Callable[[dict, dict | None], tuple[dict, dict]]

    def save(self, directory: str | Path, stem: str = "model") -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        onnx_path = directory / f"{stem}.onnx"
        onnx.save(self.step.model, str(onnx_path))
        cfg = config_from_step_graph(self.step, onnx_path)
        yaml_path = directory / f"{stem}.yaml"
        save_config(cfg, yaml_path)
        return yaml_path
