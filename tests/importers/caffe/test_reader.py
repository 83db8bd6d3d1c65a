"""Tests of rnnrt.importers.caffe.reader and rnnrt.importers.caffe.proto: golden and real-world nets, net-state filtering,
caffemodel decoding and every user error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rnnrt.importers.caffe.proto import CaffeSchema, ProtoEnum, ProtoExtension, ProtoField, ProtoMessage, default_schema
from rnnrt.importers.caffe.reader import load_net, parse_prototxt
from rnnrt.importers.caffe.writer import save_caffemodel
from rnnrt.errors import ModelImportError, PluginError

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
GOLDEN = SHARED / "golden" / "caffe"
REALWORLD = SHARED / "realworld"
GOLDEN_CASES = sorted(p.name for p in GOLDEN.glob("*/") if (p / "case.json").exists()) if GOLDEN.exists() else []
REALWORLD_FILES = sorted(p.name for p in REALWORLD.glob("*.prototxt")) if REALWORLD.exists() else []
needs_golden = pytest.mark.skipif(not GOLDEN_CASES, reason="golden Caffe data not found at ../shared/golden/caffe")
needs_realworld = pytest.mark.skipif(not REALWORLD_FILES, reason="real-world prototxts not found at ../shared/realworld")

# The fork messages of 08_yalecyu_crnn (SSD's Permute, the OCR fork's ContinuationIndicator).
PERMUTE = ProtoExtension(
    messages=(ProtoMessage("PermuteParameter", (ProtoField("order", 1, "uint32", "repeated"),)),),
    layer_fields=(ProtoField("permute_param", 202, "PermuteParameter"),),
    origin="ssd",
)
CONT_INDICATOR = ProtoExtension(
    messages=(
        ProtoMessage(
            "ContinuationIndicatorParameter",
            (ProtoField("time_step", 1, "uint32", default=0), ProtoField("batch_size", 2, "uint32", default=0)),
        ),
    ),
    layer_fields=(ProtoField("continuation_indicator_param", 301, "ContinuationIndicatorParameter"),),
    origin="ocr",
)

LSTM_NET = """
name: "tiny"
layer { name: "input" type: "Input" top: "data" top: "cont"
        input_param { shape { dim: 2 dim: 1 dim: 3 } shape { dim: 2 dim: 1 } } }
layer { name: "lstm1" type: "LSTM" bottom: "data" bottom: "cont" top: "lstm1"
        param { name: "W_xc" } param { } param { name: "W_hc" }
        recurrent_param { num_output: 4 } }
