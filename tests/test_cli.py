"""The ``rnnrt`` command line: one subcommand table, consistent flags with deprecated aliases, and bad input that
ends in a one-line error (exit 2) naming the thing, before any work and without writing outside the output folder."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rnnrt import cli
from rnnrt.cli import SUBCOMMANDS, build_parser, main
from rnnrt.runtime.npz import read_npz
from rnnrt.errors import BindingError, RnnrtInternalError
from tests.models import MODELS

REPO = Path(__file__).resolve().parents[1]

PROTOTXT = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 } } }
layer { name: "cont" type: "Input" top: "cont" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "lstm1" type: "LSTM" bottom: "data" bottom: "cont" top: "lstm1"
        recurrent_param { num_output: 4 weight_filler { type: "uniform" min: -0.1 max: 0.1 } } }
"""


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working directory inside tmp_path; tests compare tmp_path's tree before and after a command."""
    d = tmp_path / "work"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


@pytest.fixture
def model_yaml(tmp_path) -> Path:
    return MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")


def _feed(path: Path, calls: int = 3, batch: int = 2) -> Path:
    x = np.random.default_rng(0).uniform(-1, 1, (calls, 1, batch, 5)).astype(np.float32)
    np.savez(path, **{f"call{k}/data": x[k] for k in range(calls)})
    return path


def _fails(argv: list[str], capsys, *names: str, root: Path | None = None, allowed: str | None = None) -> str:
    """Runs ``rnnrt argv`` in-process: exit 2, one error naming every one of ``names``, no traceback, and (with
    ``root``) nothing new under root except under ``allowed``."""
    before = _tree(root) if root else set()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("usage:") or err.startswith(f"rnnrt {argv[0]}: error: "), err
    for name in names:
        assert name in err, (name, err)
    if root is not None:
        new = _tree(root) - before
        assert all(allowed and p.startswith(allowed) for p in new), new
    return err


# --- the table -------------------------------------------------------------------------------------------


def test_table_lists_every_subcommand_once_with_description_and_examples(capsys):
    names = [c.name for c in SUBCOMMANDS]
    assert len(names) == len(set(names))
    assert {"convert", "build", "run", "bench", "inspect", "export-triton", "schema"} <= set(names)
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    for cmd in SUBCOMMANDS:
        assert cmd.description and cmd.help and cmd.examples, cmd.name
        assert cmd.name in top
        assert main([cmd.name, "--help"]) == 0
        out = capsys.readouterr().out
        assert cmd.description.split()[0] in out and "examples:\n  rnnrt " + cmd.name in out
        for line in cmd.examples.splitlines():
            assert line.split("#")[0].strip().split()[:2] == ["rnnrt", cmd.name]


def test_session_flags_mean_the_same_in_run_and_bench():
    parser = build_parser()
    for argv in (["run", "m.yaml", "--feed", "f.npz", "-o", "o.npz"], ["bench", "m.yaml"]):
        args = parser.parse_args(argv + ["--backend", "onnxruntime", "--threads", "2", "--streams", "8"])
        assert (args.backend, args.threads, args.streams) == ("onnxruntime", 2, 8)


def test_logging_flags_work_before_and_after_the_command():
    parser = build_parser()
    for argv in (["-v", "build", "m.yaml"], ["build", "m.yaml", "-v"], ["convert", "x.prototxt", "-v", "-o", "o"]):
        args = parser.parse_args(argv)
        assert (args.verbose, args.quiet) == (1, False), argv
    assert parser.parse_args(["schema", "-q"]).quiet and parser.parse_args(["-q", "schema"]).quiet
    args = parser.parse_args(["build", "m.yaml", "--verbose"])  # the old spelling of --layers, not logging
    assert (args.layers, args.verbose) == (True, 0)


