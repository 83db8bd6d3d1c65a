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
    proto = input_layer(("x", (1, 2, 4, 4))) + 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: STOCHASTIC kernel_size: 2 } }'
    p, w = write_net(tmp_path, proto)
    with pytest.raises(UnsupportedOpError, match="Layer 'p' \\(Pooling\\) \\| STOCHASTIC pooling is not supported"):
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


def test_dynamic_batch_through_merging_reshape_is_refused(tmp_path):
    proto = input_layer(("x", (3, 2, 4)), ("cont", (3, 2))) + """
layer { name: "l" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param { num_output: 4 } }
layer { name: "flat" type: "Flatten" bottom: "h" top: "y" flatten_param { axis: 0 } }
"""
    p, w = write_net(tmp_path, proto)
    with pytest.raises(ModelImportError, match="Layer 'flat' .*mixes the batch axis"):
        convert_caffe(p, w, batch="dynamic")


def test_errors_share_one_root():
    assert issubclass(UnsupportedOpError, RnnrtError) and issubclass(ModelImportError, RnnrtError)
