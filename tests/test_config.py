"""Tests of rnnrt.ir.config (the model YAML): load/save round trip, unknown keys, checks against the ONNX model."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import yaml

from rnnrt.ir.config import (
    ConfigError,
    ModelConfig,
    config_from_step_graph,
    json_schema,
    load_config,
    save_config,
    validate_against_model,
)
from tests.conftest import edit_yaml
from tests.models import MODELS


def test_round_trip(lstm_yaml: Path) -> None:
    cfg = load_config(lstm_yaml)
    assert cfg.model == "model.onnx"
    assert cfg.model_path == lstm_yaml.parent / "model.onnx"
    assert [t.name for t in cfg.inputs] == ["data", "cont"]
    assert [(s.input, s.output) for s in cfg.state] == [("lstm1.h0", "lstm1.hT"), ("lstm1.c0", "lstm1.cT")]
    assert cfg.state[0].shape == (1, 7) and cfg.state[0].initial == "zeros"
    assert cfg.continuation is not None and cfg.continuation.time_axis == 0 and cfg.continuation.fill == "auto"
    # The YAML uses the shape documented in common.md: one-line bindings.
    text = lstm_yaml.read_text()
    assert "- {name: data, dtype: float32, shape: [1, 1, 5], batch_axis: 1}" in text
    again = save_config(cfg, lstm_yaml.parent / "copy.yaml")
    assert load_config(lstm_yaml.parent / "copy.yaml") == cfg == again


def test_save_elsewhere_rewrites_relative_paths(lstm_yaml: Path, tmp_path: Path) -> None:
    cfg = load_config(lstm_yaml)
    (tmp_path / "sub").mkdir()
    save_config(cfg, tmp_path / "sub" / "m.yaml")
    moved = load_config(tmp_path / "sub" / "m.yaml")
    assert moved.model == "../model.onnx"
    assert moved.model_path.resolve() == cfg.model_path.resolve()


def test_legacy_engine_section_is_read_once_into_a_manifest(lstm_yaml: Path, tmp_path: Path) -> None:
    """An older build's `engine:` section is turned into the plan's manifest on load, with one warning."""
    import warnings

    from rnnrt.ir.manifest import EngineManifest, find_engine

    section = {"plan": "../plans/old.plan", "flavour": "tensorrt_rtx", "version": "1.7.1.116", "precision": "fp16",
               "io_dtype": "float16", "profile": {"min": 1, "opt": 2, "max": 4}}
    edit_yaml(lstm_yaml, lambda d: d.update(engine=section))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cfg = load_config(lstm_yaml)
    assert [str(w.message) for w in seen if issubclass(w.category, FutureWarning)] == [
        f"Config {str(lstm_yaml)!r} | Has an `engine:` section, which only builds before the plan manifest wrote; it "
        "is read as the plan's manifest for now. Run `rnnrt build` again to write <plan>.json, and delete the section."]
    m = cfg.legacy_engine
    assert isinstance(m, EngineManifest) and not hasattr(cfg, "engine") and "engine" not in ModelConfig.model_fields
    assert m.plan_path == (lstm_yaml.parent / "../plans/old.plan").absolute().parent / "old.plan"
    assert (m.flavour, m.version, m.precision, m.io_dtype, m.state_dtype) == (
        "tensorrt_rtx", "1.7.1.116", "fp16", "float16", "float32")
    assert m.profile == [1, 2, 4] and m.max_batch == 4 and m.runtimes == ["tensorrt_rtx"]
    assert m.runtime_cache is None and not m.path.exists()  # in memory only
    assert find_engine(cfg, config_path=lstm_yaml) is m  # no <plan>.json: the section's plan
    assert cfg.with_base_dir(tmp_path).legacy_engine is m  # copies keep it
    # Saving writes no section back; a config without one has no legacy engine.
    save_config(cfg, tmp_path / "again.yaml")
    assert "engine" not in (tmp_path / "again.yaml").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config(tmp_path / "again.yaml", validate=False).legacy_engine is None
    # A bad section is refused, named as such.
    edit_yaml(lstm_yaml, lambda d: d["engine"].update(flavour="tensorflow"))
    with pytest.raises(ConfigError, match=r"engine \| Invalid engine section: flavour"):
        load_config(lstm_yaml)


def test_written_yaml_has_no_deprecated_runtime_cache_and_warns_for_nothing(lstm_yaml: Path) -> None:
    import warnings

    text = lstm_yaml.read_text()
    assert "runtime_cache" not in text and "engine:" not in text
    assert "session: {backend: auto" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(lstm_yaml)


def test_frozen(lstm_yaml: Path) -> None:
    cfg = load_config(lstm_yaml)
    with pytest.raises(Exception, match="frozen"):
        cfg.model = "other.onnx"


def test_unknown_key_is_error(lstm_yaml: Path) -> None:
    edit_yaml(lstm_yaml, lambda d: d["state"][0].update(inital="zeros"))
    with pytest.raises(ConfigError, match=r"model.yaml.*state\.0\.inital: unknown key"):
        load_config(lstm_yaml)


def test_unknown_top_level_key_is_error(lstm_yaml: Path) -> None:
    edit_yaml(lstm_yaml, lambda d: d.update(modle="x.onnx"))
    with pytest.raises(ConfigError, match=r"modle: unknown key"):
        load_config(lstm_yaml)


def test_bad_value_names_field(lstm_yaml: Path) -> None:
    edit_yaml(lstm_yaml, lambda d: d["inputs"][0].update(dtype="float33"))
    with pytest.raises(ConfigError, match=r"inputs\.0\.dtype"):
        load_config(lstm_yaml)


def test_missing_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot be read"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("inputs: [\n")
    with pytest.raises(ConfigError, match="Is not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="Top level is a list"):
        load_config(tmp_path / "list.yaml")


def test_missing_model_file(lstm_yaml: Path) -> None:
    edit_yaml(lstm_yaml, lambda d: d.update(model="gone.onnx"))
    with pytest.raises(ConfigError, match=r"gone.onnx' \| Does not exist"):
        load_config(lstm_yaml)
    assert load_config(lstm_yaml, validate=False).model == "gone.onnx"


def test_binding_the_model_lacks(lstm_yaml: Path) -> None:
    edit_yaml(lstm_yaml, lambda d: d["state"][0].update(output="lstm1.hX"))
    with pytest.raises(ConfigError, match=r"State output 'lstm1.hX' \| Is not a graph output"):
        load_config(lstm_yaml)


def test_input_declared_as_output(lstm_yaml: Path) -> None:
    def swap(d):
        d["outputs"].append(d["inputs"].pop(0))
    edit_yaml(lstm_yaml, swap)
    with pytest.raises(ConfigError, match=r"Output 'data' \| Is not a graph output"):
        load_config(lstm_yaml)


def test_undeclared_graph_input(lstm_yaml: Path) -> None:
    edit_yaml(lstm_yaml, lambda d: d["state"].pop(1))
    with pytest.raises(ConfigError, match=r"Graph input 'lstm1.c0' \| .* is not declared"):
        load_config(lstm_yaml)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["inputs"][0].update(dtype="float16"), r"Input 'data' \| Has dtype 'float16' in the config but 'float32'"),
        (lambda d: d["inputs"][0].update(shape=[1, 5]), r"Input 'data' \| Has rank 2 in the config"),
        (lambda d: d["state"][1].update(shape=[1, 8]), r"State input 'lstm1.c0' \| Dim 1 is 8 in the config but 7"),
        (lambda d: d["outputs"][0].update(shape=[1, "batch", 7]), r"Output 'lstm1' \| Dim 1 is 'batch'"),
    ],
)
def test_dtype_and_shape_mismatch(lstm_yaml: Path, edit, match: str) -> None:
    edit_yaml(lstm_yaml, edit)
    with pytest.raises(ConfigError, match=match):
        load_config(lstm_yaml)


def test_name_used_twice(lstm_yaml: Path) -> None:
    edit_yaml(lstm_yaml, lambda d: d["state"][1].update(input="lstm1.h0"))
    with pytest.raises(ConfigError, match=r"binding name 'lstm1.h0' is used twice \(as state.input and as state.input\)"):
        load_config(lstm_yaml)


def test_continuation_must_be_an_input(lstm_yaml: Path) -> None:
    edit_yaml(lstm_yaml, lambda d: d["continuation"].update(input="cnt"))
    with pytest.raises(ConfigError, match=r"continuation input 'cnt' is not one of the inputs"):
        load_config(lstm_yaml)
    edit_yaml(lstm_yaml, lambda d: d["continuation"].update(input="cont", time_axis=2))
    with pytest.raises(ConfigError, match=r"continuation time_axis 2 is out of range"):
        load_config(lstm_yaml)


def test_state_dynamic_non_batch_dim_is_error(lstm_yaml: Path) -> None:
    edit_yaml(lstm_yaml, lambda d: d["state"][0].update(shape=[1, "H"]))
    with pytest.raises(ConfigError, match=r"state dim 1 is dynamic \('H'\)"):
        load_config(lstm_yaml)


def test_dynamic_batch(tmp_path: Path) -> None:
    cfg = load_config(MODELS["lstm_dynamic_batch"]().save(tmp_path))
    assert cfg.inputs[0].shape == (1, "batch", 5)
    assert cfg.state[0].shape == ("batch", 7)


def test_external_data_not_loaded(tmp_path: Path) -> None:
    m = MODELS["lstm_t1"](hidden=64)
    onnx.save(m.step.model, str(tmp_path / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="model.data", size_threshold=0)
    cfg = config_from_step_graph(m.step, tmp_path / "model.onnx")
    save_config(cfg, tmp_path / "model.yaml")
    (tmp_path / "model.data").unlink()  # validation must not need the weights
    validate_against_model(load_config(tmp_path / "model.yaml", validate=False))


def test_config_from_step_graph_and_schema() -> None:
    m = MODELS["stateless"]()
    cfg = config_from_step_graph(m.step, "/x/y/net.onnx")
    assert cfg.model == "net.onnx" and str(cfg.model_path) == "/x/y/net.onnx"
    assert cfg.continuation is None and cfg.state == []
    schema = json_schema()
    json.dumps(schema)
    assert set(schema["properties"]) >= {"model", "inputs", "outputs", "state", "continuation", "engine", "session"}
    assert schema["additionalProperties"] is False
    # Every field carries a description.
    for name, prop in schema["properties"].items():
        assert prop.get("description"), name
    assert isinstance(ModelConfig.model_fields["state"].description, str)


def test_cli_schema(capsys) -> None:
    from rnnrt.cli import main

    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


def test_cli_inspect(tmp_path: Path, capsys) -> None:
    from rnnrt.cli import main

    path = MODELS["lstm_scan"]().save(tmp_path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "lstm1.h0     lstm1.hT      float32  [3, 7]  0           zeros" in out
    assert "input   data   float32  [4, 3, 5]  1" in out
    assert "Continuation: cont (batch_axis 1, time_axis 0, fill auto)" in out
    assert "Scan       1" in out and "MatMul     2" in out  # Scan body ops are counted too
    assert main(["inspect", str(tmp_path / "model.onnx")]) == 2
    assert "Is an ONNX model, not an rnnrt model config" in capsys.readouterr().err


def test_example_config_parses_and_matches_a_real_model(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "configs" / "example.yaml"
    cfg = load_config(example, validate=False)
    assert cfg.state[0].input == "lstm1.h0" and cfg.continuation.fill == "auto"
    # The example describes exactly the tiny lstm_t1 model.
    MODELS["lstm_t1"]().save(tmp_path)
    validate_against_model(cfg, tmp_path / "model.onnx")


def test_load_config_names_an_onnx_model_given_for_a_config(lstm_yaml: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.onnx' \| Is an ONNX model, not an rnnrt model config"):
        load_config(lstm_yaml.parent / "model.onnx")
