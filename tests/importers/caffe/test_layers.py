"""Each layer family against an independent numpy statement of Caffe's semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.importers.caffe.nets import input_layer, run_net

RNG = np.random.default_rng(7)


def rand(*shape):
    return RNG.uniform(-1, 1, shape).astype(np.float32)


# ------------------------------------------------------------------------------------------------ pooling
def caffe_pool(x, kh, kw, sh, sw, ph, pw, mode):
    n, c, h, w = x.shape
    oh = int(math.ceil((h + 2 * ph - kh) / sh)) + 1
    ow = int(math.ceil((w + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        oh -= (oh - 1) * sh >= h + ph
        ow -= (ow - 1) * sw >= w + pw
    y = np.zeros((n, c, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh - ph, j * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs:he, ws:we]
            y[:, :, i, j] = win.max(axis=(2, 3)) if mode == "MAX" else win.sum(axis=(2, 3)) / size
    return y


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
@pytest.mark.parametrize(
    "hw,k,s,p",
    [((7, 9), (3, 3), (2, 2), (0, 0)), ((8, 8), (3, 2), (2, 3), (1, 0)), ((6, 5), (2, 2), (2, 2), (1, 1)), ((5, 5), (3, 3), (1, 1), (1, 1))],
)
def test_pooling_ceil_mode_and_divisor(tmp_path, mode, hw, k, s, p):
    x = rand(2, 3, *hw)
    proto = input_layer(("x", x.shape)) + f"""
layer {{ name: "pool" type: "Pooling" bottom: "x" top: "y"
  pooling_param {{ pool: {mode} kernel_h: {k[0]} kernel_w: {k[1]} stride_h: {s[0]} stride_w: {s[1]} pad_h: {p[0]} pad_w: {p[1]} }} }}
"""
    y = run_net(tmp_path, proto, None, {"x": x})["y"]
    ref = caffe_pool(x.astype(np.float64), *k, *s, *p, mode)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_global_pooling(tmp_path):
    x = rand(2, 3, 4, 5)
    proto = input_layer(("x", x.shape)) + 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: AVE global_pooling: true } }'
    np.testing.assert_allclose(run_net(tmp_path, proto, None, {"x": x})["y"], x.mean(axis=(2, 3), keepdims=True), atol=1e-6)


# ------------------------------------------------------------------------------------------------ convolution
def test_convolution_group_dilation_pad(tmp_path):
    x = rand(1, 4, 9, 8)
    w, b = rand(6, 2, 3, 2), rand(6)
    proto = input_layer(("x", x.shape)) + """
layer { name: "conv" type: "Convolution" bottom: "x" top: "y"
  convolution_param { num_output: 6 group: 2 kernel_h: 3 kernel_w: 2 pad_h: 2 pad_w: 1 stride_h: 2 stride_w: 1 dilation: 2 } }
"""
    y = run_net(tmp_path, proto, {"conv": [w, b]}, {"x": x})["y"]
    xp = np.pad(x, ((0, 0), (0, 0), (2, 2), (1, 1))).astype(np.float64)
    oh, ow = (9 + 4 - (2 * 2 + 1)) // 2 + 1, (8 + 2 - (2 * 1 + 1)) // 1 + 1
    ref = np.zeros((1, 6, oh, ow))
    for o in range(6):
        g = o // 3
        for i in range(oh):
            for j in range(ow):
                patch = xp[0, 2 * g : 2 * g + 2, i * 2 : i * 2 + 5 : 2, j : j + 3 : 2]
                ref[0, o, i, j] = (patch * w[o]).sum() + b[o]
    np.testing.assert_allclose(y, ref, atol=1e-5)


# ------------------------------------------------------------------------------------------------ inner product / embed
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("axis", [1, 2])
def test_inner_product_axis_transpose(tmp_path, transpose, axis):
    x = rand(2, 3, 4)
    k = int(np.prod(x.shape[axis:]))
    w = rand(k, 5) if transpose else rand(5, k)
    proto = input_layer(("x", x.shape)) + f"""
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  inner_product_param {{ num_output: 5 axis: {axis} transpose: {str(transpose).lower()} bias_term: false }} }}
"""
    y = run_net(tmp_path, proto, {"ip": [w]}, {"x": x})["y"]
    flat = x.reshape(x.shape[:axis] + (k,))
    ref = flat @ (w if transpose else w.T)
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_embed_truncates_indices(tmp_path):
    idx = np.array([[0.0, 2.7], [3.2, 1.0]], np.float32)
    w, b = rand(4, 3), rand(3)
    proto = input_layer(("i", idx.shape)) + 'layer { name: "e" type: "Embed" bottom: "i" top: "y" embed_param { num_output: 3 input_dim: 4 } }'
    y = run_net(tmp_path, proto, {"e": [w, b]}, {"i": idx})["y"]
    np.testing.assert_allclose(y, w[idx.astype(int)] + b, atol=1e-6)


# ------------------------------------------------------------------------------------------------ normalization
def test_batchnorm_scale_factor_then_scale(tmp_path):
    x = rand(2, 3, 4, 4)
    mean, var, factor = rand(3), np.abs(rand(3)) + 0.5, np.array([4.0], np.float32)
    gamma, beta = rand(3), rand(3)
    proto = input_layer(("x", x.shape)) + """
layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" batch_norm_param { use_global_stats: true eps: 0.001 } }
layer { name: "sc" type: "Scale" bottom: "x" top: "y" scale_param { bias_term: true } }
"""
    y = run_net(tmp_path, proto, {"bn": [mean, var, factor], "sc": [gamma, beta]}, {"x": x})["y"]
    m, v = (mean / 4).reshape(1, 3, 1, 1), (var / 4).reshape(1, 3, 1, 1)
    ref = (x - m) / np.sqrt(v + 0.001) * gamma.reshape(1, 3, 1, 1) + beta.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_batchnorm_batch_statistics(tmp_path):
    x = rand(3, 2, 2, 2)
    proto = input_layer(("x", x.shape)) + 'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { use_global_stats: false } }'
    y = run_net(tmp_path, proto, None, {"x": x})["y"]
    m = x.mean(axis=(0, 2, 3), keepdims=True)
    v = ((x - m) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(y, (x - m) / np.sqrt(v + 1e-5), atol=1e-5)


def test_scale_two_bottoms_axis(tmp_path):
    x, s = rand(2, 3, 4), rand(3)
    proto = input_layer(("x", x.shape), ("s", s.shape)) + 'layer { name: "sc" type: "Scale" bottom: "x" bottom: "s" top: "y" scale_param { axis: 1 } }'
    np.testing.assert_allclose(run_net(tmp_path, proto, None, {"x": x, "s": s})["y"], x * s.reshape(1, 3, 1), atol=1e-6)


def test_lrn_across_channels(tmp_path):
    x = rand(1, 6, 3, 3)
    proto = input_layer(("x", x.shape)) + 'layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }'
    y = run_net(tmp_path, proto, None, {"x": x})["y"]
    sq = np.pad(x**2, ((0, 0), (1, 1), (0, 0), (0, 0)))
    s = sum(sq[:, i : i + 6] for i in range(3))
    np.testing.assert_allclose(y, x / (2 + 0.5 / 3 * s) ** 0.75, atol=1e-5)



def caffe_lrn_within_channel(x, size, alpha, beta):
    """numpy statement of Caffe's LRNLayer WITHIN_CHANNEL path (lrn_layer.cpp, LayerSetUp/WithinChannelForward):
    split -> Power(power 2) -> Pooling(AVE, pad (size-1)/2, kernel size, stride 1) -> Power(power -beta,
    scale alpha, shift 1) -> Eltwise PROD with the input. The AVE pool divides each window by its size
    clipped to the padded input (PoolingLayer::Forward_cpu), k is never read."""
    n, c, h, w = x.shape
    pad = (size - 1) // 2
    sq = np.pad(x.astype(np.float64) ** 2, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    pooled = np.zeros(x.shape)
    for i in range(h):
        for j in range(w):
            hs, ws = i - pad, j - pad
            he, we = min(hs + size, h + pad), min(ws + size, w + pad)
            pool_size = (he - hs) * (we - ws)
            pooled[:, :, i, j] = sq[:, :, hs + pad : he + pad, ws + pad : we + pad].sum(axis=(2, 3)) / pool_size
    return x * (1.0 + alpha * pooled) ** (-beta)


@pytest.mark.parametrize("size,hw", [(3, (5, 4)), (5, (3, 6)), (1, (2, 2))])
def test_lrn_within_channel(tmp_path, size, hw):
    x = rand(2, 3, *hw) * 2
    proto = input_layer(("x", x.shape)) + f"""
