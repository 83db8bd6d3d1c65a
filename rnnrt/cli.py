"""The ``rnnrt`` command line: convert | build | run | bench | inspect | schema | ...

Each subcommand lives in one ``_add_<name>(subparsers)`` function that registers its parser and sets
``func``; heavy modules are imported inside the handlers so ``rnnrt --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from rnnrt.errors import RnnrtError

G_LOGGER = logging.getLogger("rnnrt")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnrt", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="More logging (-vv: debug).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


# Subcommand registrars, in the order `rnnrt --help` lists them. Each module that owns a subcommand
# appends its registrar here (see the _add_* functions below).
_SUBCOMMANDS: list = []


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rnnrt`` console script; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    logging.basicConfig(level=level, format="[%(levelname)s] %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except RnnrtError as err:
        print(f"rnnrt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
