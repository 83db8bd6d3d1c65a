"""The ``rnnrt`` command line.

One module per subcommand (``convert``, ``build``, ``verify``, ``run``, ``bench``, ``inspect``,
``export_triton``, ``serve``, ``schema``), each with ``add_arguments``, ``run`` and its :class:`Subcommand`
row ``COMMAND``; :data:`SUBCOMMANDS` lists them in the order ``rnnrt --help`` does. The flag groups and flag
grammars the subcommands share are in :mod:`rnnrt.cli.args`, printing in :mod:`rnnrt.cli.output`. A handler
parses its flags and calls the documented Python function that does the work (:func:`rnnrt.convert`,
:func:`rnnrt.build`, :func:`rnnrt.verify`, ...). Heavy modules are imported inside the handlers so
``rnnrt --help`` stays fast.

A flag means one thing everywhere:

- ``-o/--output``: where the subcommand writes (convert: a directory; build: the plan; run: the .npz).
- ``--name``: the name of what is written (convert: file stem; export-triton: Triton model name).
- ``--backend``, ``--threads``, ``--streams``: the Session (run, bench; ``--streams`` also verify;
  ``--backend`` also the Session inside a served model: export-triton --engine python, serve); ``--streams`` is
  the number of slots, the batch size of a dynamic-batch graph.
- ``--shared NAME=VALUE`` (bench, verify, serve, export-triton): an input fed one value at every step;
  ``--set NAME=VALUE`` (convert only): an input bound to a constant and folded into the graph.
- ``--dim NAME=N`` or ``NAME=MIN:OPT:MAX``: a dynamic dim by name (build, export-triton: a range, N = N:N:N;
  bench, verify: one size).
- ``--json PATH`` (inspect, bench, verify, build): the report as JSON; ``--json -`` prints it instead.
- ``--batch fixed|dynamic`` (convert): whether the graph's batch (stream) axis is symbolic;
  ``--batch-profile MIN:OPT:MAX`` (build): the range of stream counts a plan accepts.
- ``-v``, ``-q/--quiet`` (before or after the subcommand): logging.

Old spellings keep working and log one deprecation warning: ``build --batch`` (``--batch-profile``),
``build --verbose`` (``--layers``), ``run --batch-size`` and ``bench --batch`` (``--streams``), ``run --out``
(``--output``), ``bench --set`` and ``verify --set`` (``--shared``).

Exit codes: 0 success; 2 a user error (an :class:`~rnnrt.errors.RnnrtError`, a bad flag, a file that cannot be
read or written), printed as ``rnnrt <command>: error: <message>`` without a traceback; 130 interrupted. A bug
(:class:`~rnnrt.errors.RnnrtInternalError` or any other exception) keeps its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from rnnrt.cli import bench, build, convert, export_triton, inspect, run, schema, serve, verify
from rnnrt.cli.args import Subcommand, add_logging_group
from rnnrt.errors import RnnrtError, fmt

__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "main"]

G_LOGGER = logging.getLogger("rnnrt")

SUBCOMMANDS: tuple[Subcommand, ...] = tuple(
    m.COMMAND for m in (convert, build, verify, run, bench, inspect, export_triton, serve, schema)
)
"""Every subcommand, in the order ``rnnrt --help`` lists them."""


class _Parser(argparse.ArgumentParser):
    """Prints a usage error as ``rnnrt COMMAND: error: ...`` (the command's own prog), then the usage; exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n{self.format_usage()}")


class _Formatter(argparse.HelpFormatter):
    """Wraps the description, keeps the examples' lines as written."""

    def _fill_text(self, text, width, indent):
        if text.startswith("examples:\n"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def build_parser() -> argparse.ArgumentParser:
    """The ``rnnrt`` argument parser, with one subparser per row of :data:`SUBCOMMANDS`."""
    parser = _Parser(
        prog="rnnrt", description="rnnrt: stateful recurrent inference for TensorRT (and ONNX Runtime on CPU).",
        epilog="Run `rnnrt COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="Debug logging (also `-v` after the command).")
    parser.add_argument("-q", "--quiet", action="store_true", help="Only warnings and errors.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for cmd in SUBCOMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description,
                           epilog="examples:\n" + "\n".join("  " + line for line in cmd.examples.splitlines())
                           if cmd.examples else None,
                           formatter_class=_Formatter)
        cmd.add_arguments(p)
        add_logging_group(p)
        p.set_defaults(handler=cmd.run, parser=p)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parses ``argv``; an unknown flag is reported by the subcommand's parser (``rnnrt run: error: ...``)."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rnnrt")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rnnrt`` console script; returns the process exit code."""
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as exit_:  # --help, --version, usage errors: argparse has printed what to say
        return exit_.code if isinstance(exit_.code, int) else 2
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="[%(levelname)s] %(name)s: %(message)s")
    for old, new in getattr(args, "_deprecated", None) or []:
        G_LOGGER.warning("rnnrt %s %s is deprecated; use %s.", args.command, old, new)
    try:
        return int(args.handler(args) or 0)
    except RnnrtError as err:
        G_LOGGER.debug("rnnrt %s failed", args.command, exc_info=True)
        print(f"rnnrt {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `rnnrt schema | head`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (keeps the interpreter's final flush quiet)
        return 1
    except OSError as err:  # a file the user named cannot be read or written
        G_LOGGER.debug("rnnrt %s failed", args.command, exc_info=True)
        subject = repr(err.filename) if err.filename else "I/O"
        print(f"rnnrt {args.command}: error: {fmt(subject, err.strerror or str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnrt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
