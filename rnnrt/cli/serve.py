"""``rnnrt serve``: serves model configs on a real Triton Inference Server until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse

from rnnrt.cli.args import NON_NEGATIVE, POSITIVE, Subcommand, int_at_least
from rnnrt.cli.triton_model import add_triton_model_group, request_limits


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("configs", nargs="*", metavar="CONFIG", help="Model YAML configs (DIR/model.yaml); each model is "
                   "named after DIR.")
    p.add_argument("--name", default=None, help="Model name (one config only).")
    p.add_argument("--repo", default=None, metavar="DIR",
                   help="Write the repository here (default: a temporary folder); without configs, serve this "
                   "existing repository as it is.")
    port = int_at_least(0, 65535)
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1",
                   help="Address every endpoint binds (default: 127.0.0.1; 0.0.0.0 exposes the server).")
    g.add_argument("--grpc-port", type=port, default=8001, metavar="P",
                   help="gRPC port (default: 8001; 0 = a free port).")
    g.add_argument("--http-port", type=port, default=0, metavar="P", help="HTTP port (default: a free port).")
    g.add_argument("--metrics-port", type=port, default=0, metavar="P", help="Metrics port (default: a free port).")
    g.add_argument("--tritonserver", default=None, metavar="PATH",
                   help="The tritonserver binary (default: the embedded one, else tritonserver on PATH).")
    g.add_argument("--log", default=None, metavar="FILE", help="Write the server's log here (default: a temporary file).")
    g.add_argument("--log-verbose", type=NON_NEGATIVE, default=0, metavar="N", help="Triton's --log-verbose level.")
    g.add_argument("--ready-timeout", type=POSITIVE, default=300, metavar="S",
                   help="Seconds to wait until every model is ready (default: 300).")
    g.add_argument("--exit-timeout", type=NON_NEGATIVE, default=30, metavar="S",
                   help="Seconds a stopping server waits for in-flight work and open sequences (default: 30).")
    add_triton_model_group(p)


def run(args: argparse.Namespace) -> int:
    from rnnrt.paths import check_input_file, check_name
    from rnnrt.serve.server import serve

    for path in args.configs:
        check_input_file(path, "Config")
    if args.name is not None:
        check_name(args.name, "--name")
    return serve(args.configs, repo=args.repo, name=args.name, host=args.host, grpc_port=args.grpc_port or None,
                 http_port=args.http_port or None, metrics_port=args.metrics_port or None,
                 tritonserver=args.tritonserver, max_sequences=args.max_sequences, idle_us=args.idle_us,
                 backend=args.backend, instance_kind=args.instance_kind, queue_delay_us=args.queue_delay_us,
                 shared=dict(args.shared), log=args.log, verbose=args.log_verbose, timeout=args.ready_timeout,
                 exit_timeout=args.exit_timeout, **request_limits(args))


COMMAND = Subcommand(
    "serve",
    help="Serve model configs on a real Triton Inference Server (blocks until Ctrl-C/SIGTERM).",
    description="Writes a Triton repository (--engine python, see export-triton) for each config, starts "
    "tritonserver (the embedded one from `python -m rnnrt.serve.install`, --tritonserver PATH, or one on "
    "PATH), waits until every model is ready, prints the endpoints and 'ready', and blocks until SIGINT/SIGTERM "
    "stop the server. Binds 127.0.0.1 unless --host says otherwise. Client: rnnrt.client.StreamClient.",
    add_arguments=add_arguments,
    run=run,
    examples="rnnrt serve lm/model.yaml --name lm --grpc-port 8001\n"
    "rnnrt serve a/model.yaml b/model.yaml --max-sequences 256 --idle-us 30000000\n"
    "rnnrt serve vad/model.yaml --shared sr=16000\n"
    "rnnrt serve --repo triton_repo/ --grpc-port 9001 --http-port 9000 --metrics-port 9002",
)
