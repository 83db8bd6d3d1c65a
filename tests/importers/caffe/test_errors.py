"""Bad Caffe input gets a typed error that names the offending thing and what was expected."""

from __future__ import annotations

import numpy as np
import pytest

from rnnrt.importers.caffe.convert import convert_caffe
from rnnrt.errors import ModelImportError, RnnrtError, UnsupportedOpError
from tests.importers.caffe.nets import input_layer, write_net

LSTM = input_layer(("x", (1, 2, 3)), ("cont", (1, 2))) + """
layer { name: "lstm1" type: "LSTM" bottom: "x" bottom: "cont" top: "y" recurrent_param { num_output: 4 } }
"""


def blobs(shapes):
    return [np.zeros(s, np.float32) for s in shapes]


def test_caffemodel_missing_layer_blobs(tmp_path):
    p, w = write_net(tmp_path, LSTM, {"other": blobs([(1,)])})
    with pytest.raises(ModelImportError, match=r"(?s)Layer 'lstm1' \(LSTM\).*has 0 blobs.*Expected 3 blobs"):
        convert_caffe(p, w)


def test_caffemodel_wrong_blob_shape(tmp_path):
    p, w = write_net(tmp_path, LSTM, {"lstm1": blobs([(16, 3), (16,), (16, 5)])})
    with pytest.raises(ModelImportError, match=r"(?s)Layer 'lstm1' \(LSTM\) blob 2 \| Has shape \[16, 5\].*Expected shape \[16, 4\]"):
        convert_caffe(p, w)


def test_legacy_4d_blob_shape_is_accepted(tmp_path):
    p, w = write_net(tmp_path, LSTM, {"lstm1": blobs([(1, 1, 16, 3), (1, 1, 1, 16), (1, 1, 16, 4)])})
    assert len(convert_caffe(p, w).states) == 2


def test_unsupported_layer_lists_supported_types(tmp_path):
    proto = input_layer(("x", (2, 3))) + 'layer { name: "odd" type: "Foo" bottom: "x" top: "y" }'
    p, w = write_net(tmp_path, proto)
    with pytest.raises(UnsupportedOpError, match=r"(?s)Layer 'odd' of type 'Foo'.*Supported types:.*InnerProduct.*LSTM"):
        convert_caffe(p, w)


def test_unsupported_feature_names_layer(tmp_path):
    proto = input_layer(("x", (2, 4, 4))) + 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: MAX kernel_size: 2 } }'
    p, w = write_net(tmp_path, proto)
    with pytest.raises(UnsupportedOpError, match="Layer 'p' \\(Pooling\\) \\| Pooling of a 3-D input .* is not supported"):
        convert_caffe(p, w)


def test_wrong_cont_shape(tmp_path):
    proto = input_layer(("x", (3, 2, 5)), ("cont", (3, 1))) + 'layer { name: "l" type: "LSTM" bottom: "x" bottom: "cont" top: "y" recurrent_param { num_output: 4 } }'
    p, w = write_net(tmp_path, proto)
    with pytest.raises(ModelImportError, match=r"(?s)Layer 'l' \(LSTM\) cont 'cont' \| Has shape \[3, 1\].*Expected \[3, 2\]"):
        convert_caffe(p, w)


def test_wrong_bottom_count(tmp_path):
    proto = input_layer(("a", (2, 3)), ("b", (2, 3))) + 'layer { name: "r" type: "ReLU" bottom: "a" bottom: "b" top: "y" }'
    p, w = write_net(tmp_path, proto)
    with pytest.raises(ModelImportError, match=r"(?s)Layer 'r' \(ReLU\) \| Has 2 bottoms.*Expected 1"):
        convert_caffe(p, w)


def test_malformed_prototxt_line_column(tmp_path):
    p = tmp_path / "bad.prototxt"
    p.write_text('name: "x"\nlayer {\n  name: "a"\n  type: \n}\n')
    with pytest.raises(ModelImportError, match=r"bad\.prototxt:\d+:\d+"):
        convert_caffe(p)


