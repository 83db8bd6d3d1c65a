"""`rnnrt convert` on a golden case, then `rnnrt run` replays io.npz and reproduces Caffe's outputs."""

from __future__ import annotations

import numpy as np

from rnnrt.cli import main


def test_convert_then_run_replays_golden_stream(golden, tmp_path, capsys):
    case = golden("a_lstm_stream_t1n1")
    assert main(["convert", str(case.prototxt), str(case.caffemodel), "-o", str(tmp_path / "m")]) == 0
    assert "state lstm1.h0 -> lstm1.hT" in capsys.readouterr().out
    feed = tmp_path / "feed.npz"
    np.savez(feed, **{k: v for k, v in case.io.items() if k.split("/")[1] in case.meta["inputs"]})
    out = tmp_path / "out.npz"
    assert main(["run", str(tmp_path / "m" / "model.yaml"), "--feed", str(feed), "--out", str(out)]) == 0
    with np.load(out) as got:
        for k in range(case.num_calls):
            np.testing.assert_allclose(got[f"call{k}/lstm1"], case.io[f"call{k}/lstm1"], atol=1e-5, rtol=1e-4)


def test_convert_reports_typed_error(tmp_path, capsys):
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layer { name: ")
    assert main(["convert", str(bad), "-o", str(tmp_path / "o")]) == 2
    assert "bad.prototxt:1:" in capsys.readouterr().err


def test_bench_reports_latency(golden, tmp_path, capsys):
    case = golden("c_lstm_stacked_ip_softmax")
    assert main(["convert", str(case.prototxt), str(case.caffemodel), "-o", str(tmp_path / "m")]) == 0
    assert main(["bench", str(tmp_path / "m" / "model.yaml"), "--steps", "5", "--warmup", "1", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "us/step" in out and "batch 2" in out


def test_convert_from_import_config_flags_override(golden, tmp_path):
    case = golden("a_lstm_stream_t1n1")
    (tmp_path / "import.yaml").write_text(
        f"model: {case.prototxt}\nweights: {case.caffemodel}\noutput: out\nbatch: dynamic\n"
    )
    assert main(["convert", "--config", str(tmp_path / "import.yaml")]) == 0
    assert "[1, batch, 5]" in (tmp_path / "out" / "model.yaml").read_text()  # relative output: next to the YAML
    assert main(["convert", "--config", str(tmp_path / "import.yaml"), "--batch", "fixed", "-o", str(tmp_path / "f")]) == 0
    assert "[1, 1, 5]" in (tmp_path / "f" / "model.yaml").read_text()


def test_import_config_unknown_key_is_named(tmp_path, capsys):
    (tmp_path / "import.yaml").write_text("model: x.prototxt\nbogus: 1\n")
    assert main(["convert", "--config", str(tmp_path / "import.yaml")]) == 2
    assert "bogus: unknown key" in capsys.readouterr().err


def test_import_config_plugins_add_to_flags(tmp_path):
    from rnnrt.importers.options import load_import_config

    (tmp_path / "import.yaml").write_text("model: m.prototxt\nplugins: [plugs]\n")
    cfg = load_import_config(tmp_path / "import.yaml", {"plugins": ["/abs/more"], "seed": None})
    assert cfg.plugins == [str((tmp_path / "plugs").resolve()), "/abs/more"]
    assert cfg.model == str((tmp_path / "m.prototxt").resolve()) and cfg.seed == 0
