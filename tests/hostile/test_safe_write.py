"""Safe writes (defect 5 of issue 22): outputs never follow a planted symlink or replace a special file, and
a failed write leaves the old file and no temporary files behind."""

from __future__ import annotations

import os
import stat

import pytest

from rnnrt.ir.config import save_step_graph
from rnnrt.errors import OutputError
from rnnrt.importers.caffe.convert import convert_caffe
from rnnrt.safe_write import check_target, staged, write_bytes, write_file, write_text
from rnnrt.serve.triton import export_triton
from tests.hostile.helpers import input_layer

_NET = (input_layer("x", 1, 1, 2) + input_layer("cont", 1, 1)
        + 'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param { num_output: 2 } }\n')


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("precious")
    return path


def test_write_replaces_a_regular_file_atomically(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["f.bin"]  # no temporary left


def test_write_file_passes_an_open_file(tmp_path):
    import numpy as np

    target = tmp_path / "out.npz"  # np.savez given a file object appends no second .npz
    write_file(target, lambda f: np.savez(f, a=np.arange(3)))
    assert np.load(target)["a"].tolist() == [0, 1, 2]
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    with pytest.raises(OutputError, match="symbolic link"):
        write_file(link, lambda f: np.savez(f, a=np.arange(1)))
    assert np.load(target)["a"].tolist() == [0, 1, 2]


def test_new_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o640


def test_symlink_target_is_refused_and_left_alone(tmp_path, victim):
    link = tmp_path / "out.txt"
    link.symlink_to(victim)
    with pytest.raises(OutputError, match=r"out.txt' \| Is a symbolic link; rnnrt replaces only regular files"):
        write_text(link, "evil")
    assert victim.read_text() == "precious" and link.is_symlink()


def test_dangling_symlink_is_refused(tmp_path):
    link = tmp_path / "out.txt"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError, match="symbolic link"):
        write_text(link, "x")
    assert not (tmp_path / "nowhere").exists()


def test_fifo_and_folder_are_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="Is a FIFO"):
        write_bytes(fifo, b"x")  # before: open() blocked, or a rename replaced the FIFO
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    (tmp_path / "dir").mkdir()
    with pytest.raises(OutputError, match="Is a folder"):
        write_bytes(tmp_path / "dir", b"x")


def test_device_node_is_refused():
    with pytest.raises(OutputError, match="Is a device"):
        check_target("/dev/null", "Output")


def test_failed_write_keeps_the_old_file_and_no_temporaries(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with staged([target]) as (tmp,):
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["f.bin"]


def test_link_planted_during_the_write_is_refused_at_rename(tmp_path, victim):
    target = tmp_path / "f.txt"
    with pytest.raises(OutputError, match="symbolic link"):
        with staged([target]) as (tmp,):
            tmp.write_text("new")
            target.symlink_to(victim)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("planted", ["model.yaml", "model.onnx"])
def test_convert_output_folder_with_a_planted_symlink(tmp_path, victim, planted):
    (tmp_path / "net.prototxt").write_text(_NET)
    step = convert_caffe(tmp_path / "net.prototxt")
    out = tmp_path / "out"
    out.mkdir()
    (out / planted).symlink_to(victim)
    with pytest.raises(OutputError, match=f"{planted}' \\| Is a symbolic link"):
        save_step_graph(step, out)
    assert victim.read_text() == "precious"
    assert not [n for n in os.listdir(out) if n.startswith(".rnnrt-write-")]


def test_export_triton_config_symlink_is_refused(tmp_path, victim):
    (tmp_path / "net.prototxt").write_text(_NET)
    path = save_step_graph(convert_caffe(tmp_path / "net.prototxt", batch="dynamic"), tmp_path / "m")
    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    (repo / "m" / "config.pbtxt").symlink_to(victim)
    with pytest.raises(OutputError, match="config.pbtxt' \\| Is a symbolic link"):
        export_triton(path, repo, engine="onnx", name="m", max_sequences=4)
    assert victim.read_text() == "precious"
