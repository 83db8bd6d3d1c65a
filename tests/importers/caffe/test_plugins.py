"""Layer plugins: loading (directories, files, entry points), errors, and the CRNN plugin's layers."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from rnnrt.importers.caffe import registry
from rnnrt.importers.caffe.convert import convert_caffe
from rnnrt.importers.caffe.plugins import layer_table, load_plugins, loaded_plugins, unload_plugin
from rnnrt.errors import ModelImportError, PluginError, UnsupportedOpError
from tests.importers.caffe.nets import input_layer, write_net
from tests.conftest import REALWORLD, REPO

PLUGINS = REPO / "plugins"
CRNN_08 = REALWORLD / "08_yalecyu_crnn_deploy.prototxt"
needs_realworld = pytest.mark.skipif(not CRNN_08.is_file(), reason=f"realworld prototxts not found at {REALWORLD}")
needs_rtx = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt-rtx is not installed (pip install tensorrt-rtx)"
)


@pytest.fixture(autouse=True)
def _unload_new_plugins():
    """Registration is process-global: forget every plugin a test loaded."""
    before = {p.name for p in loaded_plugins()}
    yield
    for p in loaded_plugins():
        if p.name not in before:
            unload_plugin(p.name)


def _plugin(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def _ort(step, feeds: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """One call with zero state; returns the user outputs and final states by name."""
    sess = ort.InferenceSession(step.model.SerializeToString(), providers=["CPUExecutionProvider"])
    full = dict(feeds)
    for s in step.states:
        full[s.input] = np.zeros([d if isinstance(d, int) else batch for d in s.shape], np.float32)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, full)))


# ------------------------------------------------------------------ a plugin from outside the repo
# A made-up layer: top = factor * bottom + offset, with a fork field `double_param` (number 9001).
_DOUBLE_IT = """
    from rnnrt.importers.caffe.proto import ProtoExtension, ProtoField, ProtoMessage
    from rnnrt.importers.caffe.registry import add_converter

    CAFFE_PROTO = ProtoExtension(
        messages=(ProtoMessage("DoubleParameter", (ProtoField("factor", 1, "float", default=2.0),)),),
        layer_fields=(ProtoField("double_param", 9001, "DoubleParameter"),),
    )

    @add_converter("caffe", "DoubleIt")
    def _(layer, ctx):
        (x,) = ctx.bottoms(layer, 1)
        factor = ctx.const(__import__("numpy").float32(layer.param.double_param.factor), layer.name + "/factor")
        return [ctx.op("Mul", [x, factor], shape=ctx.shape(x), batch_axis=ctx.batch_axis(x))]
