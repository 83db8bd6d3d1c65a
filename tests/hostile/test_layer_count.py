"""Conversion is linear in the layer count: no whole-graph walk per added node.

Times are in docs/benchmarks.md (benchmarks/convert_layers.py: 1k/5k/20k layers); this test counts
the walks instead of timing them. Before, `gs.Graph.layer()` rebuilt `Graph.tensors()` for every
node added (1,000 / 2,000 / 4,000 ReLUs: 7 / 24 / 93 s).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from rnnrt.importers.caffe.convert import convert_caffe
from tests.hostile.helpers import input_layer


def _chain(n: int) -> str:
    layers = [input_layer("b0", 1, 8)]
    layers += [f'layer {{ name: "r{i}" type: "ReLU" bottom: "b{i - 1}" top: "b{i}" }}\n' for i in range(1, n)]
    return "".join(layers)


def _walks(monkeypatch, tmp_path, n: int) -> int:
    calls = []
    original = gs.Graph.tensors

    def counting(self, *a, **kw):
        calls.append(1)
        return original(self, *a, **kw)

    monkeypatch.setattr(gs.Graph, "tensors", counting)
    (tmp_path / f"chain{n}.prototxt").write_text(_chain(n))
    step = convert_caffe(tmp_path / f"chain{n}.prototxt")
    assert sum(node.op_type == "Relu" for node in step.model.graph.node) == n - 1
    return len(calls)


def test_whole_graph_walks_do_not_grow_with_the_layer_count(monkeypatch, tmp_path):
    small, big = _walks(monkeypatch, tmp_path, 50), _walks(monkeypatch, tmp_path, 500)
    assert big == small <= 10, (small, big)


def _lstm_walks(monkeypatch, tmp_path, layers: int) -> int:
    calls = []
    original = gs.Graph.tensors

    def counting(self, *a, **kw):
        if "scan_body" not in self.name:  # a Scan body is one cell: walking it is constant work per layer
            calls.append(1)
        return original(self, *a, **kw)

    monkeypatch.setattr(gs.Graph, "tensors", counting)
    text = input_layer("x", 3, 2, 4) + input_layer("cont", 3, 2)
    prev = "x"
    for i in range(layers):  # stacked LSTMs with T = 3: each a Scan with a body graph
        text += f'layer {{ name: "l{i}" type: "LSTM" bottom: "{prev}" bottom: "cont" top: "h{i}" recurrent_param {{ num_output: 4 }} }}\n'
        prev = f"h{i}"
    (tmp_path / f"deep{layers}.prototxt").write_text(text)
    step = convert_caffe(tmp_path / f"deep{layers}.prototxt")
    assert len(step.states) == 2 * layers
    return len(calls)


def test_recurrent_nets_too(monkeypatch, tmp_path):
    small, big = _lstm_walks(monkeypatch, tmp_path, 2), _lstm_walks(monkeypatch, tmp_path, 20)
    assert big == small <= 10, (small, big)