layer {{ name: "n" type: "LRN" bottom: "x" top: "y"
  lrn_param {{ local_size: {size} alpha: 0.7 beta: 0.6 k: 5 norm_region: WITHIN_CHANNEL }} }}
"""
    y = run_net(tmp_path, proto, None, {"x": x})["y"]
    np.testing.assert_allclose(y, caffe_lrn_within_channel(x, size, 0.7, 0.6), rtol=1e-5, atol=1e-6)


def caffe_stochastic_pool_test(x, kh, kw, sh, sw):
    """numpy statement of Caffe's test-phase STOCHASTIC pooling, StoPoolForwardTest (pooling_layer.cu; the CPU
    Forward_cpu has no STOCHASTIC path): windows start at ph*stride, end at min(start + kernel, size) (no
    padding), output sum(x^2) / (FLT_MIN + sum(x)); the output size is the ceil-mode one of
    PoolingLayer::Reshape."""
    n, c, h, w = x.shape
    oh = int(math.ceil((h - kh) / sh)) + 1
    ow = int(math.ceil((w - kw) / sw)) + 1
    y = np.zeros((n, c, oh, ow), np.float32)
    flt_min = np.float32(np.finfo(np.float32).tiny)
    for i in range(oh):
        for j in range(ow):
            win = x[:, :, i * sh : min(i * sh + kh, h), j * sw : min(j * sw + kw, w)].astype(np.float32)
            cumsum = flt_min + win.sum(axis=(2, 3), dtype=np.float32)
            cumvalues = (win * win).sum(axis=(2, 3), dtype=np.float32)
            y[:, :, i, j] = cumvalues / cumsum
    return y


@pytest.mark.parametrize("hw,k,s", [((6, 6), (2, 2), (2, 2)), ((7, 5), (3, 2), (2, 2)), ((4, 4), (4, 4), (1, 1))])
def test_stochastic_pooling_test_phase(tmp_path, hw, k, s):
    # Non-negative activations (stochastic pooling follows a ReLU), some windows all zero.
    x = np.maximum(rand(2, 3, *hw), 0)
    x[0, 0] = 0
    proto = input_layer(("x", x.shape)) + f"""
layer {{ name: "pool" type: "Pooling" bottom: "x" top: "y"
  pooling_param {{ pool: STOCHASTIC kernel_h: {k[0]} kernel_w: {k[1]} stride_h: {s[0]} stride_w: {s[1]} }} }}
"""
    y = run_net(tmp_path, proto, None, {"x": x})["y"]
    ref = caffe_stochastic_pool_test(x, *k, *s)
    assert y.shape == ref.shape
    assert np.all(np.isfinite(y)) and np.all(y[0, 0] == 0)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_stochastic_pooling_with_pad_is_refused_like_caffe(tmp_path):
    from rnnrt.errors import ModelImportError

    proto = input_layer(("x", (1, 1, 4, 4))) + (
        'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: STOCHASTIC kernel_size: 2 pad: 1 } }'
    )
    with pytest.raises(ModelImportError, match=r"(?s)Layer 'p' \(Pooling\) \| STOCHASTIC pooling with pad 1x1.*only for MAX and AVE"):
        run_net(tmp_path, proto, None, {"x": np.zeros((1, 1, 4, 4), np.float32)})

# ------------------------------------------------------------------------------------------------ element-wise and shapes
def test_eltwise_sum_coeff_prod_max(tmp_path):
    a, b = rand(2, 3), rand(2, 3)
    proto = input_layer(("a", a.shape), ("b", b.shape)) + """
