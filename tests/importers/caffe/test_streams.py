"""The stream (batch) axis followed through whole Caffe nets.

Every golden case (LRCN-style g1-g4 included) and every BVLC-loadable realworld prototxt converts with
``--batch dynamic``; run with the batch it was recorded with it equals real Caffe (golden, every call)
or the fixed-batch conversion (realworld, every call); a StreamPool over it gives each stream the same
outputs as that stream alone; folded rows (``T*N`` time-major frames) build with a batch profile.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnnrt
from rnnrt.ir.config import load_config, save_step_graph
from rnnrt.importers.caffe.convert import convert_caffe
from rnnrt.runtime.pool import StreamPool
from tests.conftest import REALWORLD, golden_cases, realworld_loadable
from tests.importers.caffe.streams import pack, packed_vs_alone, random_frame, unpack

ATOL, RTOL = 1e-5, 1e-4


def recorded_streams(cfg, feeds) -> int:
    """The number of streams N the feeds were recorded with (batch entries over the fold)."""
    for t in cfg.inputs:
        if t.batch_axis is not None and t.name in feeds:
            outer, inner = t.batch_fold or (1, 1)
            return feeds[t.name].shape[t.batch_axis] // (outer * inner)
    raise AssertionError("no input with a batch axis")


@pytest.mark.parametrize("name", golden_cases())
def test_dynamic_golden_case_every_call(golden, dynamic, name):
    case = golden(name)
    path = dynamic(name)
    cfg = load_config(path)
    n = recorded_streams(cfg, case.call(0)[0])
    with rnnrt.load(path, backend="onnxruntime", batch_size=n) as session:
        for k in range(case.num_calls):
            feeds, expected = case.call(k)
            got = session.step(feeds)
            assert set(got) == set(expected)
            for out, ref in expected.items():
                np.testing.assert_allclose(got[out], ref, atol=ATOL, rtol=RTOL, err_msg=f"{name} call {k} {out}")


def test_lrcn_config_says_how_rows_map_to_streams(dynamic):
    """g1: T*N frames (row t*N + n) through the CNN, Reshape to T x N x D before the LSTM."""
    cfg = load_config(dynamic("g1_lrcn_conv_lstm"))
    frames, cont = (next(t for t in cfg.inputs if t.name == n) for n in ("frames", "cont"))
    assert (list(frames.shape), frames.batch_axis, frames.batch_fold) == (["4*batch", 3, 12, 12], 0, (4, 1))
    assert (list(cont.shape), cont.batch_axis, cont.batch_fold) == ([4, "batch"], 1, None)
    assert frames.batch_entries(3) == 12
    text = (cfg.model_path.with_suffix(".yaml")).read_text()
    assert "batch_fold: [4, 1]" in text


@pytest.mark.parametrize(
    "name,layer,literal", [("g3_crnn_slice_concat", "toseq", "1"), ("g4_mixed_ops", "ctx_r", "2")]
)
def test_literal_stream_dim_is_rewritten_with_a_note(golden, name, layer, literal):
    case = golden(name)
    step = convert_caffe(case.prototxt, case.caffemodel, batch="dynamic")
    note = next(n for n in step.notes if f"Reshape {layer!r}" in n)
    assert f"writes a literal {literal} on the stream axis" in note and "-1" in note


@pytest.mark.parametrize("name", golden_cases())
def test_pool_gives_each_stream_its_solo_outputs(dynamic, name):
    """Three streams in a pool of four slots, one reset mid-way, each equals itself in its own Session."""
    path = dynamic(name)
    cfg = load_config(path)
    rng = np.random.default_rng(3)
    k_streams, ticks, reset_at = 3, 3, (1, 2)  # stream 1 resets before tick 2
    frames = [[random_frame(cfg, rng, with_cont=False) for _ in range(ticks)] for _ in range(k_streams)]
    solo = []
    for s in range(k_streams):
        with rnnrt.load(path, backend="onnxruntime", batch_size=1, threads=1) as session:
            outs = []
            for t in range(ticks):
                if (s, t) == reset_at:
                    session.reset()
                outs.append(session.step(frames[s][t]))
            solo.append(outs)
    with rnnrt.load(path, backend="onnxruntime", batch_size=4, threads=1) as session:
        pool = StreamPool(session)
        for s in range(k_streams):
            pool.open(s)
        for t in range(ticks):
            if t == reset_at[1]:
                pool.reset(reset_at[0])
            got = pool.step({s: frames[s][t] for s in range(k_streams)})
            for s in range(k_streams):
                for out, ref in solo[s][t].items():
                    np.testing.assert_allclose(got[s][out], ref, rtol=1e-6, atol=1e-6, err_msg=f"{name} stream {s} tick {t} {out}")


def test_session_batch_of_folded_rows_equals_streams_alone(dynamic):
    """g1 with 3 streams in one Session: the T*N frames packed time-major give each stream its own output."""
    path = dynamic("g1_lrcn_conv_lstm")
    cfg = load_config(path)
    rng = np.random.default_rng(5)
    frames = [random_frame(cfg, rng) for _ in range(3)]
    with rnnrt.load(path, backend="onnxruntime", batch_size=3) as session:
        batch = session.step(pack(cfg.inputs, frames))
        with pytest.raises(rnnrt.errors.BindingError, match=r"Input 'frames' \| Received shape \(8, 3, 12, 12\)"):
            session.step({**pack(cfg.inputs, frames), "frames": np.zeros((8, 3, 12, 12), np.float32)})
    spec = cfg.outputs[0]
    for k, frame in enumerate(frames):
        with rnnrt.load(path, backend="onnxruntime", batch_size=1) as session:
            alone = session.step(frame)
        np.testing.assert_allclose(unpack(spec, batch[spec.name], 3, k), alone[spec.name], rtol=1e-6, atol=1e-6)


def test_folded_rows_get_a_scaled_batch_profile(dynamic, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    from rnnrt.build.builder import BuildOptions, plan_from_config

    result = plan_from_config(dynamic("g1_lrcn_conv_lstm"), tmp_path / "g1.plan",
                              BuildOptions(trt_module="tensorrt_rtx", batch=(1, 2, 8)))
    assert result.profile == (1, 2, 8)
    frames = next(b for b in result.bindings if b.name == "frames")
    assert [list(s) for s in frames.profile] == [[4, 3, 12, 12], [8, 3, 12, 12], [32, 3, 12, 12]]


# ------------------------------------------------------------------------------------------ realworld
def _save(step, tmp_path, tag):
    return save_step_graph(step, tmp_path / tag)


@pytest.mark.slow
@pytest.mark.parametrize("name", realworld_loadable())
def test_realworld_dynamic_equals_fixed_every_call(name, tmp_path):
    fixed_path = _save(convert_caffe(REALWORLD / name), tmp_path, "fixed")
    dyn_path = _save(convert_caffe(REALWORLD / name, batch="dynamic"), tmp_path, "dynamic")
    fixed_cfg, dyn_cfg = load_config(fixed_path), load_config(dyn_path)
    rng = np.random.default_rng(0)
    calls = []
    for _ in range(2):  # two calls, state carried, as in load_results.json
        feeds = {}
        for t in fixed_cfg.inputs:
            if "cont" in t.name or "marker" in t.name:
                feeds[t.name] = (rng.random(t.shape) > 0.2).astype(np.float32)
            elif "sentence" in t.name:
                feeds[t.name] = rng.integers(0, 100, t.shape).astype(np.float32)
            else:
                feeds[t.name] = rng.uniform(-1, 1, t.shape).astype(np.float32)
        calls.append(feeds)
    with rnnrt.load(fixed_path, backend="onnxruntime") as session:
        expected = [session.step(f) for f in calls]
    n = recorded_streams(dyn_cfg, calls[0])
    with rnnrt.load(dyn_path, backend="onnxruntime", batch_size=n) as session:
        for k, feeds in enumerate(calls):
            got = session.step(feeds)
            for out, ref in expected[k].items():
                np.testing.assert_allclose(got[out], ref, rtol=1e-5, atol=1e-6, err_msg=f"{name} call {k} {out}")


@pytest.mark.slow
@pytest.mark.parametrize("name", realworld_loadable())
def test_realworld_pool_gives_each_stream_its_solo_outputs(name, tmp_path):
    path = _save(convert_caffe(REALWORLD / name, batch="dynamic"), tmp_path, "dynamic")
    cfg = load_config(path)
    rng = np.random.default_rng(1)
    frames = [[random_frame(cfg, rng, with_cont=False, vocab=100) for _ in range(2)] for _ in range(2)]
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as session:
        solo = []
        for s in range(2):
            session.reset()
            solo.append([session.step(f) for f in frames[s]])
    with rnnrt.load(path, backend="onnxruntime", batch_size=2) as session:
        pool = StreamPool(session)
        for s in range(2):
            pool.open(s)
        for t in range(2):
            got = pool.step({s: frames[s][t] for s in range(2)})
            for s in range(2):
                for out, ref in solo[s][t].items():
                    np.testing.assert_allclose(got[s][out], ref, rtol=1e-5, atol=1e-6, err_msg=f"{name} stream {s} {out}")


# ------------------------------------------------------------------------------------------ Triton export
def _ort(model_or_path):
    import onnxruntime as ort

    data = model_or_path if isinstance(model_or_path, (str, bytes)) else str(model_or_path)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("source", ["g1_lrcn_conv_lstm", "04_lisaanne_LRCN_evaluate_deploy_lstm_lstm.prototxt"])
def test_triton_export_of_folded_rows_drives_like_each_sequence_alone(golden, tmp_path, source):
    """The exported graph takes one sequence's T frames per batch row (Triton batches the first dim) and
    START drives the T*N continuation (g1: cont T x N; 04: clip markers as T*N rows); three sequences,
    one restarted, equal each sequence through the step graph alone."""
    from rnnrt.serve.triton import export_triton

    if source.endswith(".prototxt"):
        if not (REALWORLD / source).is_file():
            pytest.skip("realworld prototxts not found")
        step = convert_caffe(REALWORLD / source, batch="dynamic")
    else:
        case = golden(source)
        step = convert_caffe(case.prototxt, case.caffemodel, batch="dynamic")
    path = save_step_graph(step, tmp_path / "model")
    cfg = load_config(path)
    model_dir = export_triton(path, tmp_path / "repo", engine="onnx")
    served = _ort(model_dir / "1" / "model.onnx")
    alone = _ort(cfg.model_path)
    cont = cfg.continuation.input
    rng = np.random.default_rng(2)
    B, starts = 3, {0: [0, 1, 2], 2: [1]}
    solo_state = [{s.input: np.zeros([1 if isinstance(d, str) else d for d in s.shape], np.float32) for s in cfg.state}
                  for _ in range(B)]
    state = {s.input: np.zeros([B] + [d for d in s.shape if not isinstance(d, str)], np.float32) for s in cfg.state}
    names = [o.name for o in served.get_outputs()]
    for k in range(3):
        frames = [random_frame(cfg, rng, with_cont=False) for _ in range(B)]
        start = np.zeros((B, 1), np.float32)
        for slot in starts.get(k, []):
            start[slot] = 1
            for v in state.values():
                v[slot] = 0
        feeds = {t.name: np.stack([f[t.name] for f in frames]) if t.batch_fold else
                 np.concatenate([np.moveaxis(f[t.name], t.batch_axis, 0) for f in frames])
                 for t in cfg.inputs if t.name != cont}
        feeds[cont] = np.where(start == 1, 0.0, 1.0).astype(np.float32)
        got = dict(zip(names, served.run(names, {**feeds, **state})))
        state = {s.input: got[s.output] for s in cfg.state}
        for b in range(B):
            c_spec = next(t for t in cfg.inputs if t.name == cont)
            c = np.ones([1 if isinstance(d, str) else d for d in c_spec.shape] if not c_spec.batch_fold
                        else [c_spec.batch_fold[0] * c_spec.batch_fold[1] if i == c_spec.batch_axis else d
                              for i, d in enumerate(c_spec.shape)], np.float32)
            if start[b, 0]:
                if c_spec.batch_fold:
                    c[: c_spec.batch_fold[1]] = 0  # rows of t = 0
                else:
                    c[0] = 0
            ref = dict(zip([o.name for o in alone.get_outputs()],
                           alone.run(None, {**frames[b], cont: c, **solo_state[b]})))
            solo_state[b] = {s.input: ref[s.output] for s in cfg.state}
            for t in cfg.outputs:
                want = ref[t.name] if t.batch_fold else np.moveaxis(ref[t.name], t.batch_axis, 0)[0]
                np.testing.assert_allclose(got[t.name][b], want, rtol=1e-5, atol=1e-6, err_msg=f"{source} step {k} seq {b}")


# ------------------------------------------------------------------------------------------ small nets
def _step(tmp_path, prototxt, batch="dynamic"):
    from tests.importers.caffe.nets import write_net

    proto, weights = write_net(tmp_path, prototxt)
    return convert_caffe(proto, weights, batch=batch)


def test_t_by_1_by_e_captioner_makes_t_n_rows(tmp_path):
    """Per-frame features (T x E, one stream) reshaped to T x 1 x E with literal dims in front of the LSTM:
    the 1 is the stream axis, so the T rows become T*N time-major rows."""
    from tests.importers.caffe.nets import input_layer

    step = _step(tmp_path, input_layer(("feats", (3, 5)), ("cont", (3, 1))) + """
