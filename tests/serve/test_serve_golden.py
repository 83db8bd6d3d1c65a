"""Ground truth through a real Triton server: every golden Caffe case that converts with a dynamic batch,
one model each on one server; each of a case's N batch elements is one stream (cont fed as Caffe got it),
every call's outputs within atol 1e-5 / rtol 1e-4 of real BVLC Caffe."""

from __future__ import annotations

import numpy as np
import pytest

import rnnrt
import rnnrt.ir.config
from rnnrt.serve.client import StreamClient
from rnnrt.serve.triton import export_triton

pytestmark = pytest.mark.slow  # one server with 16 models: about a minute

def frame_rows(arrays: dict, axes: dict, b: int) -> dict:
    """Row b (kept as batch dim 1) of every array along its batch axis."""
    return {n: np.take(a, [b], axis=axes[n]) for n, a in arrays.items()}

# Cases whose every binding keeps the batch on its own axis (g1-g4 reshape the batch into other axes).
CASES = ["a_lstm_stream_t1n1", "b_lstm_batch_resets", "c_lstm_stacked_ip_softmax", "d_lstm_expose_hidden",
         "e_lstm_static_input", "f_rnn_vanilla", "f2_rnn_static_expose_hidden", "h1_lstm_hidden1",
         "h2_lstm_input1", "h3_lstm_large", "h4_lstm_cont_all_zero", "h5_lstm_long_t200", "h6_lstm_x_multidim",
         "h7_lstm_cont_fractional", "h8_rnn_hidden1", "i_embed_lstm_lm_stream"]


@pytest.fixture(scope="module")
def golden_server(dynamic, start_serve, tmp_path_factory):
    repo = tmp_path_factory.mktemp("golden_repo")
    for name in CASES:
        export_triton(dynamic(name), repo, engine="python", name=name, max_sequences=4)
    return start_serve(["--repo", repo])


@pytest.mark.parametrize("name", CASES)
def test_golden_case_through_the_server(golden, dynamic, golden_server, name):
    case = golden(name)
    cfg = rnnrt.ir.config.load_config(dynamic(name))
    in_axes = {t.name: t.batch_axis for t in cfg.inputs}
    out_axes = {t.name: t.batch_axis for t in cfg.outputs}
    ins0, _ = case.call(0)
    first = next(iter(in_axes))
    streams = ins0[first].shape[in_axes[first]]
    with StreamClient(golden_server.address, model=name) as client:
        ids = [f"{name}-{b}" for b in range(streams)]
        for sid in ids:
            client.open(sid)
        for k in range(case.num_calls):
            ins, outs = case.call(k)
            got = client.step_many({sid: frame_rows(ins, in_axes, b) for b, sid in enumerate(ids)})
            for b, sid in enumerate(ids):
                assert not isinstance(got[sid], Exception), got[sid]
                for out_name, want in outs.items():
                    np.testing.assert_allclose(got[sid][out_name], np.take(want, [b], axis=out_axes[out_name]),
                                               atol=1e-5, rtol=1e-4, err_msg=f"{name} call {k} stream {b} {out_name}")
        for sid in ids:
            client.close(sid)