"""

_DOUBLE_NET = input_layer(("data", (2, 3))) + """
layer { name: "twice" type: "DoubleIt" bottom: "data" top: "out" double_param { factor: 3.5 } }
"""


def test_plugin_from_a_directory_outside_the_repo(tmp_path):
    plugin_dir = tmp_path / "elsewhere" / "my_layers"
    _plugin(plugin_dir, "double_it", _DOUBLE_IT)
    (plugin_dir / "_helpers.py").write_text("raise RuntimeError('files starting with _ are not plugins')\n")
    (plugin_dir / "notes.txt").write_text("not a plugin")
    proto, _ = write_net(tmp_path, _DOUBLE_NET)

    with pytest.raises(ModelImportError, match="double_param"):
        convert_caffe(proto)  # without the plugin, the prototxt does not even parse

    plugins = load_plugins([plugin_dir], entry_points=False)
    assert [(p.name, p.layer_types) for p in plugins.plugins] == [("double_it", ("DoubleIt",))]
    assert plugins.plugins[0].source == str(plugin_dir / "double_it.py")
    assert plugins.plugins[0].extensions[0].origin == "double_it"
    assert ("DoubleIt", "double_it", str(plugin_dir / "double_it.py")) in layer_table()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    step = convert_caffe(proto, schema=plugins.schema)
    np.testing.assert_allclose(_ort(step, {"data": x}, 2)["out"], 3.5 * x, atol=1e-6)

    # Loading the same file again is a no-op, a single file works as a path too.
    again = load_plugins([plugin_dir / "double_it.py"], entry_points=False)
    assert again.plugins[0] is plugins.plugins[0]

    unload_plugin("double_it")
    assert "DoubleIt" not in registry.registered_types("caffe")
    assert load_plugins([plugin_dir], entry_points=False).plugins[0].layer_types == ("DoubleIt",)


def test_plugin_from_an_entry_point(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _plugin(site / "fork_pkg", "__init__", "")
    _plugin(site / "fork_pkg", "layers", _DOUBLE_IT)
    dist = site / "fork_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fork-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rnnrt.caffe_layers]\nfork = fork_pkg.layers\n")
    monkeypatch.syspath_prepend(str(site))

    assert load_plugins().plugins == ()  # entry points load only when asked for
    assert load_plugins(entry_points=False).plugins == ()
    plugins = load_plugins(["entry:fork"])
    assert [(p.name, p.source, p.layer_types) for p in plugins.plugins] == [
        ("fork", "entry point fork_pkg.layers", ("DoubleIt",))
    ]
    proto, _ = write_net(tmp_path, _DOUBLE_NET)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(_ort(convert_caffe(proto, schema=plugins.schema), {"data": x}, 2)["out"], 3.5 * x)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "body, match",
    [
        ("import no_such_module_anywhere\n", r"Plugin 'bad' \(.*bad\.py\) \| Failed to import: ModuleNotFoundError"),
        ("def broken(:\n", r"Plugin 'bad' \(.*bad\.py\) \| Failed to import: SyntaxError"),
        ("x = 1\n", r"Plugin 'bad' \(.*\) \| Registers no Caffe layer converter"),
        ("from rnnrt.importers.caffe.registry import add_converter\n"
         "@add_converter('caffe', 'Made')\ndef _(layer, ctx): return []\n"
         "CAFFE_PROTO = 'permute_param'\n", r"(?s)Plugin 'bad' .*CAFFE_PROTO is a str.*Expected a rnnrt.importers.caffe.proto.ProtoExtension"),
        ("from rnnrt.importers.caffe.registry import add_converter\n"
         "@add_converter('caffe', 'Made')\ndef _(layer, ctx): return []\n"
         "@add_converter('caffe', 'LSTM')\ndef _(layer, ctx): return []\n",
         r"Converter caffe/'LSTM' \| Registered twice: by 'rnnrt' and by 'bad'"),
    ],
    ids=["import-error", "syntax-error", "registers-nothing", "bad-proto", "claims-builtin"],
)
def test_plugin_load_errors(tmp_path, body, match):
    _plugin(tmp_path / "p", "bad", body)
    with pytest.raises(PluginError, match=match):
        load_plugins([tmp_path / "p"], entry_points=False)
    # Nothing is left half-registered, and the plugin is not marked loaded.
    assert "Made" not in registry.registered_types("caffe")
    assert registry.registered_types("caffe")["LSTM"] == "rnnrt"
    assert "bad" not in {p.name for p in loaded_plugins()}


def test_two_plugins_register_the_same_layer(tmp_path):
    body = "from rnnrt.importers.caffe.registry import add_converter\n@add_converter('caffe', 'Made')\ndef _(layer, ctx): return []\n"
    _plugin(tmp_path / "p", "first", body)
    _plugin(tmp_path / "p", "second", body)
    with pytest.raises(PluginError, match=r"Converter caffe/'Made' \| Registered twice: by 'first' and by 'second'"):
        load_plugins([tmp_path / "p"], entry_points=False)
    assert registry.registered_types("caffe")["Made"] == "first"


def test_two_plugins_with_one_name(tmp_path):
    _plugin(tmp_path / "a", "double_it", _DOUBLE_IT)
    _plugin(tmp_path / "b", "double_it", _DOUBLE_IT)
    with pytest.raises(PluginError, match=r"Plugin 'double_it' \(.*b/double_it.py\) \| A plugin of the same name is already loaded from .*a/double_it.py"):
        load_plugins([tmp_path / "a", tmp_path / "b"], entry_points=False)


def test_plugin_fields_clash(tmp_path):
    _plugin(tmp_path / "p", "double_it", _DOUBLE_IT)
    _plugin(tmp_path / "p", "other", _DOUBLE_IT.replace('"DoubleIt"', '"Other"').replace('"DoubleParameter"', '"OtherParameter"')
            .replace('"double_param"', '"other_param"'))
    with pytest.raises(PluginError, match=r"Plugin 'other' \| Adds LayerParameter field 'other_param' with number 9001, which 'double_it' already uses"):
        load_plugins([tmp_path / "p"], entry_points=False)


def _file(d: Path, name: str) -> Path:
    (d / name).write_text("")
    return d / name


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: d / "missing", r"Plugin path '.*missing' \| Does not exist"),
        (lambda d: d, r"Plugin directory '.*' \| Holds no plugin modules"),
        (lambda d: _file(d, "x.txt"), r"Plugin path '.*x.txt' \| Is not a .py file"),
        (lambda d: _file(d, "my-layers.py"), r"'my-layers' is not a Python identifier"),
        (lambda d: _file(d, "rnnrt.py"), r"Is named 'rnnrt', the origin of the built-in layers"),
    ],
    ids=["missing", "empty-dir", "not-py", "bad-name", "named-rnnrt"],
)
def test_plugin_path_errors(tmp_path, make, match):
    with pytest.raises(PluginError, match=match):
        load_plugins([make(tmp_path)], entry_points=False)


def test_layer_no_plugin_handles(tmp_path):
    proto, _ = write_net(tmp_path, input_layer(("data", (1, 3))) + 'layer { name: "m" type: "Mystery" bottom: "data" top: "y" }\n')
    with pytest.raises(UnsupportedOpError, match=r"Layer 'm' of type 'Mystery' \| No caffe converter.*\n.*--plugins DIR"):
        convert_caffe(proto)


def test_unload_unknown_plugin():
    with pytest.raises(PluginError, match=r"Plugin 'nope' \| Is not loaded"):
        unload_plugin("nope")


# ------------------------------------------------------------------ the CRNN plugin: layer by layer
def _crnn_net(text: str, tmp_path: Path, blobs=None, **kw):
    plugins = load_plugins([PLUGINS], entry_points=False)
    proto, weights = write_net(tmp_path, text, blobs)
    return convert_caffe(proto, weights, schema=plugins.schema, **kw)


@pytest.mark.parametrize(
    "order, perm",
    [([2, 0, 1], (2, 0, 1, 3)), ([1], (1, 0, 2, 3)), ([0, 1, 3, 2], (0, 1, 3, 2)), ([], (0, 1, 2, 3))],
)
def test_permute(tmp_path, order, perm):
    orders = " ".join(f"order: {o}" for o in order)
    text = input_layer(("data", (2, 3, 4, 5))) + (
        f'layer {{ name: "p" type: "Permute" bottom: "data" top: "y" permute_param {{ {orders} }} }}\n'
    )
    step = _crnn_net(text, tmp_path)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    y = _ort(step, {"data": x}, 2)["y"]
    np.testing.assert_array_equal(y, x.transpose(perm))
    assert step.outputs[0].shape == tuple(x.transpose(perm).shape)
    assert step.outputs[0].batch_axis == perm.index(0)


@pytest.mark.parametrize(
    "order, match",
    [([3], r"Layer 'p' \(Permute\) \| order 3 is out of range for a 3-D input"), ([1, 1], r"order \[1, 1\] lists an axis twice")],
)
def test_permute_errors(tmp_path, order, match):
    orders = " ".join(f"order: {o}" for o in order)
    text = input_layer(("data", (2, 3, 4))) + f'layer {{ name: "p" type: "Permute" bottom: "data" top: "y" permute_param {{ {orders} }} }}\n'
    with pytest.raises(ModelImportError, match=match):
        _crnn_net(text, tmp_path)


@pytest.mark.parametrize("axes, flip", [("", (0,)), ("axis: 1", (1,)), ("axis: -1 axis: 0", (2, 0))])
def test_reverse(tmp_path, axes, flip):
    text = input_layer(("data", (3, 2, 4))) + f'layer {{ name: "r" type: "Reverse" bottom: "data" top: "y" reverse_param {{ {axes} }} }}\n'
    x = np.arange(24, dtype=np.float32).reshape(3, 2, 4)
    np.testing.assert_array_equal(_ort(_crnn_net(text, tmp_path), {"data": x}, 2)["y"], np.flip(x, flip))


def test_reverse_of_the_dynamic_batch_axis(tmp_path):
    text = input_layer(("data", (2, 3))) + 'layer { name: "r" type: "Reverse" bottom: "data" top: "y" reverse_param { axis: 0 } }\n'
    with pytest.raises(UnsupportedOpError, match=r"Layer 'r' \(Reverse\) \| Reversing the dynamic batch \(stream\) axis 0"):
        _crnn_net(text, tmp_path, batch="dynamic")


@pytest.mark.parametrize("t, n", [(4, 2), (1, 3)])
def test_continuation_indicator(tmp_path, t, n):
    text = f'layer {{ name: "ind" type: "ContinuationIndicator" top: "cont" continuation_indicator_param {{ time_step: {t} batch_size: {n} }} }}\n'
    step = _crnn_net(text, tmp_path)
    cont = _ort(step, {}, n)["cont"]
    expected = np.ones((t, n), np.float32)
    expected[0] = 0
    np.testing.assert_array_equal(cont, expected)
    assert any("starts a new sequence" in note for note in step.notes)


def test_continuation_indicator_errors(tmp_path):
    text = 'layer { name: "ind" type: "ContinuationIndicator" top: "cont" continuation_indicator_param { time_step: 3 } }\n'
    with pytest.raises(ModelImportError, match=r"Layer 'ind' \(ContinuationIndicator\) \| time_step is 3 and batch_size is 0"):
        _crnn_net(text, tmp_path)
    text = input_layer(("data", (1, 3))) + (
        'layer { name: "ind" type: "ContinuationIndicator" bottom: "data" top: "cont" '
        "continuation_indicator_param { time_step: 3 batch_size: 1 } }\n"
    )
    with pytest.raises(ModelImportError, match=r"Layer 'ind' \(ContinuationIndicator\) \| Has 1 bottoms"):
        _crnn_net(text, tmp_path)


# ------------------------------------------------------------------ a small bidirectional CRNN vs numpy
#   data (N, C, 1, W) -> Reshape (N, C, W) -> Permute [2 0 1] -> x (T=W, N, C)
#   ContinuationIndicator -> cont (T, N): 0 at t=0, 1 after
#   x -> LSTM fwd ------------------------------------------+
#   x -> Reverse(0) -> LSTM bwd -> Reverse(0) -> bwd_out ---+-> Concat(axis 2) -> IP(axis 2) -> Softmax(axis 2)
_C, _H, _K = 4, 3, 5


def _small_crnn(n: int, w: int) -> str:
    return input_layer(("data", (n, _C, 1, w))) + f"""