layer { name: "embed" type: "InnerProduct" bottom: "feats" top: "e" inner_product_param { num_output: 4 } }
layer { name: "r" type: "Reshape" bottom: "e" top: "seq" reshape_param { shape { dim: 3 dim: 1 dim: 4 } } }
layer { name: "lstm" type: "LSTM" bottom: "seq" bottom: "cont" top: "h" recurrent_param { num_output: 6 } }
""")
    feats = next(t for t in step.inputs if t.name == "feats")
    assert (feats.shape, feats.batch_axis, feats.batch_fold) == (("3*batch", 5), 0, (3, 1))
    assert any("Reshape 'r' writes a literal 1 on the stream axis" in n and "[3, -1, 4]" in n for n in step.notes)
    assert packed_vs_alone(step) == 0.0


def test_in_place_reshape_of_clip_markers(tmp_path):
    """LRCN clip markers reshaped in place (top == bottom): the input keeps its T*N rows on axis 0."""
    from tests.importers.caffe.nets import input_layer

    step = _step(tmp_path, input_layer(("frames", (6, 4)), ("markers", (6, 1))) + """
layer { name: "rf" type: "Reshape" bottom: "frames" top: "frames" reshape_param { shape { dim: 3 dim: 2 dim: 4 } } }
layer { name: "rm" type: "Reshape" bottom: "markers" top: "markers" reshape_param { shape { dim: 3 dim: 2 } } }
layer { name: "lstm" type: "LSTM" bottom: "frames" bottom: "markers" top: "h" recurrent_param { num_output: 5 } }
layer { name: "fc" type: "InnerProduct" bottom: "h" top: "y" inner_product_param { num_output: 2 axis: 2 } }
""")
    by_name = {t.name: t for t in step.inputs}
    assert (by_name["markers"].shape, by_name["markers"].batch_fold) == (("3*batch", 1), (3, 1))
    assert step.continuation is not None and (step.continuation.input, step.continuation.batch_axis,
                                              step.continuation.time_axis) == ("markers", 0, 0)
    assert packed_vs_alone(step) == 0.0


def test_image_feature_added_to_lstm_output_is_t_by_n(tmp_path):
    """NOC-style: a 1 x 1 x D image feature through InnerProduct(axis 2) added to the LSTM's 1 x N x V
    output holds its stream on axis 1, like the output it is added to."""
    from tests.importers.caffe.nets import input_layer

    step = _step(tmp_path, input_layer(("words", (1, 1, 3)), ("cont", (1, 1)), ("img", (1, 1, 4))) + """
