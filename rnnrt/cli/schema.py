"""``rnnrt schema``: the JSON schema of the model config (or of the import options)."""

from __future__ import annotations

import argparse

from rnnrt.cli.args import Subcommand


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=["model", "import"], default="model",
                   help="model: the model config written by convert; import: the options of `convert --config`.")


def run(args: argparse.Namespace) -> int:
    import json

    from rnnrt.importers import options
    from rnnrt.ir import config

    print(json.dumps(config.json_schema() if args.kind == "model" else options.json_schema(), indent=2))
    return 0


COMMAND = Subcommand(
    "schema",
    help="Print the JSON schema of the model YAML config (or of import options).",
    description="Prints the JSON schema of the model config that convert writes (--kind model) or of the "
    "import options `rnnrt convert --config` reads (--kind import).",
    add_arguments=add_arguments,
    run=run,
    examples="rnnrt schema > model.schema.json\nrnnrt schema --kind import",
)