layer {{ name: "reshape" type: "Reshape" bottom: "data" top: "seq" reshape_param {{ shape {{ dim: 0 dim: 0 dim: -1 }} }} }}
layer {{ name: "permute" type: "Permute" bottom: "seq" top: "x" permute_param {{ order: 2 order: 0 order: 1 }} }}
layer {{ name: "indicator" type: "ContinuationIndicator" top: "cont"
        continuation_indicator_param {{ time_step: {w} batch_size: {n} }} }}
layer {{ name: "fwd" type: "LSTM" bottom: "x" bottom: "cont" top: "fwd" recurrent_param {{ num_output: {_H} }} }}
layer {{ name: "rev_in" type: "Reverse" bottom: "x" top: "x_rev" reverse_param {{ axis: 0 }} }}
layer {{ name: "bwd" type: "LSTM" bottom: "x_rev" bottom: "cont" top: "bwd_rev" recurrent_param {{ num_output: {_H} }} }}
layer {{ name: "rev_out" type: "Reverse" bottom: "bwd_rev" top: "bwd" reverse_param {{ axis: 0 }} }}
layer {{ name: "concat" type: "Concat" bottom: "fwd" bottom: "bwd" top: "both" concat_param {{ axis: 2 }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "both" top: "fc" inner_product_param {{ num_output: {_K} axis: 2 }} }}
layer {{ name: "probs" type: "Softmax" bottom: "fc" top: "probs" softmax_param {{ axis: 2 }} }}
"""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _lstm_ref(x: np.ndarray, cont: np.ndarray, w_x, b, w_h) -> np.ndarray:
    """BVLC Caffe's LSTM, step by step; gate blocks [i, f, o, g]; state starts at zero."""
    t_len, n, _ = x.shape
    h = np.zeros((n, _H), np.float64)
    c = np.zeros((n, _H), np.float64)
    ys = []
    for t in range(t_len):
        keep = cont[t][:, None]
        g = x[t] @ w_x.T + b + (keep * h) @ w_h.T
        i, f, o, gg = np.split(g, 4, axis=1)
        c = keep * _sigmoid(f) * c + _sigmoid(i) * np.tanh(gg)
        h = _sigmoid(o) * np.tanh(c)
        ys.append(h)
    return np.stack(ys)


def _crnn_ref(data: np.ndarray, blobs: dict) -> np.ndarray:
    """The fork semantics in numpy: Permute, ContinuationIndicator, Reverse, two LSTMs, IP, Softmax."""
    n, _, _, w = data.shape
    x = data.reshape(n, _C, w).transpose(2, 0, 1).astype(np.float64)
    cont = np.ones((w, n))
    cont[0] = 0.0
    fwd = _lstm_ref(x, cont, *blobs["fwd"])
    bwd = _lstm_ref(x[::-1], cont, *blobs["bwd"])[::-1]
    both = np.concatenate([fwd, bwd], axis=2)
    w_fc, b_fc = blobs["fc"]
    logits = both @ w_fc.T + b_fc
    e = np.exp(logits - logits.max(axis=2, keepdims=True))
    return e / e.sum(axis=2, keepdims=True)


@pytest.mark.parametrize("batch", ["fixed", "dynamic"])
@pytest.mark.parametrize("w", [6, 1])
def test_small_bidirectional_crnn_matches_numpy(tmp_path, batch, w):
    from rnnrt.ir.config import save_step_graph
    from rnnrt.runtime.session import load

    n = 2
    rng = np.random.default_rng(7)

    def r(*shape):
        return rng.uniform(-0.5, 0.5, shape).astype(np.float32)

    blobs = {
        "fwd": [r(4 * _H, _C), r(4 * _H), r(4 * _H, _H)],
        "bwd": [r(4 * _H, _C), r(4 * _H), r(4 * _H, _H)],
        "fc": [r(_K, 2 * _H), r(_K)],
    }
    step = _crnn_net(_small_crnn(n, w), tmp_path, blobs, batch="dynamic" if batch == "dynamic" else None)
    assert [s.input for s in step.states] == ["fwd.h0", "fwd.c0", "bwd.h0", "bwd.c0"]
    assert step.continuation is None
    cfg = save_step_graph(step, tmp_path / "out")
    images = [rng.standard_normal((n, _C, 1, w)).astype(np.float32) for _ in range(3)]
    with load(cfg, backend="onnxruntime", batch_size=n, threads=1) as session:
        # Each call is one image: the state carried from the call before must not matter.
        for k, image in enumerate(images + images[:1]):
            probs = session.step({"data": image})["probs"]
            np.testing.assert_allclose(probs, _crnn_ref(image, blobs), atol=1e-5, err_msg=f"call {k}")


# ------------------------------------------------------------------ realworld 08 (CRNN, yalecyu/crnn.caffe)
@needs_realworld
def test_realworld_08_converts_and_runs_in_onnxruntime(tmp_path):
    from rnnrt.cli import main
    from rnnrt.runtime.session import load

    assert main(["convert", str(CRNN_08), "--plugins", str(PLUGINS), "-o", str(tmp_path / "out")]) == 0
    cfg_path = tmp_path / "out" / "model.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    assert cfg["source"]["plugins"] == [
        {"name": "crnn", "source": str(PLUGINS / "crnn.py"), "layers": ["ContinuationIndicator", "Permute", "Reverse"]}
    ]
    assert [s["input"] for s in cfg["state"]] == ["lstm1.h0", "lstm1.c0", "lstm2.h0", "lstm2.c0"]
    rng = np.random.default_rng(0)
    images = [rng.uniform(0, 1, (1, 3, 32, 128)).astype(np.float32) for _ in range(2)]
    with load(cfg_path, backend="onnxruntime", threads=1) as session:
        first = [session.step({"data": im})["probs"] for im in images]
        again = session.step({"data": images[0]})["probs"]
    assert first[0].shape == (13, 1, 11) and np.isfinite(first[0]).all()
    np.testing.assert_allclose(first[0].sum(axis=2), 1.0, atol=1e-5)
    # ContinuationIndicator restarts every call: the same image gives the same output after another one.
    np.testing.assert_allclose(again, first[0], atol=1e-6)


