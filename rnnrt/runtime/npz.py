"""The ``.npz`` files rnnrt reads and writes: feeds (``call{k}/{name}``) and recorded outputs.

:func:`read_npz` checks every key and ``.npy`` header before it decompresses any array (a zip bomb or a
lying header is refused by its declared size); :func:`read_calls` groups a feed's ``call{k}/{name}`` keys
into per-call frames; :func:`write_npz` writes a file atomically. ``rnnrt run`` and ``rnnrt verify`` both
read feeds through :func:`read_calls`.
"""

from __future__ import annotations

import os
import re
import stat
from typing import TYPE_CHECKING, Callable, Collection

from rnnrt.errors import BindingError, fmt

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DEFAULT_MAX_FEED_MIB", "read_calls", "read_npz", "write_npz"]

DEFAULT_MAX_FEED_MIB = 1024
"""Most MiB a feed's arrays may declare together by default (``rnnrt run --max-feed-mib``)."""

_CALL_KEY = re.compile(r"call(\d+)/(.+)")


def read_npz(path: str | os.PathLike, wanted: Callable[[str], bool], limit_bytes: int, what: str = "Feed",
             max_arrays: int | None = None) -> dict[str, np.ndarray]:
    """Reads the arrays of an ``.npz`` file, checking everything it can before decompressing any array.

    The file must be a regular file and a zip archive of ``.npy`` members. ``wanted(key)`` sees every key first
    (it may raise to refuse one) and says whether to load it. Each wanted member's ``.npy`` header must parse,
    hold no Python objects, and declare exactly as many bytes as the member holds; their total must stay
    within ``limit_bytes``. Only then are the arrays read.

    Args:
        path (str | os.PathLike): The .npz file.
        wanted (Callable[[str], bool]): Called with each key (member name without ``.npy``).
        limit_bytes (int): Most bytes the wanted arrays may hold together.
        what (str): How error messages name the file. Default: ``"Feed"``.
        max_arrays (int | None): Most members the archive may hold. Default: no limit.

    Returns:
        dict[str, np.ndarray]: The wanted arrays by key, in archive order.

    Raises:
        BindingError: The file cannot be read, is not an .npz, a key or header is bad, or it is too large.
    """
    import zipfile
    import zlib

    import numpy as np

    subject = f"{what} {str(path)!r}"
    try:
        st = os.stat(path)
    except OSError as err:
        raise BindingError(fmt(subject, f"Cannot be read: {err.strerror}")) from err
    if not stat.S_ISREG(st.st_mode):
        raise BindingError(fmt(subject, "Is not a regular file", "Expected an .npz file written by numpy.savez."))
    broken = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError)
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            if max_arrays is not None and len(members) > max_arrays:
                raise BindingError(fmt(subject, f"Has {len(members)} arrays", f"At most {max_arrays}."))
            keys: dict[str, zipfile.ZipInfo] = {}
            for info in members:
                if not info.filename.endswith(".npy"):
                    raise BindingError(fmt(f"{subject} member {info.filename!r}", "Is not an .npy array",
                                           "An .npz holds only NAME.npy members (numpy.savez)."))
                key = info.filename[: -len(".npy")]
                if key in keys:
                    raise BindingError(fmt(f"{subject} key {key!r}", "Appears twice"))
                keys[key] = info
            load = [key for key in keys if wanted(key)]
            total = 0
            for key in load:
                nbytes = _declared_bytes(zf, keys[key], f"{subject} key {key!r}", broken)
                total += nbytes
                if total > limit_bytes:
                    raise BindingError(fmt(f"{subject} key {key!r}",
                                           f"Brings the arrays to {total} bytes, more than the limit of "
                                           f"{limit_bytes} bytes", "Raise the limit (`rnnrt run --max-feed-mib`) "
                                           "if the feed is meant to be this large."))
            arrays = {}
            for key in load:
                with zf.open(keys[key]) as f:
                    try:
                        arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
                    except broken as err:
                        raise BindingError(fmt(f"{subject} key {key!r}", f"Cannot be read: {err}",
                                               "The file is corrupt or truncated.")) from err
            return arrays
    except BindingError:
        raise
    except broken as err:
        raise BindingError(fmt(subject, f"Cannot be read as .npz: {err}", "Expected a file written by numpy.savez.")) from err


