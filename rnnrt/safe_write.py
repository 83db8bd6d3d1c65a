"""Safe output files: every file rnnrt writes goes through here.

A file is written under a temporary name in a fresh hidden folder inside its target folder and renamed
over the target only once complete, so a failure never leaves a partial file and readers never see one.
Before the rename the target is checked: if something other than a regular file is in its place (a
symbolic link, a device node, a FIFO, a folder), rnnrt refuses with :class:`rnnrt.errors.OutputError`
naming it, instead of writing through the link (overwriting its target) or replacing the special file.
The rename itself never follows a link.

Used by ``convert`` (model YAML, ONNX graph and its weights file), ``build`` (plans, manifests, rewritten
graphs, timing caches), ``export-triton`` (``config.pbtxt`` and the model files) and ``run --out``.

Example::

    from rnnrt.safe_write import staged, write_bytes

    write_bytes("out/model.plan", plan, "Plan")
    with staged(["out/model.onnx", "out/model.onnx.data"], "Model file") as (onnx_tmp, _):
        onnx.save_model(model, str(onnx_tmp), save_as_external_data=True, location="model.onnx.data")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence, Union

from rnnrt.errors import OutputError, fmt

__all__ = ["check_target", "staged", "write_bytes", "write_file", "write_text"]

PathLike = Union[str, os.PathLike]


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_target(path: PathLike, what: str = "Output") -> None:
    """Raises OutputError if ``path`` exists and is not a regular file (a symlink counts as not regular,
    whatever it points to). A missing path is fine."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise OutputError(fmt(f"{what} {str(path)!r}", f"Cannot be checked: {err.strerror}")) from err
    if not stat.S_ISREG(mode):
        raise OutputError(
            fmt(f"{what} {str(path)!r}", f"Is {_kind(mode)}; rnnrt replaces only regular files",
                "rnnrt never writes through a link or over a special file; remove it or choose another output path.")
        )


@contextlib.contextmanager
def staged(targets: Sequence[PathLike], what: str = "Output") -> Iterator[list[Path]]:
    """Temporary paths for ``targets`` (same file names, in a fresh hidden folder inside their folder),
    renamed over the targets when the block succeeds.

    Every target is checked before anything is written and again just before its rename; the block may
    leave some temporary paths unwritten (those targets are then left as they are). On any error the
    temporary folder is removed and no target changes.

    Args:
        targets (Sequence[PathLike]): Files in one folder, with distinct names.
        what (str): What the files are, for messages (``"Model file"``, ``"Plan"``).

    Raises:
        OutputError: A target is a symbolic link or not a regular file.
        OSError: The folder cannot be written.
    """
    paths = [Path(t) for t in targets]
    folder = paths[0].parent
    if any(p.parent != folder for p in paths) or len({p.name for p in paths}) != len(paths):
        raise ValueError(f"staged() takes distinct files of one folder, got {[str(p) for p in paths]}")
    for p in paths:
        check_target(p, what)
    tmp = Path(tempfile.mkdtemp(prefix=".rnnrt-write-", dir=folder))
    try:
        temps = [tmp / p.name for p in paths]
        yield temps
        for src, dst in zip(temps, paths):
            if not os.path.lexists(src):
                continue
            check_target(dst, what)
            os.replace(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_file(path: PathLike, write: Callable[[IO], None], mode: str = "wb", what: str = "Output") -> Path:
    """Writes exactly ``path`` safely: ``write(f)`` fills a temporary file (opened with ``mode``), which is
    renamed over ``path`` once complete (see the module doc); returns the path.

    Example::

        write_file("out.npz", lambda f: np.savez(f, **arrays), what="-o/--output")
    """
    with staged([path], what) as (tmp,):
        with open(tmp, mode) as f:
            write(f)
    return Path(path)


def write_bytes(path: PathLike, data: Union[bytes, bytearray, memoryview], what: str = "Output") -> Path:
    """Writes ``data`` to ``path`` safely (see the module doc); returns the path."""
    return write_file(path, lambda f: f.write(data), "wb", what)


def write_text(path: PathLike, text: str, what: str = "Output") -> Path:
    """Writes ``text`` (UTF-8) to ``path`` safely (see the module doc); returns the path."""
    return write_bytes(path, text.encode("utf-8"), what)