@needs_realworld
def test_realworld_08_dynamic_batch_matches_fixed(tmp_path):
    plugins = load_plugins([PLUGINS], entry_points=False)
    fixed = convert_caffe(CRNN_08, schema=plugins.schema)
    dynamic = convert_caffe(CRNN_08, schema=plugins.schema, batch="dynamic")
    assert dynamic.inputs[0].shape == ("batch", 3, 32, 128) and dynamic.outputs[0].shape == (13, "batch", 11)
    images = np.random.default_rng(1).uniform(0, 1, (3, 3, 32, 128)).astype(np.float32)
    both = _ort(dynamic, {"data": images}, 3)["probs"]
    for i in range(3):
        one = _ort(fixed, {"data": images[i : i + 1]}, 1)["probs"]
        np.testing.assert_allclose(both[:, i : i + 1], one, atol=1e-5)


@needs_realworld
def test_list_layers(capsys):
    from rnnrt.cli import main

    assert main(["convert", "--list-layers", "--plugins", str(PLUGINS)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows["Permute"] == ["crnn", str(PLUGINS / "crnn.py")]
    assert rows["Reverse"] == ["crnn", str(PLUGINS / "crnn.py")]
    assert rows["LSTM"] == ["rnnrt", "built-in"]
    assert main(["convert", str(CRNN_08), "--plugins", str(PLUGINS / "missing")]) == 2
    assert "Plugin path" in capsys.readouterr().err


@needs_realworld
@needs_rtx
@pytest.mark.parametrize("batch", ["fixed", "dynamic"])
def test_realworld_08_builds_with_tensorrt_rtx(batch):
    from rnnrt.build.builder import BuildOptions, plan_from_onnx

    plugins = load_plugins([PLUGINS], entry_points=False)
    step = convert_caffe(CRNN_08, schema=plugins.schema, batch="dynamic" if batch == "dynamic" else None)
    axes = {t.name: t.batch_axis for t in step.inputs} | {s.input: s.batch_axis for s in step.states}
    options = BuildOptions(trt_module="tensorrt_rtx", batch=(1, 2, 8) if batch == "dynamic" else None)
    result = plan_from_onnx(step.model, options, batch_axes=axes, state_inputs=[s.input for s in step.states],
                            state_outputs=[s.output for s in step.states])
    assert len(result.plan) > 0
    bindings = {b.name: b.shape for b in result.bindings}
    assert bindings["probs"] == ((13, -1, 11) if batch == "dynamic" else (13, 1, 11))


def test_indicator_replaced_by_an_input_streams(tmp_path):
    """The README's recipe: an Input instead of ContinuationIndicator makes the state carry across calls."""
    from rnnrt.ir.config import save_step_graph
    from rnnrt.runtime.session import load

    n, w = 2, 3
    text = _small_crnn(n, w)
    start = text.index('layer { name: "indicator"')
    end = text.index("\nlayer", start)
    text = text[:start] + f'layer {{ name: "indicator" type: "Input" top: "cont" input_param {{ shape {{ dim: {w} dim: {n} }} }} }}' + text[end:]
    step = _crnn_net(text, tmp_path)
    assert step.continuation is not None and step.continuation.input == "cont"
    image = np.random.default_rng(3).standard_normal((n, _C, 1, w)).astype(np.float32)
    with load(save_step_graph(step, tmp_path / "out"), backend="onnxruntime", batch_size=n, threads=1) as session:
        first = session.step({"data": image})["probs"]
        carried = session.step({"data": image})["probs"]
        session.reset()
        restarted = session.step({"data": image})["probs"]
    assert np.abs(carried - first).max() > 1e-4
    np.testing.assert_allclose(restarted, first, atol=1e-6)


def test_plugin_may_emit_a_custom_domain_op(tmp_path):
    """Room for TensorRT plugin libraries: a converter can emit a node in its own domain."""
    _plugin(tmp_path / "p", "custom_tile", """
        from rnnrt.importers.caffe.registry import add_converter

        @add_converter("caffe", "CustomTile")
        def _(layer, ctx):
            (x,) = ctx.bottoms(layer, 1)
            out = ctx.variable(layer.tops[0], ctx.shape(x), ctx.batch_axis(x))
            ctx.graph.layer(op="CustomTile", name=ctx.unique(layer.name), inputs=[x], outputs=[out],
                            attrs={"plugin_version": "1"}, domain="my.trt.plugins")
            return [out]
    """)
    plugins = load_plugins([tmp_path / "p"], entry_points=False)
    proto, _ = write_net(tmp_path, input_layer(("data", (1, 3))) + 'layer { name: "t" type: "CustomTile" bottom: "data" top: "y" }\n')
    model = convert_caffe(proto, schema=plugins.schema).model
    assert [(n.op_type, n.domain) for n in model.graph.node] == [("CustomTile", "my.trt.plugins")]
    assert {o.domain: o.version for o in model.opset_import}["my.trt.plugins"] == 1
