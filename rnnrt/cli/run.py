"""``rnnrt run``: replays a recorded feed (``call{k}/{input}``) through a Session and writes its outputs."""

from __future__ import annotations

import argparse

from rnnrt.cli.args import POSITIVE, Subcommand, add_output, add_session_group, alias
from rnnrt.cli.output import dims_text
from rnnrt.errors import BindingError, ConfigError, fmt
from rnnrt.runtime.npz import DEFAULT_MAX_FEED_MIB


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="The model YAML config.")
    p.add_argument("--feed", required=True, metavar="NPZ", help="Input .npz with keys call{k}/{input}.")
    add_output(p, "Output .npz to write (keys call{k}/{output}); its folder must exist.", required=False)
    alias(p, "--out", "output", "--output", metavar="PATH")
    p.add_argument("--max-feed-mib", type=POSITIVE, default=DEFAULT_MAX_FEED_MIB, metavar="MIB",
                   help="Refuse a feed whose arrays hold more than this, before decompressing any "
                   "(default: %(default)s).")
    add_session_group(p)
    alias(p, "--batch-size", "streams", "--streams", type=POSITIVE, metavar="N")


def run(args: argparse.Namespace) -> int:
    from rnnrt.ir.config import load_config
    from rnnrt.paths import check_input_file, check_output_file
    from rnnrt.runtime.npz import read_calls, write_npz
    from rnnrt.runtime.session import load

    if args.output is None:
        raise ConfigError(fmt("run", "No output given", "rnnrt run MODEL.yaml --feed FEED.npz -o OUT.npz"))
    check_output_file(args.output, "-o/--output")
    check_input_file(args.config, "Config")
    cfg = load_config(args.config)
    outputs = sorted(t.name for t in cfg.outputs)
    # Recorded outputs (as in the golden io.npz files) are skipped unread.
    calls, _ = read_calls(args.feed, [t.name for t in cfg.inputs], outputs, args.max_feed_mib << 20, recorded=False)
    streams = args.streams
    if streams is None and calls:
        for t in cfg.inputs:
            if t.batch_axis is not None and isinstance(t.shape[t.batch_axis], str) and t.name in calls[0]:
                if calls[0][t.name].ndim <= t.batch_axis:
                    raise BindingError(fmt(f"Feed key 'call0/{t.name}'", f"Has shape {calls[0][t.name].shape}",
                                           f"Expected {len(t.shape)} dims {dims_text(t.shape)}."))
                # A folded batch axis (batch_fold, e.g. T*N frame rows) holds outer*N*inner entries.
                streams = int(calls[0][t.name].shape[t.batch_axis]) // t.batch_entries(1)
                break
    kw = {"batch_size": streams} if streams is not None else {}
    if args.threads is not None:
        kw["threads"] = args.threads
    out = {}
    with load(cfg, backend=args.backend, **kw) as session:
        for k, frame in enumerate(calls):
            for name, value in session.step(frame).items():
                out[f"call{k}/{name}"] = value
    write_npz(args.output, out)
    print(f"{len(calls)} calls, outputs {outputs} -> {args.output}")
    return 0


COMMAND = Subcommand(
    "run",
    help="Replay a recorded stream through a Session.",
    description="Replays FEED.npz (keys call{k}/{input}; call k is one step, state carried) and writes "
    "call{k}/{output} for every model output to the -o .npz. The feed's keys and array headers are checked "
    "before anything is decompressed, and the output path before any step runs.",
    add_arguments=add_arguments,
    run=run,
    examples="rnnrt run out/model.yaml --feed feed.npz -o out.npz\n"
    "rnnrt run out/model.yaml --feed feed.npz -o out.npz --backend onnxruntime --threads 1",
)