def _declared_bytes(zf, info, subject: str, broken: tuple) -> int:
    """The bytes a member's ``.npy`` header declares, checked against what the member holds."""
    import numpy as np

    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except broken as err:
            raise BindingError(fmt(subject, f"Has no valid .npy header: {err}")) from err
        header = f.tell()
    if dtype.hasobject:
        raise BindingError(fmt(subject, f"Holds Python objects (dtype {dtype})",
                               "Feeds hold numeric arrays; object arrays would need pickle and are refused."))
    if any(int(d) < 0 for d in shape):
        raise BindingError(fmt(subject, f"Declares shape {tuple(shape)}", "The file is corrupt: dims are >= 0."))
    count = 1
    for d in shape:
        count *= int(d)
    nbytes = count * dtype.itemsize
    if header + nbytes != info.file_size:
        raise BindingError(fmt(subject, f"Declares shape {tuple(shape)} {dtype} ({nbytes} bytes) but holds "
                                        f"{info.file_size - header} bytes", "The file is corrupt or truncated."))
    return nbytes


def read_calls(path: str | os.PathLike, inputs: Collection[str], outputs: Collection[str], limit_bytes: int, *,
               recorded: bool = True, max_arrays: int | None = None,
               ) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Reads a feed: keys ``call{k}/{input}`` (frames) and ``call{k}/{output}`` (recorded outputs).

    Keys under ``call{k}/_internal/`` (extra blobs of a Caffe recording) are skipped. Every key is checked
    (through :func:`read_npz`) before any array is read.

    Args:
        path (str | os.PathLike): The .npz file.
        inputs (Collection[str]): The model's input names.
        outputs (Collection[str]): The model's output names.
        limit_bytes (int): Most bytes the loaded arrays may hold together.
        recorded (bool): Also load the recorded outputs; False skips them unread. Default: True.
        max_arrays (int | None): Most members the archive may hold. Default: no limit.

    Returns:
        tuple[list[dict], list[dict]]: The frames of calls 0, 1, ... and, per call, its recorded outputs
        (empty dicts when ``recorded`` is False or the feed holds none).

    Raises:
        BindingError: The file is not a good .npz (see :func:`read_npz`), a key is not ``call{k}/{name}``
            or names neither an input nor an output, or the calls are not numbered 0, 1, 2 ... without gaps.
    """
    inputs, outputs = set(inputs), set(outputs)

    def wanted(key: str) -> bool:
        m = _CALL_KEY.fullmatch(key)
        if m is None:
            raise BindingError(fmt(f"Feed key {key!r}", "Is not of the form call{k}/{input}"))
        name = m.group(2)
        if name in inputs:
            return True
        if name in outputs:
            return recorded
        if name.startswith("_internal/"):
            return False
        raise BindingError(fmt(f"Feed key {key!r}", f"Names {name!r}, which is not a model input or output",
                               f"Inputs: {sorted(inputs)}; outputs: {sorted(outputs)}."))

    data = read_npz(path, wanted, limit_bytes, "Feed", max_arrays)
    frames: dict[int, dict[str, np.ndarray]] = {}
    outs: dict[int, dict[str, np.ndarray]] = {}
    for key, value in data.items():
        m = _CALL_KEY.fullmatch(key)
        k, name = int(m.group(1)), m.group(2)
        (frames if name in inputs else outs).setdefault(k, {})[name] = value
    if sorted(frames) != list(range(len(frames))):
        raise BindingError(fmt(f"Feed {str(path)!r}", f"Has calls {sorted(frames)}",
                               "Calls are numbered 0, 1, 2 ... without gaps."))
    n = len(frames)
    return [frames[k] for k in range(n)], [outs.get(k, {}) for k in range(n)]


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], what: str = "-o/--output") -> None:
    """Writes ``arrays`` to exactly ``path`` (no ``.npz`` appended) with :func:`rnnrt.safe_write.write_file`:
    a temporary file beside it is renamed over it once complete (a failure leaves no partial file), and a
    symlink or special file in its place is refused."""
    import numpy as np

    from rnnrt.safe_write import write_file

    write_file(path, lambda f: np.savez(f, **arrays), what=what)