def test_python_dash_m_rnnrt_is_the_cli():
    proc = subprocess.run([sys.executable, "-m", "rnnrt", "schema", "--kind", "import"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and '"seed"' in proc.stdout


@pytest.mark.parametrize(
    "argv, old, dest, value",
    [
        (["build", "m.yaml", "--batch", "1:8:64"], "--batch", "batch_profile", "1:8:64"),
        (["build", "m.yaml", "--verbose"], "--verbose", "layers", True),
        (["run", "m.yaml", "--feed", "f.npz", "--batch-size", "3"], "--batch-size", "streams", 3),
        (["run", "m.yaml", "--feed", "f.npz", "--out", "o.npz"], "--out", "output", "o.npz"),
        (["bench", "m.yaml", "--batch", "4"], "--batch", "streams", 4),
    ],
)
def test_old_spellings_are_deprecated_aliases(argv, old, dest, value, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    assert [o for o, _ in args._deprecated] == [old]
    assert main(argv[:1] + ["--help"]) == 0
    helptext = capsys.readouterr().out
    assert re.search(rf"(?<![\w-]){re.escape(old)}(?![\w-])", helptext) is None, "aliases are hidden from --help"


def test_deprecated_alias_works_and_warns_once(model_yaml, tmp_path, caplog, capsys):
    feed = _feed(tmp_path / "feed.npz")
    with caplog.at_level(logging.WARNING, logger="rnnrt"):
        assert main(["run", str(model_yaml), "--feed", str(feed), "--out", str(tmp_path / "a.npz"),
                     "--batch-size", "2", "--batch-size", "2", "--threads", "1"]) == 0
    warnings = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert warnings == ["rnnrt run --out is deprecated; use --output.",
                        "rnnrt run --batch-size is deprecated; use --streams."]
    assert main(["run", str(model_yaml), "--feed", str(feed), "-o", str(tmp_path / "b.npz"), "--streams", "2",
                 "--threads", "1"]) == 0
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert a.files == b.files == ["call0/lstm1", "call1/lstm1", "call2/lstm1"]
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])


def test_bench_takes_streams(model_yaml, capsys):
    assert main(["bench", str(model_yaml), "--streams", "3", "--steps", "2", "--warmup", "0", "--rounds", "1",
                 "--threads", "1"]) == 0
    assert "batch 3" in capsys.readouterr().out


def test_bench_chunk_times_step_chunk_per_frame(model_yaml, capsys, monkeypatch):
    """--chunk K: each timed call is one Session.step_chunk of K frames; the report is per frame."""
    from rnnrt.runtime.session import Session

    calls = []
    real = Session.step_chunk
    monkeypatch.setattr(Session, "step_chunk", lambda self, frames, slots=None: calls.append(
        {n: v.shape for n, v in frames.items()}) or real(self, frames, slots))
    assert main(["bench", str(model_yaml), "--streams", "3", "--steps", "2", "--warmup", "1", "--rounds", "2",
                 "--threads", "1", "--chunk", "4"]) == 0
    out = capsys.readouterr().out
    assert "calls 2 x 2, batch 3" in out and "us/frame (calls of 4 frames: step_chunk)" in out
    assert len(calls) == 5 and all(shape == {"data": (4, 1, 3, 5)} for shape in calls), calls


def test_bench_of_a_dynamic_batch_asks_for_streams(model_yaml, tmp_path, capsys):
    _fails(["bench", str(model_yaml), "--steps", "1"], capsys, "--streams", "'batch'", root=tmp_path)


def test_usage_errors_return_2_in_process(capsys):
    assert main(["run", "m.yaml", "--feed", "f.npz", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["--version"]) == 0


# --- errors at the top level -----------------------------------------------------------------------------


def test_user_error_is_one_message_without_traceback_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rnnrt.cli", "run", str(tmp_path / "nope.yaml"), "--feed", "f.npz",
                           "-o", str(tmp_path / "o.npz")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("rnnrt run: error: ") and "nope.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.npz").exists()


def test_bugs_keep_their_traceback(monkeypatch):
    import rnnrt.ir.config

    def broken():
        raise RnnrtInternalError("invariant broken")

    monkeypatch.setattr(rnnrt.ir.config, "json_schema", broken)
    with pytest.raises(RnnrtInternalError, match="invariant broken"):
        main(["schema"])


def test_os_errors_are_user_errors(tmp_path, monkeypatch, capsys):
    import rnnrt.ir.config

    def unreadable():
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr(rnnrt.ir.config, "json_schema", unreadable)
    assert main(["schema"]) == 2
    assert capsys.readouterr().err == f"rnnrt schema: error: {str(tmp_path / 'x')!r} | Permission denied.\n"


# --- convert ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "sub/dir/x", "../escaped", "/abs/x", "..", "a\\b", "x\ny"])
def test_convert_name_must_be_a_plain_name(name, work, tmp_path, capsys):
    (tmp_path / "net.prototxt").write_text(PROTOTXT)
    _fails(["convert", str(tmp_path / "net.prototxt"), "-o", str(work / "out"), "--name", name], capsys,
           "--name", root=tmp_path)


def test_convert_name_from_import_config_is_checked(work, tmp_path, capsys):
    (tmp_path / "net.prototxt").write_text(PROTOTXT)
    (tmp_path / "import.yaml").write_text("model: net.prototxt\noutput: out\nname: ../escaped\nseed: 3\n")
    _fails(["convert", "--config", str(tmp_path / "import.yaml")], capsys, "'../escaped'", "Is not a plain name",
           root=tmp_path)
    (tmp_path / "import.yaml").write_text("model: net.prototxt\noutput: out\nseed: -1\n")
    _fails(["convert", "--config", str(tmp_path / "import.yaml")], capsys, "seed -1", root=tmp_path)


def test_convert_seed_must_not_be_negative(work, tmp_path, capsys):
    (tmp_path / "net.prototxt").write_text(PROTOTXT)
    _fails(["convert", str(tmp_path / "net.prototxt"), "-o", "out", "--seed", "-1"], capsys, "--seed", root=tmp_path)


def test_convert_output_that_is_a_file_fails_before_converting(work, tmp_path, capsys):
    (tmp_path / "net.prototxt").write_text(PROTOTXT)
    (work / "taken").write_text("x")
    _fails(["convert", str(tmp_path / "net.prototxt"), "-o", "taken"], capsys, "'taken'", "not a directory",
           root=tmp_path)
    _fails(["convert", str(tmp_path / "net.prototxt"), "-o", "taken/sub"], capsys, "'taken/sub'", root=tmp_path)


def test_convert_with_a_plain_name_writes_only_inside_output(work, tmp_path, capsys):
    (tmp_path / "net.prototxt").write_text(PROTOTXT)
    before = _tree(tmp_path)
    assert main(["convert", str(tmp_path / "net.prototxt"), "-o", "out", "--name", "tiny.v1", "--seed", "7"]) == 0
    assert _tree(tmp_path) - before == {"work/out", "work/out/tiny.v1.onnx", "work/out/tiny.v1.yaml"}
    assert "lstm1" in capsys.readouterr().out


# --- run -------------------------------------------------------------------------------------------------


def test_run_output_in_a_missing_folder_fails_before_any_step(model_yaml, tmp_path, work, capsys):
    # The feed's frames have the wrong width: a step would fail with a BindingError naming 'data'.
    np.savez(tmp_path / "bad_frames.npz", **{"call0/data": np.zeros((1, 2, 9), np.float32)})
    err = _fails(["run", str(model_yaml), "--feed", str(tmp_path / "bad_frames.npz"), "-o", "missing/dir/o.npz"],
                 capsys, "'missing/dir/o.npz'", "does not exist", root=tmp_path)
    assert "data" not in err.split("|")[1]


def test_run_output_that_is_a_folder_is_refused(model_yaml, tmp_path, work, capsys):
    feed = _feed(tmp_path / "feed.npz")
    (work / "res").mkdir()
    _fails(["run", str(model_yaml), "--feed", str(feed), "-o", "res"], capsys, "'res'", "Is a directory", root=tmp_path)
    assert not (work / "res.npz").exists()


def test_run_writes_exactly_the_output_path(model_yaml, tmp_path, work, capsys):
    feed = _feed(tmp_path / "feed.npz")
    before = _tree(tmp_path)
    assert main(["run", str(model_yaml), "--feed", str(feed), "-o", "result", "--threads", "1"]) == 0
    assert _tree(tmp_path) - before == {"work/result"}  # no 'result.npz', no temporary file left
    with np.load(work / "result") as out:
        assert out["call2/lstm1"].shape == (1, 2, 7)


def test_run_failing_step_leaves_no_output(model_yaml, tmp_path, work, capsys):
    np.savez(tmp_path / "bad_frames.npz", **{"call0/data": np.zeros((1, 2, 9), np.float32)})
    _fails(["run", str(model_yaml), "--feed", str(tmp_path / "bad_frames.npz"), "-o", "o.npz"], capsys, "data",
           root=tmp_path)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "not_npy_member", "object", "lying_header", "negative_dims",
                                  "fifo", "missing"])
