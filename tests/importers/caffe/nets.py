"""Tiny Caffe nets written in the tests: prototxt text + blobs, converted and run in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from rnnrt.importers.caffe.convert import convert_caffe
from rnnrt.importers.caffe.writer import save_caffemodel


def write_net(tmp_path: Path, prototxt: str, blobs: Mapping[str, Sequence[np.ndarray]] | None = None) -> tuple[Path, Path | None]:
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(prototxt)
    weights = None
    if blobs is not None:
        weights = tmp_path / "weights.caffemodel"
        save_caffemodel(weights, blobs)
    return proto, weights


def run_net(tmp_path: Path, prototxt: str, blobs: Mapping[str, Sequence[np.ndarray]] | None, feeds: Mapping[str, np.ndarray], **kw) -> dict[str, np.ndarray]:
    """Converts the net and runs one call with zero state; returns every graph output by name."""
    proto, weights = write_net(tmp_path, prototxt, blobs)
    step = convert_caffe(proto, weights, **kw)
    sess = ort.InferenceSession(step.model.SerializeToString(), providers=["CPUExecutionProvider"])
    full = dict(feeds)
    for s in step.states:
        full[s.input] = np.zeros([d if isinstance(d, int) else next(iter(feeds.values())).shape[1] for d in s.shape], np.float32)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, full)))


def input_layer(*blobs: tuple[str, Sequence[int]]) -> str:
    tops = "".join(f'  top: "{n}"\n' for n, _ in blobs)
    shapes = "".join("    shape { " + " ".join(f"dim: {d}" for d in s) + " }\n" for _, s in blobs)
    return f'layer {{\n  name: "input"\n  type: "Input"\n{tops}  input_param {{\n{shapes}  }}\n}}\n'
