"""The one description of bindings (rnnrt.ir.bindings): the step graph, the YAML config and the ONNX override
share its classes, its dtype map and its reader of ONNX dims; integers in it are strict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import rnnrt.ir.config as config
from rnnrt.errors import ConfigError
from rnnrt.importers import options
from rnnrt.importers.onnx import override
from rnnrt.ir import bindings, stepgraph
from rnnrt.ir.bindings import Continuation, StatePair, TensorSpec, graph_bindings, onnx_tensor_type
from tests.conftest import edit_yaml
from tests.models import MODELS


def test_step_graph_config_and_override_share_the_classes() -> None:
    assert stepgraph.TensorSpec is config.TensorConfig is TensorSpec
    assert stepgraph.StatePair is config.StateConfig is StatePair
    assert stepgraph.Continuation is config.ContinuationConfig is Continuation
    assert override.OverrideConfig.model_fields["continuation"].annotation == (Continuation | None)
    assert config.Dim is stepgraph.Dim is bindings.Dim
    import rnnrt.engines.base as engines_base

    assert engines_base.Dim is bindings.Dim


def test_step_graph_bindings_become_the_config_entries(tmp_path: Path) -> None:
    step = MODELS["lstm_t1"]().step
    cfg = config.load_config(MODELS["lstm_t1"]().save(tmp_path))
    assert cfg.inputs == step.inputs and cfg.outputs == step.outputs and cfg.state == step.states
    assert cfg.continuation == step.continuation


def test_positional_and_keyword_construction() -> None:
    t = TensorSpec("x", "float32", ("batch", 4), 0)
    assert t == TensorSpec(name="x", dtype="float32", shape=["batch", 4], batch_axis=0)
    assert t.shape == ("batch", 4) and hash(t) == hash(TensorSpec("x", "float32", ("batch", 4), 0))
    s = StatePair("h0", "hT", ("batch", 8))
    assert (s.dtype, s.batch_axis, s.initial) == ("float32", 0, "zeros")
    c = Continuation("cont", 1, 0)
    assert (c.batch_axis, c.time_axis, c.fill) == (1, 0, "auto")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: TensorSpec("x", "float32", (2, 4), True), r"TensorSpec 'x' \| Invalid: batch_axis: Input should be a valid integer"),
        (lambda: TensorSpec("x", "float32", (2, 4), 2), r"TensorSpec 'x' \| Invalid: .*batch_axis 2 is out of range"),
        (lambda: TensorSpec("x", "float33", (2,)), r"TensorSpec 'x' \| Invalid: dtype"),
        (lambda: TensorSpec("x", "float32", (2, 1.5)), r"TensorSpec 'x' \| Invalid: shape.1"),
        (lambda: StatePair("h", "hT", (2, "t"), batch_axis=0), r"StatePair 'h' \| Invalid: .*state dim 1 is dynamic"),
        (lambda: StatePair("h", "hT", (2, 3), batch_axis=False), r"StatePair 'h' \| Invalid: batch_axis"),
        (lambda: Continuation("c", batch_axis="1"), r"Continuation 'c' \| Invalid: batch_axis"),
    ],
)
def test_invalid_binding_is_a_config_error(make, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make()


def test_numpy_integers_are_integers() -> None:
    t = TensorSpec("x", "float32", (np.int64(2), 4), np.int32(0))
    assert t.shape == (2, 4) and type(t.shape[0]) is int and t.batch_axis == 0


_NOT_INT = "Input should be a valid integer"
_NOT_DIM = r"Value error, a dim is a size \(an integer >= 0\) or a name \(a non-empty string\), not"


@pytest.mark.parametrize(
    "edit, field, what",
    [
        (lambda d: d["inputs"][0].update(batch_axis=True), r"inputs\.0\.batch_axis", _NOT_INT),
        (lambda d: d["outputs"][0].update(batch_axis=1.0), r"outputs\.0\.batch_axis", _NOT_INT),
        (lambda d: d["state"][0].update(batch_axis=False), r"state\.0\.batch_axis", _NOT_INT),
        (lambda d: d["state"][0].update(shape=[True, 7]), r"state\.0\.shape\.0", _NOT_DIM + " True"),
        (lambda d: d["inputs"][0].update(shape=[1, -1, 5]), r"inputs\.0\.shape\.1", _NOT_DIM + " -1"),
        (lambda d: d["continuation"].update(time_axis=False), r"continuation\.time_axis", _NOT_INT),
        (lambda d: d["continuation"].update(batch_axis="1"), r"continuation\.batch_axis", _NOT_INT),
        (lambda d: d.update(session={"threads": True}), r"session\.threads", _NOT_INT),
    ],
)
def test_yaml_integers_are_strict(lstm_yaml: Path, edit, field: str, what: str) -> None:
    edit_yaml(lstm_yaml, edit)
    with pytest.raises(ConfigError, match=rf"Config '.*model.yaml' \| Invalid config: {field}: {what}"):
        config.load_config(lstm_yaml)


def test_override_integers_are_strict(tmp_path: Path) -> None:
    path = tmp_path / "ov.yaml"
    path.write_text("inputs:\n  - {name: data, batch_axis: true}\n")
    with pytest.raises(ConfigError, match=r"Override '.*ov.yaml' \| Invalid override: inputs\.0\.batch_axis: Input should be a valid integer"):
        override.load_override(path)


def test_import_config_seed_is_strict(tmp_path: Path) -> None:
    path = tmp_path / "import.yaml"
    path.write_text("model: deploy.prototxt\nseed: true\n")
    with pytest.raises(ConfigError, match=r"Import config '.*import.yaml' \| Invalid: seed: Input should be a valid integer"):
        options.load_import_config(path)


def test_override_continuation_takes_fill(tmp_path: Path) -> None:
    step = MODELS["lstm_t1"]().step
    new = override.apply_override(step, {"continuation": {"input": "cont", "batch_axis": 1, "time_axis": 0, "fill": "never"}})
    assert new.continuation == Continuation("cont", 1, 0, "never")
    cfg = config.config_from_step_graph(new, tmp_path / "model.onnx")
    assert cfg.continuation is not None and cfg.continuation.fill == "never"


def _value_info(name: str, elem: int, dims) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, dims)


def test_the_one_onnx_dims_reader() -> None:
    assert onnx_tensor_type(_value_info("x", TensorProto.FLOAT, [2, "batch", None])) == ("float32", [2, "batch", "x_dim2"])
    assert onnx_tensor_type(_value_info("x", TensorProto.FLOAT16, [None]), unnamed="?") == ("float16", ["?"])
    assert onnx_tensor_type(_value_info("s", TensorProto.STRING, [1])) == (None, [1])
    no_shape = helper.make_tensor_value_info("y", TensorProto.INT64, None)
    assert onnx_tensor_type(no_shape) == ("int64", None)
    for elem, name in bindings.ONNX_TO_DTYPE.items():
        if name != "bfloat16":  # numpy has no bfloat16; onnx maps it to a custom dtype
            assert helper.tensor_dtype_to_np_dtype(elem).name == name
    assert set(bindings.ONNX_TO_DTYPE.values()) == set(bindings.DTYPES)


def test_graph_bindings_skip_weights() -> None:
    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [_value_info("x", TensorProto.FLOAT, ["n", 4]), _value_info("w", TensorProto.FLOAT, [4])],
        [_value_info("y", TensorProto.FLOAT, ["n", 4])], [w],
    )
    model = helper.make_model(graph, ir_version=8)
    assert graph_bindings(model, "input") == {"x": ("float32", ["n", 4])}
    assert graph_bindings(model, "output") == {"y": ("float32", ["n", 4])}


def test_no_other_dtype_map_or_dims_reader_in_the_package() -> None:
    root = Path(bindings.__file__).resolve().parents[1]
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "bindings.py" and path.parent.name == "ir":
            continue
        text = path.read_text()
        if '16: "bfloat16"' in text or "HasField(\"dim_value\")" in text or "Dim = Union" in text:
            offenders.append(str(path.relative_to(root)))
    assert offenders == []