def test_run_rejects_broken_feeds(kind, model_yaml, tmp_path, work, capsys):
    feed = tmp_path / "feed.npz"
    if kind == "garbage":
        feed.write_bytes(os.urandom(300))
    elif kind == "truncated":
        _feed(feed, calls=20)
        feed.write_bytes(feed.read_bytes()[:-200])
    elif kind == "not_npy_member":
        with zipfile.ZipFile(feed, "w") as zf:
            zf.writestr("call0/data.txt", "hello")
    elif kind == "object":
        np.savez(feed, **{"call0/data": np.array([{"a": 1}], dtype=object)})
    elif kind == "lying_header":
        # An .npy header declaring 2**40 float32 values in a member of 200 bytes.
        header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
        header["shape"] = (2**40,)
        import io

        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, header)
        with zipfile.ZipFile(feed, "w") as zf:
            zf.writestr("call0/data.npy", buf.getvalue() + bytes(200))
    elif kind == "negative_dims":
        header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
        header["shape"] = (-1, -1)
        import io

        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, header)
        with zipfile.ZipFile(feed, "w") as zf:
            zf.writestr("call0/data.npy", buf.getvalue() + bytes(4))
    elif kind == "fifo":
        os.mkfifo(feed)
    err = _fails(["run", str(model_yaml), "--feed", str(feed), "-o", "o.npz"], capsys, "Feed", str(feed), root=tmp_path)
    expected = {"garbage": "Cannot be read as .npz", "truncated": "Cannot be read", "not_npy_member": "Is not an .npy array",
                "object": "Holds Python objects", "lying_header": "Declares shape (1099511627776,)", "negative_dims": "Declares shape (-1, -1)",
                "fifo": "Is not a regular file", "missing": "No such file"}[kind]
    assert expected in err


