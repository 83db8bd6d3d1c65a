"""Caffe layer parameters that Caffe itself rejects: a ModelImportError naming the layer, at conversion."""

from __future__ import annotations

import numpy as np
import pytest

import rnnrt
from rnnrt.ir.config import save_step_graph
from rnnrt.errors import ModelImportError, RnnrtError
from rnnrt.importers.caffe.convert import convert_caffe
from tests.hostile.helpers import input_layer, run_capped, tree

IMG = input_layer("data", 1, 2, 4, 4)


def conv(params: str) -> str:
    return IMG + f'layer {{ name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param {{ num_output: 2 {params} }} }}\n'


def pool(params: str) -> str:
    return IMG + f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ pool: MAX {params} }} }}\n'


LSTM_T0 = (
    input_layer("x", 0, 1, 4)
    + input_layer("cont", 0, 1)
    + 'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param { num_output: 3 } }\n'
)

# (prototxt, message regex): each converted (or crashed with ZeroDivisionError) before these checks.
CASES = {
    "conv kernel_size 0": (conv("kernel_size: 0"), r"Layer 'c' \(Convolution\) \| kernel_size is 0.\nNote: Expected kernel_size > 0"),
    "conv kernel_h 0": (conv("kernel_h: 0 kernel_w: 2"), r"Layer 'c' \(Convolution\) \| kernel_size is 0"),
    "conv dilation 0": (conv("kernel_size: 2 dilation: 0"), r"Layer 'c' \(Convolution\) \| dilation is 0"),
    "conv stride 0": (conv("kernel_size: 2 stride: 0"), r"Layer 'c' \(Convolution\) \| stride is 0"),
    "conv group 0": (conv("kernel_size: 2 group: 0"), r"Layer 'c' \(Convolution\) \| group is 0"),
    "conv group 3": (conv("kernel_size: 2 group: 3"), r"Layer 'c' \(Convolution\) \| group 3 does not divide input channels 2"),
    "conv kernel > input": (conv("kernel_size: 5"), r"Layer 'c' \(Convolution\) \| The kernel \[5, 5\] \(pad \[0, 0\]\) is larger than its input \[4, 4\]"),
    "conv dilated kernel > input": (conv("kernel_size: 3 dilation: 2"), r"Layer 'c' \(Convolution\) \| The kernel \[5, 5\]"),
    "pool kernel 0": (pool("kernel_size: 0"), r"Layer 'p' \(Pooling\) \| kernel_size is 0"),
    "pool stride 0": (pool("kernel_size: 2 stride: 0"), r"Layer 'p' \(Pooling\) \| stride is 0"),
    "pool pad == kernel": (pool("kernel_size: 2 pad: 2"), r"Layer 'p' \(Pooling\) \| pad \[2, 2\] is not below the kernel \[2, 2\]"),
    "pool kernel > input": (pool("kernel_size: 6"), r"Layer 'p' \(Pooling\) \| The kernel \[6, 6\] .* is larger than its input \[4, 4\]"),
    "LRN even local_size": (
        IMG + 'layer { name: "n" type: "LRN" bottom: "data" top: "n" lrn_param { local_size: 4 } }\n',
        r"Layer 'n' \(LRN\) \| local_size is 4.\nNote: Expected an odd local_size",
    ),
    "Input dim 0 as T": (LSTM_T0, r"Layer 'x' \(Input\) \| Top 'x' has shape \[0, 1, 4\]"),
    "net input_shape dim 0": (
        'input: "data"\ninput_shape { dim: 1 dim: 0 }\nlayer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n',
        r"Net input 'data' \| Has shape \[1, 0\]",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_parameter_names_the_layer(case, tmp_path):
    text, match = CASES[case]
    (tmp_path / "net.prototxt").write_text(text)
    before = tree(tmp_path)
    with pytest.raises(ModelImportError, match=match) as info:
        save_step_graph(convert_caffe(tmp_path / "net.prototxt"), tmp_path / "out")
    assert isinstance(info.value, RnnrtError)
    assert tree(tmp_path) == before  # nothing written


def test_bad_parameters_under_a_memory_cap(tmp_path):
    # All cases again in one child process with a 1 GiB address-space limit.
    for case, (text, _) in CASES.items():
        (tmp_path / f"{abs(hash(case))}.prototxt").write_text(text)
    code = f"""
import glob
from rnnrt.importers.caffe.convert import convert_caffe
from rnnrt.errors import ModelImportError
for p in sorted(glob.glob({str(tmp_path)!r} + '/*.prototxt')):
    try:
        convert_caffe(p)
    except ModelImportError:
        continue
    raise SystemExit('converted: ' + p)
"""
    assert run_capped(code, cap=1 << 30) == {"ok": True}


def test_dynamic_batch_concat_along_the_stream_axis(tmp_path):
    # Stacking whole copies of the streams on the stream axis is followed (rows o*N + n, batch_fold
    # [2, 1], see docs/caffe_streams.md); stacking blobs whose stream axis folds features is refused.
    lstm = (
        input_layer("x", 1, 2, 4) + input_layer("cont", 1, 2)
        + 'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param { num_output: 3 } }\n'
    )
    (tmp_path / "net.prototxt").write_text(
        lstm + 'layer { name: "cat" type: "Concat" bottom: "h" bottom: "h" top: "y" concat_param { axis: 1 } }\n')
    (y,) = convert_caffe(tmp_path / "net.prototxt", batch="dynamic").outputs
    assert (y.batch_axis, y.batch_fold) == (1, (2, 1))
    (tmp_path / "net.prototxt").write_text(
        lstm + 'layer { name: "flat" type: "Flatten" bottom: "h" top: "f" flatten_param { axis: 1 } }\n'
        + 'layer { name: "cat" type: "Concat" bottom: "f" bottom: "f" top: "y" concat_param { axis: 1 } }\n')
    with pytest.raises(ModelImportError, match=r"Layer 'cat' \(Concat\) \| Concatenates along the stream axis 1 bottoms that are not"):
        convert_caffe(tmp_path / "net.prototxt", batch="dynamic")


def test_stateless_concat_on_axis_0_loads_and_runs(tmp_path):
    # Before: converted, then load said "Bindings disagree on the batch size" (input 3 rows, output 6).
    text = input_layer("d", 3, 4) + 'layer { name: "c" type: "Concat" bottom: "d" bottom: "d" top: "c" concat_param { axis: 0 } }\n'
    (tmp_path / "net.prototxt").write_text(text)
    yaml_path = save_step_graph(convert_caffe(tmp_path / "net.prototxt"), tmp_path / "out")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    with rnnrt.load(yaml_path) as s:
        np.testing.assert_array_equal(s.step({"d": x})["c"], np.concatenate([x, x]))


def test_negative_embed_ids_are_rejected_not_wrapped(tmp_path):
    # Caffe rejects ids outside [0, input_dim); ONNX Gather would wrap -1 to the last row silently.
    text = input_layer("d", 1, 3) + 'layer { name: "e" type: "Embed" bottom: "d" top: "e" embed_param { num_output: 2 input_dim: 5 } }\n'
    (tmp_path / "net.prototxt").write_text(text)
    yaml_path = save_step_graph(convert_caffe(tmp_path / "net.prototxt"), tmp_path / "out")
    with rnnrt.load(yaml_path) as s:
        ok = s.step({"d": np.array([[0, 4, 2]], np.float32)})["e"]
        assert ok.shape == (1, 3, 2)
        for bad in (-1, 5):
            with pytest.raises(RnnrtError, match=r"Gather|out of data bounds|indices"):
                s.step({"d": np.array([[0, bad, 2]], np.float32)})
