"""The `make run` demo runs end to end (it asserts its own slot-reset check)."""

from rnnrt import demo


def test_demo_runs(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path), "--steps", "6"]) == 0
    out = capsys.readouterr().out
    assert "stream 1 restarts at step 3" in out and "per-step latency" in out
    assert (tmp_path / "model" / "model.yaml").is_file()
