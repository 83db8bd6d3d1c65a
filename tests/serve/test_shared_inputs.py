"""Models with an input that has no batch axis (Silero's ``sr``) on Triton: ``export-triton --engine python
--shared sr=16000`` / ``rnnrt serve ... --shared sr=16000`` give the server's pool its value (``StreamPool(shared=)``);
served bit-exact vs a Session fed the same value; refusals name the input."""

from __future__ import annotations

import numpy as np
import pytest

import rnnrt
from rnnrt.ir.config import save_step_graph
from rnnrt.errors import ConfigError
from rnnrt.importers.onnx.importer import convert_onnx
from rnnrt.serve.client import StreamClient
from rnnrt.serve.triton import export_triton
from tests.models.onnx_sources import shared_sr_onnx


@pytest.fixture(scope="module")
def sr_model(tmp_path_factory):
    return save_step_graph(convert_onnx(shared_sr_onnx("N")), tmp_path_factory.mktemp("sr") / "srm")


def test_export_needs_a_value_for_each_unbatched_input(sr_model, tmp_path):
    with pytest.raises(ConfigError, match=r"(?s)Input 'sr' \| Has no batch axis.*--shared sr=VALUE"):
        export_triton(sr_model, tmp_path, engine="python", name="m")
    with pytest.raises(ConfigError, match=r"shared=\{'x': \.\.\.\} \| Is not an input without a batch axis"):
        export_triton(sr_model, tmp_path, engine="python", name="m", shared={"sr": 16000, "x": 1})
    with pytest.raises(ConfigError, match=r"Input 'sr' \| Value 1.5 is not exactly a int64"):
        export_triton(sr_model, tmp_path, engine="python", name="m", shared={"sr": 1.5})
    with pytest.raises(ConfigError, match=r"Input 'sr' \| Value has shape \[2\]"):
        export_triton(sr_model, tmp_path, engine="python", name="m", shared={"sr": [1, 2]})
    with pytest.raises(ConfigError, match="python only"):
        export_triton(sr_model, tmp_path, engine="onnx", name="m", shared={"sr": 16000})
    model_dir = export_triton(sr_model, tmp_path, engine="python", name="m", shared={"sr": 16000})
    text = (model_dir / "config.pbtxt").read_text()
    assert 'name: "sr"' not in text and "rnnrt_shared" in text  # not a request input: the pool holds it


def test_served_with_shared_value_is_bit_exact(sr_model, start_serve):
    server = start_serve([sr_model, "--name", "srm", "--shared", "sr=16000", "--max-sequences", "8"])
    rng = np.random.default_rng(1)
    ids = ["a", "b", "c"]
    frames = {sid: [rng.standard_normal((1, 4)).astype(np.float32) for _ in range(5)] for sid in ids}
    with StreamClient(server.address, model="srm") as client:
        for sid in ids:
            client.open(sid)
        got = {sid: [] for sid in ids}
        for k in range(3):
            out = client.step_many({sid: frames[sid][k] for sid in ids})
            for sid in ids:
                got[sid].append(out[sid])
        for sid in ids:
            got[sid].extend(client.step_chunk(sid, frames[sid][3:]))
            client.close(sid)
    with rnnrt.load(sr_model, backend="onnxruntime", batch_size=1) as solo:
        for sid in ids:
            solo.reset()
            for k, x in enumerate(frames[sid]):
                want = solo.step({"x": x, "sr": np.int64(16000)})["y"]
                np.testing.assert_array_equal(got[sid][k]["y"], want, err_msg=f"{sid} frame {k}")


def test_cli_refuses_bad_shared_values(sr_model, tmp_path, capsys):
    from rnnrt.cli import main

    assert main(["export-triton", str(sr_model), "-o", str(tmp_path), "--engine", "python", "--shared", "sr"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["export-triton", str(sr_model), "-o", str(tmp_path), "--engine", "python", "--shared",
                 "sr=16000"]) == 0
