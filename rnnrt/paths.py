"""The paths a user names: checked before any work starts (writing them is :mod:`rnnrt.safe_write`'s job).

A name that becomes a file or folder name (:func:`check_name`), a file to read (:func:`check_input_file`),
a folder to write into (:func:`check_output_dir`) and a file to write (:func:`check_output_file`): each
raises a :class:`~rnnrt.errors.ConfigError` naming the path and the flag or field it came from, so a
command fails in a second instead of after a long conversion or build. :func:`write_atomically` writes
a result file so that a failure leaves no partial file.
"""

from __future__ import annotations

import os
from typing import Union

from rnnrt.errors import ConfigError, fmt

__all__ = ["check_input_file", "check_name", "check_output_dir", "check_output_file"]

PathLike = Union[str, os.PathLike]

_MAX_NAME_BYTES = 200


def check_name(name: str, what: str) -> None:
    """A name that becomes a file or folder name inside an output folder: no path, nothing that escapes.

    Raises:
        ConfigError: ``name`` is empty, ``.``/``..``, holds a path separator or control character, or is
            longer than 200 bytes.
    """
    bad = (not name or name in (".", "..") or "/" in name or "\\" in name
           or (os.altsep is not None and os.altsep in name) or any(ord(c) < 32 for c in name))
    if bad:
        raise ConfigError(fmt(f"{what} {name!r}", "Is not a plain name",
                              "A name without path separators or control characters, e.g. 'model'; "
                              "choose the folder with -o/--output."))
    if len(name.encode()) > _MAX_NAME_BYTES:
        raise ConfigError(fmt(f"{what} {name[:20]!r}...", f"Is {len(name.encode())} bytes long",
                              f"A name of at most {_MAX_NAME_BYTES} bytes (file names add suffixes such as .onnx.data)."))


def check_input_file(path: PathLike | None, what: str) -> None:
    """Refuses a path that exists but is not a regular file (a folder, FIFO or device would hang or never end);
    a missing file is left to the reader, whose message names it.

    Raises:
        ConfigError: ``path`` exists and is not a regular file.
    """
    if path is None or not os.path.lexists(path):
        return
    from rnnrt.ir.files import check_regular_file

    check_regular_file(path, f"{what} {str(path)!r}", max_bytes=1 << 62)


def check_output_dir(path: PathLike, what: str) -> None:
    """Fails before any work when ``path`` cannot become a directory we write into.

    Raises:
        ConfigError: ``path`` is a file, lies below a file, or its nearest existing folder is not writable.
    """
    p = os.path.abspath(path)
    if os.path.exists(p) and not os.path.isdir(p):
        raise ConfigError(fmt(f"{what} {str(path)!r}", "Exists and is not a directory", "Name a directory to write into."))
    existing = p
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(fmt(f"{what} {str(path)!r}", f"Cannot be created: {existing!r} is not a directory"))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(fmt(f"{what} {str(path)!r}", f"Cannot be written: {existing!r} is not writable"))


def check_output_file(path: PathLike, what: str, *, example: str = "out.npz", create_folder: bool = False) -> None:
    """Fails before any work when ``path`` cannot be written as a file.

    Args:
        path (PathLike): The file to write.
        what (str): The flag or field that named it, e.g. ``"-o/--output"``.
        example (str): A file name for the hint when ``path`` is a folder. Default: ``"out.npz"``.
        create_folder (bool): Missing folders above it will be created. Default: False (they must exist).

    Raises:
        ConfigError: ``path`` is a folder, its folder is missing (and will not be created) or not writable.
    """
    p = os.path.abspath(path)
    if os.path.isdir(p):
        raise ConfigError(fmt(f"{what} {str(path)!r}", "Is a directory",
                              f"Name the file to write, e.g. {os.path.join(path, example)!r}."))
    folder = os.path.dirname(p)
    if create_folder:
        check_output_dir(folder, f"{what} {str(path)!r}: folder")
        return
    if not os.path.isdir(folder):
        raise ConfigError(fmt(f"{what} {str(path)!r}", f"Its folder {folder!r} does not exist", "Create it first."))
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(p) and not os.access(p, os.W_OK)):
        raise ConfigError(fmt(f"{what} {str(path)!r}", "Cannot be written (permission denied)"))