def _bomb(path: Path, key: str, mib: int) -> None:
    """An .npz whose one member inflates to ``mib`` MiB of zeros from a few KiB, written without holding it."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = (mib << 18,)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            chunk = bytes(1 << 20)
            for _ in range(mib):
                f.write(chunk)


def test_feed_bomb_is_refused_by_size_before_decompressing(model_yaml, tmp_path, work, capsys):
    _bomb(tmp_path / "bomb.npz", "call0/data", 64)
    assert (tmp_path / "bomb.npz").stat().st_size < (1 << 20)
    err = _fails(["run", str(model_yaml), "--feed", str(tmp_path / "bomb.npz"), "-o", "o.npz", "--max-feed-mib", "16"],
                 capsys, "'call0/data'", "more than the limit of 16777216 bytes", "--max-feed-mib", root=tmp_path)
    assert "67108864" in err
    # Measured: refusing it allocates next to nothing (numpy's allocations are traced by tracemalloc).
    tracemalloc.start()
    try:
        with pytest.raises(BindingError, match="more than the limit"):
            read_npz(str(tmp_path / "bomb.npz"), lambda key: True, 16 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (2 << 20), peak


def test_feed_keys_are_checked_before_any_array_is_read(model_yaml, tmp_path, work, capsys):
    _bomb(tmp_path / "bomb.npz", "call0/nonsense", 64)
    _fails(["run", str(model_yaml), "--feed", str(tmp_path / "bomb.npz"), "-o", "o.npz"], capsys,
           "Feed key 'call0/nonsense'", "not a model input", root=tmp_path)
    _bomb(tmp_path / "bomb.npz", "nope", 64)
    _fails(["run", str(model_yaml), "--feed", str(tmp_path / "bomb.npz"), "-o", "o.npz"], capsys,
           "Feed key 'nope'", "call{k}/{input}", root=tmp_path)


def test_read_npz_skips_unwanted_members_without_reading_them(tmp_path):
    _bomb(tmp_path / "f.npz", "skipped", 64)
    with zipfile.ZipFile(tmp_path / "f.npz", "a") as zf:
        with zf.open("kept.npy", "w") as f:
            np.save(f, np.arange(3))
    got = read_npz(str(tmp_path / "f.npz"), lambda key: key == "kept", 1024)
    assert list(got) == ["kept"] and got["kept"].tolist() == [0, 1, 2]


# --- integer flags, build, export-triton -----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["bench", "M", "--rounds", "0"], "--rounds"),
        (["bench", "M", "--steps", "0"], "--steps"),
        (["bench", "M", "--warmup", "-1"], "--warmup"),
        (["bench", "M", "--threads", "0"], "--threads"),
        (["bench", "M", "--streams", "-2"], "--streams"),
        (["bench", "M", "--chunk", "0"], "--chunk"),
        (["run", "M", "--feed", "f.npz", "-o", "o.npz", "--streams", "x"], "--streams"),
        (["build", "M", "--workspace", "-1"], "--workspace"),
        (["export-triton", "M", "-o", "repo", "--max-batch-size", "-1"], "--max-batch-size"),
        (["export-triton", "M", "-o", "repo", "--idle-us", "-5"], "--idle-us"),
    ],
)
def test_integer_flags_out_of_range_are_usage_errors(argv, flag, model_yaml, tmp_path, work, capsys):
    argv = [str(model_yaml) if a == "M" else a for a in argv]
    _fails(argv, capsys, f"argument {flag}", root=tmp_path)


@pytest.mark.parametrize("flag", ["--batch-profile", "--batch"])
@pytest.mark.parametrize("profile", ["1:1:1000000000000", "0:1:4", "8:4:64", "a:b:c"])
def test_build_profile_is_checked_before_building(flag, profile, model_yaml, tmp_path, work, capsys):
    _fails(["build", str(model_yaml), flag, profile], capsys, "--batch-profile", repr(profile), root=tmp_path)


def test_build_dim_range_is_checked(model_yaml, tmp_path, work, capsys):
    _fails(["build", str(model_yaml), "--dim", "T=1:2:99999999999"], capsys, "--dim T", root=tmp_path)
    _fails(["build", str(model_yaml), "--dim", "1:2:3"], capsys, "--dim '1:2:3'", root=tmp_path)


def test_build_output_is_checked_before_building(model_yaml, tmp_path, work, capsys):
    (work / "file").write_text("x")
    _fails(["build", str(model_yaml), "-o", str(work)], capsys, "-o/--output", "Is a directory", root=tmp_path)
    _fails(["build", str(model_yaml), "-o", "file/e.plan"], capsys, "'file/e.plan'", "not a directory",
           root=tmp_path)


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b"])
def test_export_triton_name_stays_inside_the_repository(name, model_yaml, tmp_path, work, capsys):
    _fails(["export-triton", str(model_yaml), "-o", "repo", "--engine", "onnx", "--name", name], capsys, "--name",
           repr(name), root=tmp_path)


def test_inspect_rejects_other_files(tmp_path, capsys):
    _fails(["inspect", str(tmp_path / "x.txt")], capsys, "x.txt", "Is not a .yaml config")


def test_cli_package_is_one_module_per_subcommand_without_ownership_comments():
    folder = Path(cli.__file__).parent
    modules = {p.stem for p in folder.glob("*.py")}
    assert {c.name.replace("-", "_") for c in SUBCOMMANDS} <= modules
    for path in folder.glob("*.py"):
        text = path.read_text()
        assert "owner" not in text.lower() and "_SUBCOMMANDS.insert" not in text, path


def test_cli_help_imports_no_heavy_module():
    proc = subprocess.run([sys.executable, "-c", "import sys; from rnnrt.cli import main; main(['--help']); "
                           "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'onnx', 'pydantic', 'yaml')))"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "[]", proc.stdout[-500:]


@pytest.mark.parametrize("argv", [["convert", "{x}"], ["convert", "--config", "{x}"], ["build", "{x}"],
                                  ["run", "{x}", "--feed", "f.npz", "-o", "o.npz"], ["bench", "{x}"],
                                  ["inspect", "{x}.yaml"], ["export-triton", "{x}", "-o", "repo"]])
def test_model_and_config_paths_must_be_regular_files(argv, tmp_path, work, capsys):
    """A FIFO would hang a reader and /dev/zero would read until memory runs out: both are refused up front."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    os.mkfifo(str(fifo) + ".yaml")
    for x in (str(fifo), "/dev/zero", str(tmp_path)):
        if argv[0] == "inspect" and x != str(fifo):
            continue
        _fails([a.replace("{x}", x) for a in argv], capsys, x, "Is ", root=tmp_path)


@pytest.mark.parametrize("command", ["bench", "verify"])
@pytest.mark.parametrize("item", ["chunk=0", "chunk=-4", "chunk=x", "=512"])
def test_dim_sizes_are_checked(command, item, model_yaml, tmp_path, work, capsys):
    extra = ["--streams", "4"] if command == "bench" else []
    _fails([command, str(model_yaml), *extra, "--dim", item], capsys, f"--dim {item!r}", "Is not NAME=N", root=tmp_path)