layer { name: "s" type: "Eltwise" bottom: "a" bottom: "b" top: "s" eltwise_param { operation: SUM coeff: 2 coeff: -0.5 } }
layer { name: "p" type: "Eltwise" bottom: "a" bottom: "b" top: "p" eltwise_param { operation: PROD } }
layer { name: "m" type: "Eltwise" bottom: "a" bottom: "b" top: "m" eltwise_param { operation: MAX } }
"""
    out = run_net(tmp_path, proto, None, {"a": a, "b": b})
    np.testing.assert_allclose(out["s"], 2 * a - 0.5 * b, atol=1e-6)
    np.testing.assert_allclose(out["p"], a * b, atol=1e-6)
    np.testing.assert_allclose(out["m"], np.maximum(a, b), atol=1e-6)


def test_slice_points_concat_legacy_dim(tmp_path):
    x = rand(2, 7, 3)
    proto = input_layer(("x", x.shape)) + """
layer { name: "sl" type: "Slice" bottom: "x" top: "a" top: "b" top: "c" slice_param { axis: 1 slice_point: 2 slice_point: 3 } }
layer { name: "cat" type: "Concat" bottom: "c" bottom: "a" top: "y" concat_param { concat_dim: 1 } }
"""
    out = run_net(tmp_path, proto, None, {"x": x})
    np.testing.assert_array_equal(out["b"], x[:, 2:3])
    np.testing.assert_array_equal(out["y"], np.concatenate([x[:, 3:], x[:, :2]], axis=1))


@pytest.mark.parametrize(
    "dims,axis,num_axes,expected",
    [([0, -1], 0, -1, (2, 12)), ([2, 2], 2, 1, (2, 3, 2, 2)), ([-1], 1, -1, (2, 12)), ([3, 0, 2], 0, 2, None)],
)
def test_reshape_rules(tmp_path, dims, axis, num_axes, expected):
    x = rand(2, 3, 4)
    proto = input_layer(("x", x.shape)) + f"""
layer {{ name: "r" type: "Reshape" bottom: "x" top: "y"
  reshape_param {{ shape {{ {" ".join(f"dim: {d}" for d in dims)} }} axis: {axis} num_axes: {num_axes} }} }}
"""
    if expected is None:
        from rnnrt.errors import ModelImportError

        with pytest.raises(ModelImportError, match="Reshape"):
            run_net(tmp_path, proto, None, {"x": x})
        return
    y = run_net(tmp_path, proto, None, {"x": x})["y"]
    assert y.shape == expected
    np.testing.assert_array_equal(y.ravel(), x.ravel())


def test_flatten_end_axis_tile_power(tmp_path):
    x = rand(2, 3, 4, 5)
    proto = input_layer(("x", x.shape)) + """
layer { name: "f" type: "Flatten" bottom: "x" top: "f" flatten_param { axis: 1 end_axis: 2 } }
layer { name: "t" type: "Tile" bottom: "f" top: "t" tile_param { axis: 2 tiles: 2 } }
layer { name: "p" type: "Power" bottom: "t" top: "y" power_param { power: 2 scale: 0.5 shift: 1 } }
"""
    y = run_net(tmp_path, proto, None, {"x": x})["y"]
    ref = (1 + 0.5 * np.tile(x.reshape(2, 12, 5), (1, 1, 2))) ** 2
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_leaky_relu_sigmoid_tanh_dropout(tmp_path):
    x = rand(3, 4)
    proto = input_layer(("x", x.shape)) + """
layer { name: "r" type: "ReLU" bottom: "x" top: "r" relu_param { negative_slope: 0.1 } }
layer { name: "d" type: "Dropout" bottom: "r" top: "r" dropout_param { dropout_ratio: 0.5 } }
layer { name: "s" type: "Sigmoid" bottom: "r" top: "s" }
layer { name: "t" type: "TanH" bottom: "s" top: "y" }
"""
    y = run_net(tmp_path, proto, None, {"x": x})["y"]
    np.testing.assert_allclose(y, np.tanh(1 / (1 + np.exp(-np.where(x > 0, x, 0.1 * x)))), atol=1e-6)
