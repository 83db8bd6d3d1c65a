"""Bounded reads of the files a user names: YAML configs and the models they point to.

:func:`read_yaml` is the one YAML reader of rnnrt (model config, import config, ONNX override): it
reads only regular files up to :data:`MAX_YAML_BYTES`, decodes UTF-8, bounds nesting depth
(:data:`MAX_YAML_DEPTH`) and the size of the document with every alias expanded
(:data:`MAX_YAML_NODES`, which stops "billion laughs" alias bombs), and turns every failure into a
:class:`~rnnrt.errors.ConfigError` naming the file. :func:`check_regular_file` is the check made
before a path a config names is opened (``model: /dev/zero`` or a FIFO must not be read).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, Union

import yaml

from rnnrt.errors import ConfigError, fmt

__all__ = ["MAX_MODEL_BYTES", "MAX_YAML_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "check_regular_file", "read_yaml"]

MAX_YAML_BYTES = 16 << 20
"""Largest YAML file read (16 MiB; a config of a thousand bindings is ~100 KiB)."""

MAX_YAML_DEPTH = 64
"""Deepest nesting of YAML collections (a model config nests 4 deep)."""

MAX_YAML_NODES = 1_000_000
"""Most YAML nodes in a document, counting an aliased node once per use."""

MAX_MODEL_BYTES = 2 << 30
"""Largest ONNX file read (protobuf's 2 GiB limit; bigger weights live in external data files)."""


def check_regular_file(path: Union[str, os.PathLike], what: str, max_bytes: int, note: str = "") -> int:
    """Checks, without opening it, that ``path`` is a regular file of at most ``max_bytes``.

    Args:
        path: The file.
        what (str): The subject of error messages, e.g. ``"Config 'a.yaml'"``.
        max_bytes (int): The size cap.
        note (str): A hint for a missing file; without one it "Cannot be read: No such file or directory".

    Returns:
        int: The file's size in bytes.

    Raises:
        ConfigError: The file is missing, not a regular file (a device, a FIFO, a folder), or too big.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError as err:
        raise ConfigError(fmt(what, "Does not exist" if note else f"Cannot be read: {err.strerror}", note)) from err
    except OSError as err:
        raise ConfigError(fmt(what, f"Cannot be read: {err.strerror}")) from err
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise ConfigError(fmt(what, f"Is {kind}, not a regular file", "Give the path of a file."))
    if st.st_size > max_bytes:
        raise ConfigError(fmt(what, f"Is {st.st_size} bytes, more than the {max_bytes} bytes rnnrt reads"))
    return st.st_size


# What the YAML reader refuses (PyYAML's Reader.NON_PRINTABLE): NUL and other control characters.
_NOT_YAML_TEXT = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer refuses documents nested deeper than :data:`MAX_YAML_DEPTH`."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(f"Nests deeper than {MAX_YAML_DEPTH} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Refused(Exception):
    """Raised inside the loader; read_yaml turns it into a ConfigError naming the file."""


def _expanded_size(root: yaml.Node) -> int:
    """Node count of the document with every alias expanded (a shared node counts once per use)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Refused("Has an alias that refers to itself (a recursive structure)")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += size(child)
                if total > MAX_YAML_NODES:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > MAX_YAML_NODES:
                    break
        active.discard(key)
        sizes[key] = total
        if total > MAX_YAML_NODES:
            raise _Refused(f"Expands to more than {MAX_YAML_NODES} nodes (aliases counted once per use)")
        return total

    return size(root)


def read_yaml(path: Union[str, os.PathLike], what: str = "Config") -> Any:
    """Reads one YAML document from a file, bounded (see the module doc).

    Args:
        path: The YAML file.
        what (str): What the file is, for messages (``"Config"``, ``"Import config"``, ``"Override"``).

    Returns:
        The document as Python data (None for an empty file).

    Raises:
        ConfigError: ``<what> '<path>' | <what went wrong>``: missing, not a regular file, too big, not
            UTF-8, not valid YAML, nested too deep, or too big with its aliases expanded.
    """
    label = f"{what} {str(path)!r}"
    check_regular_file(path, label, MAX_YAML_BYTES)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
    except OSError as err:
        raise ConfigError(fmt(label, f"Cannot be read: {err.strerror}")) from err
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(fmt(label, f"Is more than the {MAX_YAML_BYTES} bytes rnnrt reads"))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(
            fmt(label, f"Is not UTF-8 text (byte {err.start}, line {line}: {raw[err.start:err.start + 1]!r})",
                "Save the file as UTF-8.")
        ) from err
    bad = _NOT_YAML_TEXT.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise ConfigError(fmt(label, f"Has the control character U+{ord(bad.group()):04X} at line {line}, column {column}",
                              "YAML allows only printable characters, tabs and line breaks; remove it."))
    try:
        loader = _BoundedLoader(text)
    except yaml.YAMLError as err:  # a backstop: the check above finds what the reader refuses
        raise ConfigError(fmt(label, f"Is not valid YAML: {err}")) from err
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except _Refused as err:
        raise ConfigError(fmt(label, str(err), "rnnrt reads configs of plain mappings and lists.")) from err
    except yaml.YAMLError as err:
        raise ConfigError(fmt(label, f"Is not valid YAML: {err}")) from err
    except RecursionError as err:  # a backstop: the depth bound should stop this first
        raise ConfigError(fmt(label, "Nests too deep to read")) from err
    finally:
        loader.dispose()