layer { name: "lstm" type: "LSTM" bottom: "words" bottom: "cont" top: "h" recurrent_param { num_output: 5 } }
layer { name: "lm" type: "InnerProduct" bottom: "h" top: "a" inner_product_param { num_output: 6 axis: 2 } }
layer { name: "im" type: "InnerProduct" bottom: "img" top: "b" inner_product_param { num_output: 6 axis: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "y" }
""")
    img = next(t for t in step.inputs if t.name == "img")
    assert (img.shape, img.batch_axis) == ((1, "batch", 4), 1)
    assert packed_vs_alone(step) == 0.0


@pytest.mark.parametrize("name", golden_cases())
def test_golden_streams_packed_equal_alone_in_the_step_graph(golden, name):
    case = golden(name)
    assert packed_vs_alone(convert_caffe(case.prototxt, case.caffemodel, batch="dynamic")) == 0.0


def test_lstm_output_folded_back_to_t_n_rows(tmp_path):
    """T x N x H reshaped back to T*N rows for a per-frame classifier: the output keeps row t*N + n."""
    from tests.importers.caffe.nets import input_layer

    step = _step(tmp_path, input_layer(("x", (4, 2, 3)), ("cont", (4, 2))) + """
layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param { num_output: 5 } }
layer { name: "back" type: "Reshape" bottom: "h" top: "rows" reshape_param { shape { dim: -1 dim: 5 } } }
layer { name: "fc" type: "InnerProduct" bottom: "rows" top: "logits" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "logits" top: "prob" }
""")
    (prob,) = step.outputs
    assert (prob.shape, prob.batch_axis, prob.batch_fold) == (("4*batch", 3), 0, (4, 1))
    assert packed_vs_alone(step) == 0.0


def test_bench_feeds_folded_rows(dynamic, capsys):
    """`rnnrt bench --streams 3` on g1 feeds 4*3 frame rows."""
    from rnnrt.cli import main

    assert main(["bench", str(dynamic("g1_lrcn_conv_lstm")), "--streams", "3", "--steps", "2", "--warmup", "0",
                 "--rounds", "1", "--threads", "1"]) == 0
    assert "batch 3" in capsys.readouterr().out


def test_cli_run_of_recorded_frames_finds_the_streams(golden, dynamic, tmp_path):
    """`rnnrt run` on g1's recorded calls: 8 frame rows with batch_fold [4, 1] are 2 streams."""
    from rnnrt.cli import main

    case = golden("g1_lrcn_conv_lstm")
    feeds = {}
    for k in range(case.num_calls):
        ins, _ = case.call(k)
        feeds.update({f"call{k}/{n}": v for n, v in ins.items()})
    np.savez(tmp_path / "feed.npz", **feeds)
    assert main(["run", str(dynamic("g1_lrcn_conv_lstm")), "--feed", str(tmp_path / "feed.npz"),
                 "-o", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as out:
        for k in range(case.num_calls):
            np.testing.assert_allclose(out[f"call{k}/prob"], case.call(k)[1]["prob"], atol=ATOL, rtol=RTOL)


def test_session_step_slots_with_folded_rows(dynamic):
    """g1 in a 3-slot Session: stepping slots [2, 0] with their T*2 frame rows (time-major) equals each
    stream alone, and slot 1 keeps its state."""
    path = dynamic("g1_lrcn_conv_lstm")
    cfg = load_config(path)
    rng = np.random.default_rng(9)
    frames = [[random_frame(cfg, rng, with_cont=False) for _ in range(2)] for _ in range(3)]
    with rnnrt.load(path, backend="onnxruntime", batch_size=3) as session:
        first = session.step(pack(cfg.inputs, [f[0] for f in frames]))
        got = session.step(pack(cfg.inputs, [frames[2][1], frames[0][1]]), slots=[2, 0])
        state = session.read_state([1])
    spec = cfg.outputs[0]
    for k, slot in enumerate([2, 0]):
        with rnnrt.load(path, backend="onnxruntime", batch_size=1) as alone:
            alone.step(frames[slot][0])
            want = alone.step(frames[slot][1])
        np.testing.assert_allclose(unpack(spec, got[spec.name], 2, k), want[spec.name], rtol=1e-6, atol=1e-6)
    with rnnrt.load(path, backend="onnxruntime", batch_size=1) as alone:
        alone.step(frames[1][0])
        for name, value in alone.read_state([0]).items():
            np.testing.assert_array_equal(state[name], value)
    assert unpack(spec, first[spec.name], 3, 1).shape == (4, 1, 5)