"""


def _write(tmp_path: Path, text: str, name: str = "deploy.prototxt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _names(net) -> list[str]:
    return [layer.name for layer in net.layers]


# ---------------------------------------------------------------------------------------------
# Golden and real-world nets
# ---------------------------------------------------------------------------------------------


@needs_golden
@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_golden_case_blob_shapes(case):
    folder = GOLDEN / case
    spec = json.loads((folder / "case.json").read_text())
    net = load_net(folder / "deploy.prototxt", folder / "weights.caffemodel")
    assert net.has_weights
    assert [(l.name, l.type, l.bottoms, l.tops) for l in net.layers] == [
        (l["name"], l["type"], l["bottoms"], l["tops"]) for l in spec["layers"]
    ]
    for layer, expected in zip(net.layers, spec["layers"]):
        assert [list(b.shape) for b in layer.blobs] == expected.get("param_shapes", [])
        assert all(b.dtype == np.float32 and np.isfinite(b).all() for b in layer.blobs)
        assert len(layer.param_names) >= len(layer.blobs)
    assert [l.index for l in net.layers] == list(range(len(net.layers)))


@needs_golden
def test_golden_without_caffemodel_has_no_blobs():
    net = load_net(GOLDEN / "a_lstm_stream_t1n1" / "deploy.prototxt")
    assert not net.has_weights
    assert all(layer.blobs == [] for layer in net.layers)
    lstm = net.layers[1]
    assert lstm.type == "LSTM" and lstm.param.recurrent_param.num_output == 7


@needs_realworld
@pytest.mark.parametrize("filename", [f for f in REALWORLD_FILES if not f.startswith("08")])
def test_realworld_prototxts_load(filename):
    results = json.loads((REALWORLD / "load_results.json").read_text())[filename]
    net = load_net(REALWORLD / filename)
    # Caffe's own report lists Split layers (it inserts them) and Input layers (legacy inputs upgraded).
    assert {l.type for l in net.layers} | {"Input"} == set(results["layer_types"]) - {"Split"} | {"Input"}
    legacy = {k: list(v) for k, v in net.inputs.items()}
    if legacy:
        assert legacy == results["inputs"]


@needs_realworld
def test_realworld_stage_filtering_and_duplicates():
    lm = REALWORLD / "01_bvlc_pr2033_coco_caption_lstm_lm.deploy.prototxt"
    assert "Dropout" not in {l.type for l in load_net(lm).layers}
    assert [l.type for l in load_net(lm, stages=["lstm-drop"]).layers].count("Dropout") == 1
    assert [l.type for l in load_net(lm, stages=["lstm-drop", "embed-drop"]).layers].count("Dropout") == 2

    fusion = load_net(REALWORLD / "06_vsubhashini_s2vt_deep_fusion_words_to_preds.deploy.prototxt")
    assert _names(fusion).count("concat") == 2

    noc = load_net(REALWORLD / "07_vsubhashini_noc_deploy_3loss_shared_glove.prototxt")
    lstm = next(l for l in noc.layers if l.type == "LSTM")
    assert lstm.param_names == ["lstm1_shared_Whc", "lstm1_shared_Wxc", "lstm1_shared_Wbc"]


@needs_realworld
def test_realworld_08_needs_plugin_fields():
    path = REALWORLD / "08_yalecyu_crnn_deploy.prototxt"
    with pytest.raises(ModelImportError, match=r"08_yalecyu_crnn_deploy.prototxt:494:\d+ \| .*permute_param") as info:
        load_net(path)
    assert "Caffe fork" in str(info.value) and "--plugins" in str(info.value)

    with pytest.raises(ModelImportError, match="continuation_indicator_param"):
        load_net(path, schema=CaffeSchema([PERMUTE]))

    net = load_net(path, schema=CaffeSchema([PERMUTE, CONT_INDICATOR]))
    permute = next(l for l in net.layers if l.type == "Permute")
    assert list(permute.param.permute_param.order) == [2, 0, 1]
    indicator = next(l for l in net.layers if l.type == "ContinuationIndicator")
    assert indicator.param.continuation_indicator_param.time_step == 13
    # BatchNorm comes in TRAIN and TEST variants with the same name; one survives per phase.
    bn_test = [l for l in net.layers if l.name == "bn_conv0"]
    assert len(bn_test) == 1 and bn_test[0].param.batch_norm_param.use_global_stats
    bn_train = [l for l in load_net(path, phase="TRAIN", schema=CaffeSchema([PERMUTE, CONT_INDICATOR])).layers
                if l.name == "bn_conv0"]
    assert len(bn_train) == 1 and not bn_train[0].param.batch_norm_param.use_global_stats


# ---------------------------------------------------------------------------------------------
# Net state: include / exclude
# ---------------------------------------------------------------------------------------------

RULES_NET = """
input: "x" input_shape { dim: 1 dim: 2 }
layer { name: "always" type: "ReLU" bottom: "x" top: "x" }
layer { name: "test_only" type: "ReLU" bottom: "x" top: "x" include { phase: TEST } }
layer { name: "train_only" type: "ReLU" bottom: "x" top: "x" include { phase: TRAIN } }
layer { name: "not_train" type: "ReLU" bottom: "x" top: "x" exclude { phase: TRAIN } }
layer { name: "level_ge_2" type: "ReLU" bottom: "x" top: "x" include { min_level: 2 } }
layer { name: "level_le_1" type: "ReLU" bottom: "x" top: "x" include { max_level: 1 } }
layer { name: "stage_a_and_b" type: "ReLU" bottom: "x" top: "x" include { stage: "a" stage: "b" } }
layer { name: "stage_a_or_b" type: "ReLU" bottom: "x" top: "x" include { stage: "a" } include { stage: "b" } }
layer { name: "not_stage_a" type: "ReLU" bottom: "x" top: "x" include { not_stage: "a" } }
layer { name: "excl_stage_b" type: "ReLU" bottom: "x" top: "x" exclude { stage: "b" } }
layer { name: "test_and_a" type: "ReLU" bottom: "x" top: "x" include { phase: TEST stage: "a" } }
"""


@pytest.mark.parametrize(
    "phase, level, stages, expected",
    [
        ("TEST", 0, (), ["always", "test_only", "not_train", "level_le_1", "not_stage_a", "excl_stage_b"]),
        ("TRAIN", 0, (), ["always", "train_only", "level_le_1", "not_stage_a", "excl_stage_b"]),
        ("TEST", 2, (), ["always", "test_only", "not_train", "level_ge_2", "not_stage_a", "excl_stage_b"]),
        ("TEST", 1, ("a",), ["always", "test_only", "not_train", "level_le_1", "stage_a_or_b", "excl_stage_b",
                             "test_and_a"]),
        ("TEST", 0, ("b",), ["always", "test_only", "not_train", "level_le_1", "stage_a_or_b", "not_stage_a"]),
        ("TRAIN", 0, ("a", "b"), ["always", "train_only", "level_le_1", "stage_a_and_b", "stage_a_or_b"]),
    ],
)
def test_net_state_rules(tmp_path, phase, level, stages, expected):
    net = load_net(_write(tmp_path, RULES_NET), phase=phase, level=level, stages=stages)
    assert _names(net) == expected
    assert net.inputs == {"x": (1, 2)}


def test_include_and_exclude_on_one_layer_is_an_error(tmp_path):
    text = 'input: "x" layer { name: "both" type: "ReLU" bottom: "x" top: "y" include { phase: TEST } exclude { stage: "s" } }'
    with pytest.raises(ModelImportError, match="Layer 'both'.*include and exclude"):
        load_net(_write(tmp_path, text))


def test_unknown_phase(tmp_path):
    with pytest.raises(ModelImportError, match="Unknown phase 'DEPLOY'"):
        load_net(_write(tmp_path, LSTM_NET), phase="DEPLOY")


# ---------------------------------------------------------------------------------------------
# Legacy net inputs and blob graph checks
# ---------------------------------------------------------------------------------------------


def test_legacy_input_dim(tmp_path):
    text = 'input: "a" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4 input: "b" input_dim: 5 input_dim: 6 input_dim: 7 input_dim: 8'
    net = load_net(_write(tmp_path, text))
    assert list(net.inputs.items()) == [("a", (1, 2, 3, 4)), ("b", (5, 6, 7, 8))]
    assert net.layers == []


@pytest.mark.parametrize(
    "text, match",
    [
        ('input: "a" input_dim: 1 input_dim: 2', "2 input_dim values"),
        ('input: "a" input: "b" input_shape { dim: 1 }', "2 inputs but 1 input_shape"),
        ('input: "a" input_shape { dim: 1 } input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1', "both input_shape and input_dim"),
        ('input: "a" input: "a"', "input 'a' twice"),
    ],
)
def test_legacy_input_errors(tmp_path, text, match):
    with pytest.raises(ModelImportError, match=match):
        load_net(_write(tmp_path, text))


def test_unknown_bottom_names_layer_and_blob(tmp_path):
    text = LSTM_NET + 'layer { name: "ip" type: "InnerProduct" bottom: "lstm2" top: "ip" }'
    with pytest.raises(ModelImportError, match=r"Layer 'ip' \(InnerProduct\).*Bottom 0 'lstm2' is not produced"):
        load_net(_write(tmp_path, text))


def test_bottom_produced_later_is_unknown(tmp_path):
    text = 'input: "x" layer { name: "a" type: "ReLU" bottom: "y" top: "z" } layer { name: "b" type: "ReLU" bottom: "x" top: "y" }'
    with pytest.raises(ModelImportError, match="Layer 'a'.*'y'"):
        load_net(_write(tmp_path, text))


def test_top_with_two_producers(tmp_path):
    text = 'input: "x" layer { name: "a" type: "ReLU" bottom: "x" top: "y" } layer { name: "b" type: "Sigmoid" bottom: "x" top: "y" }'
    with pytest.raises(ModelImportError, match=r"Layer 'b' \(Sigmoid\).*Top 0 'y' is already produced"):
        load_net(_write(tmp_path, text))


def test_in_place_layers_are_allowed(tmp_path):
    text = 'input: "x" layer { name: "a" type: "ReLU" bottom: "x" top: "x" } layer { name: "a" type: "TanH" bottom: "x" top: "x" }'
    net = load_net(_write(tmp_path, text))
    assert [(l.name, l.type) for l in net.layers] == [("a", "ReLU"), ("a", "TanH")]


# ---------------------------------------------------------------------------------------------
# Prototxt errors
# ---------------------------------------------------------------------------------------------


def test_malformed_prototxt_names_file_line_and_column(tmp_path):
    path = _write(tmp_path, 'name: "x"\nlayer {\n  name: "a"\n  type "ReLU"\n}\n')
    with pytest.raises(ModelImportError, match=r"deploy\.prototxt:4:\d+ \| Cannot parse the prototxt"):
        load_net(path)


def test_unknown_nested_field_is_not_blamed_on_forks():
    with pytest.raises(ModelImportError, match=r"<string>:1:\d+ .*no field named \"nm_output\"") as info:
        parse_prototxt('layer { name: "l" type: "LSTM" recurrent_param { nm_output: 3 } }')
    assert "caffe.RecurrentParameter" in str(info.value) and "Caffe fork" not in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        'name: "old"\nlayers {\n  name: "conv1"\n  type: CONVOLUTION\n  bottom: "data"\n  top: "conv1"\n'
        "  convolution_param { num_output: 4 kernel_size: 3 }\n}\n",
        'layers { name: "relu" type: 18 bottom: "x" top: "x" }',  # parses, then detected
    ],
)
def test_v1_prototxt_is_rejected_with_upgrade_hint(tmp_path, text):
    with pytest.raises(ModelImportError, match="V1 net") as info:
        load_net(_write(tmp_path, text))
    assert "upgrade_net_proto_text" in str(info.value)


def test_missing_prototxt(tmp_path):
    with pytest.raises(ModelImportError, match=r"Prototxt '.*nope.prototxt' \| Cannot be read"):
        load_net(tmp_path / "nope.prototxt")


# ---------------------------------------------------------------------------------------------
# Caffemodels
# ---------------------------------------------------------------------------------------------


def _lstm_blobs(rng) -> list[np.ndarray]:
    return [rng.standard_normal(s).astype(np.float32) for s in [(16, 3), (16,), (16, 4)]]


def test_blobs_matched_by_layer_name(tmp_path):
    rng = np.random.default_rng(0)
    blobs = _lstm_blobs(rng)
    model = tmp_path / "w.caffemodel"
    # An extra layer absent from the prototxt is ignored, as Caffe does.
    save_caffemodel(model, {"not_in_net": [np.ones(3)], "lstm1": blobs})
    net = load_net(_write(tmp_path, LSTM_NET), model)
    lstm = net.layers[1]
    assert net.layers[0].blobs == []
    assert all(np.array_equal(a, b) for a, b in zip(lstm.blobs, blobs))
    assert lstm.param_names == ["W_xc", "", "W_hc"]


def test_duplicate_layer_names_take_blobs_like_caffe(tmp_path):
    # Caffe's CopyTrainedLayersFrom copies into the first target layer of that name.
    text = 'input: "x" input_shape { dim: 1 dim: 2 }\n' + "".join(
        f'layer {{ name: "s" type: "Scale" bottom: "{b}" top: "{t}" }}\n' for b, t in [("x", "y"), ("y", "z")]
    )
    model = tmp_path / "w.caffemodel"
    save_caffemodel(model, {"s": [np.full(2, 3.0)]})
    net = load_net(_write(tmp_path, text), model)
    assert [len(l.blobs) for l in net.layers] == [1, 0]


def test_filtered_layers_get_no_blobs(tmp_path):
    text = 'input: "x" layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" include { phase: TRAIN } }'
    model = tmp_path / "w.caffemodel"
    save_caffemodel(model, {"bn": [np.zeros(2), np.zeros(2), np.ones(1)]})
    assert load_net(_write(tmp_path, text), model).layers == []
    assert [b.shape for b in load_net(_write(tmp_path, text), model, phase="TRAIN").layers[0].blobs] == [
        (2,), (2,), (1,)
    ]


def test_legacy_4d_and_double_blobs(tmp_path):
    schema = default_schema()
    net = schema.message("NetParameter")()
    layer = net.layer.add(name="lstm1", type="LSTM")
    legacy = layer.blobs.add(num=1, channels=1, height=16, width=3)
    legacy.data.extend(np.arange(48, dtype=np.float32).tolist())
    double = layer.blobs.add()
    double.shape.dim.append(16)
    double.double_data.extend((np.arange(16) / 3).tolist())
    model = tmp_path / "w.caffemodel"
    model.write_bytes(net.SerializeToString())
    blobs = load_net(_write(tmp_path, LSTM_NET), model).layers[1].blobs
    assert blobs[0].shape == (1, 1, 16, 3) and blobs[0].dtype == np.float32
    assert np.array_equal(blobs[0].ravel(), np.arange(48))
    assert blobs[1].dtype == np.float32 and np.allclose(blobs[1], np.arange(16) / 3)


def test_blob_data_split_over_chunks_is_merged(tmp_path):
    # Protobuf merges repeated fields met twice; the raw-bytes fast path must not keep only one chunk.
    schema = default_schema()
    blob_cls, layer_cls = schema.message("BlobProto"), schema.message("LayerParameter")
    first = blob_cls()
    first.shape.dim.extend([2, 3])
    first.data.extend([0.0, 1.0, 2.0])
    second = blob_cls()
    second.data.extend([3.0, 4.0, 5.0])
    blob_bytes = first.SerializeToString() + second.SerializeToString()
    layer = layer_cls(name="lstm1").SerializeToString()
    layer += b"\x3a" + _varint(len(blob_bytes)) + blob_bytes  # field 7 (blobs), length-delimited
    net = b"\xa2\x06" + _varint(len(layer)) + layer  # field 100 (layer)
    model = tmp_path / "w.caffemodel"
    model.write_bytes(net)
    blob = load_net(_write(tmp_path, LSTM_NET), model).layers[1].blobs[0]
    assert np.array_equal(blob, np.arange(6, dtype=np.float32).reshape(2, 3))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_v1_caffemodel_blobs_are_read_by_name(tmp_path):
    schema = default_schema()
    net = schema.message("NetParameter")(name="old")
    v1 = net.layers.add(name="lstm1", type=14)
    for shape in [(16, 3), (16,), (16, 4)]:
        blob = v1.blobs.add(num=1, channels=1, height=shape[0], width=shape[1] if len(shape) > 1 else 1)
        blob.data.extend([0.5] * int(np.prod(shape)))
    model = tmp_path / "w.caffemodel"
    model.write_bytes(net.SerializeToString())
    blobs = load_net(_write(tmp_path, LSTM_NET), model).layers[1].blobs
    assert [b.shape for b in blobs] == [(1, 1, 16, 3), (1, 1, 16, 1), (1, 1, 16, 4)]
    assert all((b == 0.5).all() for b in blobs)


def test_wrong_data_length_names_layer_blob_and_counts(tmp_path):
    schema = default_schema()
    net = schema.message("NetParameter")()
    layer = net.layer.add(name="lstm1")
    good = layer.blobs.add()
    good.shape.dim.extend([16, 3])
    good.data.extend([0.0] * 48)
    bad = layer.blobs.add()
    bad.shape.dim.extend([16])
    bad.data.extend([0.0] * 15)
    model = tmp_path / "w.caffemodel"
    model.write_bytes(net.SerializeToString())
    with pytest.raises(ModelImportError, match=r"(?s)Layer 'lstm1' \(LSTM\), blob 1 \| .*15 values.*\(16,\).*Expected 16"):
        load_net(_write(tmp_path, LSTM_NET), model)


@pytest.mark.parametrize("payload", [b"\xff\xfe garbage \x00\x01" * 50, b'name: "text prototxt, not binary"\n'])
def test_garbage_caffemodel(tmp_path, payload):
    model = tmp_path / "junk.caffemodel"
    model.write_bytes(payload)
    with pytest.raises(ModelImportError, match=r"Caffemodel '.*junk.caffemodel'"):
        load_net(_write(tmp_path, LSTM_NET), model)


def test_missing_caffemodel(tmp_path):
    with pytest.raises(ModelImportError, match=r"Caffemodel '.*absent.caffemodel' \| Cannot be read"):
        load_net(_write(tmp_path, LSTM_NET), tmp_path / "absent.caffemodel")


def test_progress_bar_runs(tmp_path, capsys):
    model = tmp_path / "w.caffemodel"
    save_caffemodel(model, {"lstm1": _lstm_blobs(np.random.default_rng(1))})
    net = load_net(_write(tmp_path, LSTM_NET), model, progress=True)
    assert len(net.layers[1].blobs) == 3


# ---------------------------------------------------------------------------------------------
# Schema extensions
# ---------------------------------------------------------------------------------------------


def test_extension_adds_messages_enums_and_defaults():
    ext = ProtoExtension(
        messages=(
            ProtoMessage(
                "FancyParameter",
                (
                    ProtoField("mode", 1, "Mode", default="SLOW"),
                    ProtoField("scale", 2, "float", default=2.5),
                    ProtoField("filler", 3, "FillerParameter"),
                    ProtoField("phase", 4, "Phase"),
                    ProtoField("pool", 5, "PoolingParameter.PoolMethod", default="AVE"),
                    ProtoField("on", 6, "bool", default=True),
                ),
                (ProtoEnum("Mode", (("FAST", 0), ("SLOW", 1))),),
            ),
        ),
        layer_fields=(ProtoField("fancy_param", 999, "FancyParameter"),),
        origin="fancy",
    )
    schema = CaffeSchema([ext])
    assert "fancy_param" in schema.layer_param_fields
    assert "fancy_param" not in default_schema().layer_param_fields
    net = parse_prototxt(
        'layer { name: "f" type: "Fancy" fancy_param { filler { type: "xavier" } phase: TRAIN } }', schema=schema
    )
    p = net.layer[0].fancy_param
    assert (p.mode, p.scale, p.filler.type, p.phase, p.pool, p.on) == (1, 2.5, "xavier", 0, 1, True)
    assert schema.message("FancyParameter")().mode == 1


@pytest.mark.parametrize(
    "extensions, match",
    [
        ([ProtoExtension(layer_fields=(ProtoField("recurrent_param", 500, "RecurrentParameter"),), origin="p1")],
         r"Plugin 'p1'.*'recurrent_param'.*'caffe.proto' already declares"),
        ([ProtoExtension(layer_fields=(ProtoField("my_param", 146, "RecurrentParameter"),), origin="p1")],
         r"Plugin 'p1'.*number 146.*'caffe.proto' already uses for 'recurrent_param'"),
        ([PERMUTE, ProtoExtension(layer_fields=(ProtoField("permute_param", 777, "bytes"),), origin="p2")],
         r"Plugin 'p2'.*'permute_param'.*'ssd' already declares"),
        ([PERMUTE, ProtoExtension(layer_fields=(ProtoField("other_param", 202, "bytes"),), origin="p2")],
         r"Plugin 'p2'.*number 202.*'ssd' already uses for 'permute_param'"),
        ([PERMUTE, ProtoExtension(messages=(ProtoMessage("PermuteParameter"),), origin="p2")],
         r"Plugin 'p2'.*message 'PermuteParameter'.*'ssd' already declares"),
        ([ProtoExtension(messages=(ProtoMessage("FillerParameter"),), origin="p1")],
         r"Plugin 'p1'.*message 'FillerParameter'.*'caffe.proto'"),
        ([ProtoExtension(layer_fields=(ProtoField("x_param", 500, "NoSuchParameter"),), origin="p1")],
         r"Plugin 'p1'.*unknown type 'NoSuchParameter'"),
        ([ProtoExtension(layer_fields=(ProtoField("x_param", 500, "uint32", label="required"),), origin="p1")],
         r"label 'required'"),
        ([ProtoExtension(layer_fields=(ProtoField("x_param", 0, "uint32"),), origin="p1")], r"number 0"),
        ([ProtoExtension(layer_fields=(ProtoField("x_param", 500, "FillerParameter", default=1),), origin="p1")],
         r"Has a default"),
        ([ProtoExtension(messages=(ProtoMessage("M", (ProtoField("a", 1, "int32"), ProtoField("b", 1, "int32"))),),
                         origin="p1")], r"message 'M'.*same number 1"),
    ],
)
def test_extension_errors(extensions, match):
    with pytest.raises(PluginError, match=match):
        CaffeSchema(extensions)


def test_schema_unknown_message():
    with pytest.raises(ModelImportError, match="NoSuchMessage"):
        default_schema().message("NoSuchMessage")