def test_dynamic_batch_follows_streams_folded_with_time_and_features(tmp_path):
    # Flatten(axis 0) of T x N x H folds the streams with time and features: entry (t*N + n)*H + h. This
    # used to be refused ("mixes the batch axis"); the stream axis is now followed and the config says so.
    proto = input_layer(("x", (3, 2, 4)), ("cont", (3, 2))) + """
layer { name: "l" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param { num_output: 4 } }
layer { name: "flat" type: "Flatten" bottom: "h" top: "y" flatten_param { axis: 0 } }
"""
    p, w = write_net(tmp_path, proto)
    step = convert_caffe(p, w, batch="dynamic")
    (y,) = step.outputs
    assert (y.shape, y.batch_axis, y.batch_fold) == (("3*batch*4",), 0, (3, 4))


@pytest.mark.parametrize(
    "layers,match",
    [
        # The streams (axis 1 of 3 x 2 x 4) cannot be one axis of 2 x 12: the split cuts through them.
        ('layer { name: "r" type: "Reshape" bottom: "h" top: "y" reshape_param { shape { dim: 2 dim: 12 } } }',
         r"(?s)Layer 'r' \(Reshape\) \| Reshape \(3, 2, 4\) -> \(2, 12\) mixes the batch axis 1 with other axes"),
        ('layer { name: "fc" type: "InnerProduct" bottom: "h" top: "y" inner_product_param { num_output: 3 axis: 1 } }',
         r"(?s)Layer 'fc' \(InnerProduct\) \| InnerProduct axis 1 flattens the stream axis 1.*axis: 2"),
        ('layer { name: "sm" type: "Softmax" bottom: "h" top: "y" softmax_param { axis: 1 } }',
         r"Layer 'sm' \(Softmax\) \| Softmax over axis 1, the stream axis"),
        ('layer { name: "t" type: "Tile" bottom: "h" top: "y" tile_param { axis: 1 tiles: 2 } }',
         r"Layer 't' \(Tile\) \| Tiles the stream axis 1"),
        ('layer { name: "s" type: "Slice" bottom: "h" top: "a" top: "b" slice_param { axis: 1 } }',
         r"Layer 's' \(Slice\) \| Slices the stream axis 1"),
    ],
)
def test_dynamic_batch_refuses_what_mixes_streams(tmp_path, layers, match):
    proto = input_layer(("x", (3, 2, 4)), ("cont", (3, 2))) + """
layer { name: "l" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param { num_output: 4 } }
""" + layers
    p, w = write_net(tmp_path, proto)
    with pytest.raises(ModelImportError, match=match):
        convert_caffe(p, w, batch="dynamic")
    convert_caffe(p, w)  # a fixed batch has no streams to keep apart


def test_dynamic_batch_refuses_batch_statistics(tmp_path):
    proto = input_layer(("x", (4, 2, 3, 3))) + """
layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { use_global_stats: false } }
"""
    p, w = write_net(tmp_path, proto)
    with pytest.raises(ModelImportError, match=r"(?s)Layer 'bn' \(BatchNorm\) \| BatchNorm with use_global_stats: false.*stored statistics"):
        convert_caffe(p, w, batch="dynamic")


def test_dynamic_batch_refuses_rows_no_layer_maps_to_streams(tmp_path):
    # 6 frames and 2 streams, but no Reshape says how the frames map to the streams.
    proto = input_layer(("frames", (6, 5)), ("x", (1, 2, 3)), ("cont", (1, 2))) + """
layer { name: "l" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param { num_output: 4 } }
layer { name: "fc" type: "InnerProduct" bottom: "frames" top: "f" inner_product_param { num_output: 3 } }
"""
    p, w = write_net(tmp_path, proto)
    with pytest.raises(ModelImportError, match=r"(?s)Tensor 'frames' \| Has 6 entries on its batch axis 0.*runs 2 streams"):
        convert_caffe(p, w, batch="dynamic")


def test_errors_share_one_root():
    assert issubclass(UnsupportedOpError, RnnrtError) and issubclass(ModelImportError, RnnrtError)
