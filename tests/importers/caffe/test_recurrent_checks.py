"""LSTM/RNN expansion: refusals by whole message, the state and node names users see, the Scan body's types."""

from __future__ import annotations

import onnx
import pytest

from rnnrt.errors import ModelImportError
from rnnrt.importers.caffe.convert import convert_caffe
from tests.importers.caffe.nets import input_layer, write_net


def rec(bottoms, tops=("y",), param="num_output: 4", kind="LSTM", name="rec"):
    b = "".join(f'bottom: "{x}" ' for x in bottoms)
    t = "".join(f'top: "{x}" ' for x in tops)
    return f'layer {{ name: "{name}" type: "{kind}" {b}{t}recurrent_param {{ {param} }} }}\n'


X, CONT = ("x", (3, 2, 5)), ("cont", (3, 2))
EXPOSE = "num_output: 4 expose_hidden: true"


@pytest.mark.parametrize(
    "proto,message",
    [
        (input_layer(("x", (3, 2)), CONT) + rec(["x", "cont"]),
         "Layer 'rec' (LSTM) | Input x 'x' has shape [3, 2].\nNote: Expected T x N x ... (at least 3 axes)."),
        (input_layer(X, ("cont", (3, 1))) + rec(["x", "cont"]),
         "Layer 'rec' (LSTM) cont 'cont' | Has shape [3, 1].\nNote: Expected [3, 2]."),
        (input_layer(X, CONT) + rec(["x", "cont"], param="", kind="RNN"),
         "Layer 'rec' (RNN) | recurrent_param.num_output is not set.\nNote: Expected a positive hidden size."),
        (input_layer(X, CONT) + rec(["x", "cont"], param="num_output: 0"),
         "Layer 'rec' (LSTM) | recurrent_param.num_output is not set.\nNote: Expected a positive hidden size."),
        (input_layer(X, CONT, ("xs", (3, 4))) + rec(["x", "cont", "xs"]),
         "Layer 'rec' (LSTM) | Static input 'xs' has shape [3, 4].\nNote: Expected N x ... with N = 2."),
        (input_layer(X, CONT, ("xs", (2,))) + rec(["x", "cont", "xs"]),
         "Layer 'rec' (LSTM) | Static input 'xs' has shape [2].\nNote: Expected N x ... with N = 2."),
        (input_layer(X, CONT) + rec(["x", "cont"], tops=("y", "z")),
         "Layer 'rec' (LSTM) | Has 2 tops.\nNote: Expected 1 (set expose_hidden to get the final state as tops)."),
        (input_layer(X, CONT, ("h0", (1, 2, 4)), ("c0", (1, 2, 4))) + rec(["x", "cont", "h0", "c0"], param=EXPOSE),
         "Layer 'rec' (LSTM) | Has 1 tops with expose_hidden.\nNote: Expected 3: output, then the final state."),
        (input_layer(X, CONT, ("h0", (1, 2, 4))) + rec(["x", "cont", "h0"], tops=("y", "hT", "cT"), param=EXPOSE, kind="RNN"),
         "Layer 'rec' (RNN) | Has 3 tops with expose_hidden.\nNote: Expected 2: output, then the final state."),
        (input_layer(X, CONT, ("h0", (1, 2, 3)), ("c0", (1, 2, 4))) + rec(["x", "cont", "h0", "c0"], ("y", "a", "b"), EXPOSE),
         "Layer 'rec' (LSTM) initial state 'h0' | Has shape [1, 2, 3].\nNote: Expected [1, 2, 4]."),
        # With a static input the state bottoms come after it.
        (input_layer(X, CONT, ("xs", (2, 3)), ("h0", (1, 2, 4)), ("c0", (1, 2, 3)))
         + rec(["x", "cont", "xs", "h0", "c0"], ("y", "a", "b"), EXPOSE),
         "Layer 'rec' (LSTM) initial state 'c0' | Has shape [1, 2, 3].\nNote: Expected [1, 2, 4]."),
        (input_layer(X) + rec(["x"]), "Layer 'rec' (LSTM) | Has 1 bottoms.\nNote: Expected 2 or 3."),
        (input_layer(X, CONT) + rec(["x", "cont"], param=EXPOSE), "Layer 'rec' (LSTM) | Has 2 bottoms.\nNote: Expected 4 or 5."),
    ],
    ids=["x-rank", "cont-shape", "no-num-output", "num-output-0", "static-n", "static-1d", "tops", "expose-tops-lstm",
         "expose-tops-rnn", "h0-shape", "c0-shape-after-static", "bottoms", "expose-bottoms"],
)
def test_refusals_name_the_layer_and_what_was_expected(tmp_path, proto, message):
    p, w = write_net(tmp_path, proto)
    with pytest.raises(ModelImportError) as err:
        convert_caffe(p, w)
    assert str(err.value) == message


