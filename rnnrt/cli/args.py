"""What the subcommands share: the :class:`Subcommand` row, argument types, flag groups and flag grammars.

One grammar per flag, parsed here only:

- ``--shared NAME=VALUE`` (bench, verify, serve, export-triton): an input fed the same value at every step;
  VALUE is a JSON number or list. ``--set NAME=VALUE`` is convert's alone: a constant folded into the graph.
- ``--dim NAME=N`` or ``NAME=MIN:OPT:MAX``: a dynamic dim by name. build and export-triton take both (N means
  N:N:N); bench and verify run one size and refuse a range by name.
- ``--json PATH``: the report as JSON in PATH; ``--json -`` prints it instead of the text.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any, Callable

from rnnrt.errors import ConfigError, fmt


@dataclasses.dataclass(frozen=True)
class Subcommand:
    """One ``rnnrt`` subcommand: how it is listed, which arguments it takes and what runs it."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    examples: str = ""


def backend_name(text: str) -> str:
    """``--backend`` (run, bench, serve, export-triton): a name the engine registry resolves (a built-in, an
    engine installed under the ``rnnrt.engines`` entry-point group) or ``module.path:callable``."""
    from rnnrt.engines.select import check_backend_name

    try:
        return check_backend_name(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


BACKEND_HELP = ("auto, onnxruntime, tensorrt, an engine installed under the rnnrt.engines entry-point group, or "
                "module.path:callable")


# --- argument types -----------------------------------------------------------------------------------


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]`` (argparse turns the ArgumentTypeError into a usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is less than {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{value} is more than {high}")
        return value

    parse.__name__ = "integer"
    return parse


POSITIVE = int_at_least(1)
NON_NEGATIVE = int_at_least(0)


def shared_value(text: str) -> tuple[str, Any]:
    """An argparse type: ``NAME=VALUE`` with VALUE a JSON number or list (``sr=16000``, ``w=[1, 2]``)."""
    name, eq, value = text.partition("=")
    try:
        if not eq or not name:
            raise ValueError
        parsed = json.loads(value)
        if not isinstance(parsed, (int, float, list)):
            raise ValueError
        return name, parsed
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE with a JSON number or list, e.g. sr=16000")


# --- deprecated spellings -----------------------------------------------------------------------------


class DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: stores into the new flag's dest (appends, for a repeatable flag) and records
    one deprecation warning. Hidden from ``--help``; :func:`rnnrt.cli.main` logs the warning."""

    def __init__(self, option_strings, dest, replacement: str, append: bool = False, nargs=None, const=None, **kwargs):
        super().__init__(option_strings, dest, nargs=nargs, const=const, help=argparse.SUPPRESS, **kwargs)
        self.replacement = replacement
        self.append = append

    def __call__(self, parser, namespace, values, option_string=None):
        value = self.const if self.nargs == 0 else values
        if self.append:
            value = list(getattr(namespace, self.dest, None) or []) + [value]
        setattr(namespace, self.dest, value)
        used = list(getattr(namespace, "_deprecated", None) or [])
        if (option_string, self.replacement) not in used:
            used.append((option_string, self.replacement))
        namespace._deprecated = used


def alias(p: argparse.ArgumentParser, old: str, dest: str, replacement: str, **kwargs) -> None:
    """Adds ``old`` as a hidden, deprecated spelling of the flag whose dest is ``dest``."""
    p.add_argument(old, dest=dest, action=DeprecatedAlias, replacement=replacement, default=argparse.SUPPRESS, **kwargs)


# --- flag groups ------------------------------------------------------------------------------------------


def add_session_group(p: argparse.ArgumentParser) -> None:
    """Options of the Session a subcommand runs (run, bench)."""
    g = p.add_argument_group("session")
    g.add_argument("--backend", default="auto", type=backend_name, metavar="NAME",
                   help=f"Engine backend: {BACKEND_HELP} (default: auto = TensorRT when a plan is built and a GPU "
                   "is usable, else ONNX Runtime).")
    g.add_argument("--threads", type=POSITIVE, default=None, metavar="N", help="ONNX Runtime intra-op threads.")
    g.add_argument("--streams", type=POSITIVE, default=None, metavar="N",
                   help="Slots of the Session: the batch size of a dynamic-batch model (run: default from the feed; "
                   "bench: required for a dynamic batch).")


def add_logging_group(p: argparse.ArgumentParser) -> None:
    """``-v``/``-q`` after the subcommand too (``rnnrt convert x -v`` == ``rnnrt -v convert x``)."""
    g = p.add_argument_group("logging")
    g.add_argument("-v", dest="verbose", action="count", default=argparse.SUPPRESS, help="Debug logging.")
    g.add_argument("-q", "--quiet", dest="quiet", action="store_true", default=argparse.SUPPRESS,
                   help="Only warnings and errors.")


def add_trt_module(p: argparse.ArgumentParser, default: str, runtimes: bool = False) -> None:
    choices = ["auto", "tensorrt", "tensorrt_rtx"] + (["tensorrt_lean", "tensorrt_dispatch"] if runtimes else [])
    p.add_argument("--trt-module", choices=choices, default="auto", help=f"TensorRT module (default: auto = {default}).")


def add_output(p: argparse.ArgumentParser, help: str, *, required: bool = False, metavar: str = "PATH") -> None:
    p.add_argument("-o", "--output", default=None, required=required, metavar=metavar, help=help)


def add_json(p: argparse.ArgumentParser, schema: str) -> None:
    p.add_argument("--json", default=None, metavar="PATH",
                   help=f"Write the report as JSON (schema {schema}) to PATH; '-' prints it instead of the text.")


def add_shared(p: argparse.ArgumentParser, help: str, *, deprecated_set: bool = False) -> None:
    """``--shared NAME=VALUE`` (repeatable); ``deprecated_set``: ``--set`` keeps working for one release."""
    p.add_argument("--shared", action="append", default=[], type=shared_value, metavar="NAME=VALUE", help=help)
    if deprecated_set:
        alias(p, "--set", "shared", "--shared (--set now only folds a constant in `rnnrt convert`)",
              type=shared_value, append=True, metavar="NAME=VALUE")


def add_dim(p: argparse.ArgumentParser, *, ranges: bool, help: str) -> None:
    metavar = "NAME=N|MIN:OPT:MAX" if ranges else "NAME=N"
    p.add_argument("--dim", action="append", default=[], metavar=metavar, help=help)


# --- flag grammars --------------------------------------------------------------------------------------


def parse_dims(items: list[str], command: str, *, ranges: bool) -> dict[str, Any]:
    """``--dim`` items by name: ``{"chunk": 512}`` (one size each), or with ``ranges`` the text of each
    (``{"T": "1:16:256"}``, checked by :func:`rnnrt.build.api.dim_range`).

    Raises:
        ConfigError: An item that is not ``NAME=N`` (or ``NAME=MIN:OPT:MAX`` with ``ranges``), or a range
            where ``command`` runs one size.
    """
    dims: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if ranges:
            if not sep or not name or not value:
                raise ConfigError(fmt(f"--dim {item!r}", "Is not NAME=N or NAME=MIN:OPT:MAX",
                                      "For example --dim T=1:16:256 (or --dim chunk=512 for one size)."))
            dims[name] = value
            continue
        if sep and name and ":" in value:
            raise ConfigError(fmt(f"--dim {item!r}", f"Is a range; `rnnrt {command}` runs one size",
                                  f"Give one size: --dim {name}=N."))
        if not sep or not name or not value.isdigit() or int(value) < 1:
            raise ConfigError(fmt(f"--dim {item!r}", "Is not NAME=N", "For example --dim chunk=512."))
        dims[name] = int(value)
    return dims


def parse_assignments(items: list[str], flag: str) -> dict[str, str]:
    """``["sr=16000", ...]`` -> ``{"sr": "16000"}`` (the value is read as YAML where it is used)."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(fmt(f"{flag} {item!r}", "Is not NAME=VALUE", f"For example {flag} sr=16000."))
        out[name] = value
    return out