def test_dynamic_batch_refuses_x_with_streams_off_axis_1(tmp_path):
    # The Pooling makes the image's axis 0 the streams; the Reshape keeps them there, so x is N-major.
    proto = input_layer(("img", (3, 2, 4, 4)), CONT) + """
layer { name: "pool" type: "Pooling" bottom: "img" top: "p" pooling_param { pool: MAX kernel_size: 1 stride: 1 } }
layer { name: "r" type: "Reshape" bottom: "p" top: "x" reshape_param { shape { dim: 3 dim: 2 dim: 16 } } }
""" + rec(["x", "cont"])
    p, w = write_net(tmp_path, proto)
    with pytest.raises(ModelImportError) as err:
        convert_caffe(p, w, batch="dynamic")
    assert str(err.value) == (
        "Layer 'rec' (LSTM) | Input x 'x' does not carry the batch on axis 1 (it is on axis 0).\n"
        "Note: Dynamic batch needs x as T x N x ...: the streams must reach axis 1 through every layer before it."
    )


def test_dynamic_batch_refuses_two_recurrent_layers_with_different_n(tmp_path):
    proto = input_layer(X, CONT, ("x2", (3, 3, 5)), ("cont2", (3, 3))) + rec(["x", "cont"]) + rec(
        ["x2", "cont2"], ("y2",), name="rec2")
    p, w = write_net(tmp_path, proto)
    convert_caffe(p, w)  # a fixed batch has no streams to match
    with pytest.raises(ModelImportError) as err:
        convert_caffe(p, w, batch="dynamic")
    assert str(err.value) == (
        "Layer 'rec2' (LSTM) | Input x 'x2' of 'rec2' gives 3 streams where the net has 2 elsewhere.\n"
        "Note: Every stream (batch) axis must hold the same number of streams."
    )


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_state_names_follow_the_layer(tmp_path, kind):
    """The state pairs are what the YAML config, Session.state and snapshots name."""
    p, w = write_net(tmp_path, input_layer(X, CONT) + rec(["x", "cont"], kind=kind, name="enc"))
    step = convert_caffe(p, w, batch="dynamic")
    got = [(s.input, s.output, s.shape, s.batch_axis) for s in step.states]
    want = [("enc.h0", "enc.hT", ("batch", 4), 0), ("enc.c0", "enc.cT", ("batch", 4), 0)]
    assert got == want[: 2 if kind == "LSTM" else 1]
    graph = step.model.graph
    assert [i.name for i in graph.input] == ["x", "cont"] + [s for s, *_ in got]
    assert [o.name for o in graph.output] == ["y"] + [s for _, s, *_ in got]


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("t", [1, 3])
def test_every_node_is_named_after_its_layer(tmp_path, kind, t):
    """TensorRT's layer names (profiles, build errors) are the ONNX node names: each says which Caffe layer it
    expands, in the main graph and in the Scan body (RNN's last op is named after the top it writes)."""
    p, w = write_net(tmp_path, input_layer(("x", (t, 2, 5)), ("cont", (t, 2))) + rec(["x", "cont"], kind=kind))
    graph = convert_caffe(p, w).model.graph
    names = [n.name for n in graph.node]
    bodies = [a.g for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    assert len(bodies) == (t > 1)
    for body in bodies:
        assert body.name.startswith("rec/scan_body")
        names += [n.name for n in body.node]
        assert all(n.name.startswith("rec/step/") for n in body.node)
    assert len(set(names)) == len(names)
    assert all(name.startswith("rec/") or name == "y_node" for name in names), names


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_scan_body_inputs_and_outputs_are_typed_float(tmp_path, kind):
    """ONNX graph inputs and outputs carry their type; the Scan body's state, gx and cont are float32."""
    p, w = write_net(tmp_path, input_layer(X, CONT) + rec(["x", "cont"], kind=kind))
    model = convert_caffe(p, w).model
    (scan,) = [n for n in model.graph.node if n.op_type == "Scan"]
    body = scan.attribute[0].g
    n_state = 2 if kind == "LSTM" else 1
    assert len(body.input) == n_state + 2 and len(body.output) == n_state + 1
    for v in list(body.input) + list(body.output):
        assert v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, v.name
    onnx.checker.check_model(model, full_check=True)
