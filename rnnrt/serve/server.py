"""Runs a real Triton Inference Server on a model repository (``rnnrt serve``).

The server binary is, in order: the one given (``tritonserver=PATH``), the embedded one unpacked from
the ``nvidia-pytriton`` wheel (:mod:`rnnrt.serve.install`), or a ``tritonserver`` on ``PATH`` (the NGC
container). For the embedded binary, a backend folder with the python backend and the stub for this
Python is passed as ``--backend-directory``, ``LD_LIBRARY_PATH`` gets the wheel's libraries and this
interpreter's ``libpython``, ``PATH`` starts with this interpreter's folder and ``PYTHONPATH`` with the
folder holding this ``rnnrt`` package, so the python backend's stub imports the same rnnrt and numpy.

Every endpoint binds ``127.0.0.1`` unless another host is asked for; ports in use are refused before
the server starts. The server runs from a neutral working directory in its own process group and is
stopped by its PID (SIGTERM, then SIGKILL; :meth:`TritonServer.shutdown` does not wait for open streams).

Example::

    from rnnrt.serve.server import TritonServer

    with TritonServer("repo/", grpc_port=8001) as server:
        server.wait_ready(["lm"])
        print(server.endpoints())
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Iterable, Optional, Union

from rnnrt.errors import EngineError, fmt

__all__ = ["TritonServer", "check_ports_free", "find_tritonserver", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Refuses ports that something already listens on (tritonserver would fail seconds later, in its own words).

    Raises:
        EngineError: One line naming the port, its option and the fix.
    """
    import errno

    bind_host = "127.0.0.1" if host in ("", "localhost") else host
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    for option, port in ports.items():
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
            try:
                s.bind((bind_host, port))
            except OSError as err:
                if err.errno != errno.EADDRINUSE:
                    raise EngineError(fmt(f"{option} {port}", f"Cannot be bound on {host}: {err.strerror}; pick "
                                          "another port or host")) from None
                raise EngineError(fmt(f"{option} {port}", f"Is already in use on {host}; stop what listens there "
                                      f"or pick another port ({option} 0 = a free one)")) from None


def find_tritonserver(path: Union[str, os.PathLike, None] = None) -> tuple[Path, bool]:
    """Returns ``(binary, embedded)``: the given binary, the embedded one, or ``tritonserver`` on PATH.

    Raises:
        EngineError: None of them exists.
    """
    from rnnrt.serve.install import installed, server_home

    if path is not None:
        p = Path(path)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise EngineError(fmt(f"tritonserver {str(p)!r}", "Is not an executable file"))
        files = installed()
        return p, files is not None and p.resolve() == files.binary.resolve()
    files = installed()
    if files is not None:
        return files.binary, True
    found = shutil.which("tritonserver")
    if found:
        return Path(found), False
    raise EngineError(fmt("tritonserver", f"Not installed in {str(server_home())!r} and not on PATH",
                          "Run `python -m rnnrt.serve.install` (make test does), or pass --tritonserver PATH."))


class TritonServer:
    """One ``tritonserver`` process serving a model repository (see the module doc)."""

    def __init__(
        self,
        repo: Union[str, os.PathLike],
        *,
        host: str = "127.0.0.1",
        grpc_port: Optional[int] = None,
        http_port: Optional[int] = None,
        metrics_port: Optional[int] = None,
        tritonserver: Union[str, os.PathLike, None] = None,
        log: Union[str, os.PathLike, IO, None] = None,
        verbose: int = 0,
        extra_args: Iterable[str] = (),
    ) -> None:
        """
        Args:
            repo (str | os.PathLike): The model repository.
            host (str): Address every endpoint binds. Defaults to ``127.0.0.1``.
            grpc_port (int | None): Defaults to a free port.
            http_port (int | None): Defaults to a free port.
            metrics_port (int | None): Defaults to a free port.
            tritonserver (str | os.PathLike | None): The binary (see :func:`find_tritonserver`).
            log (str | os.PathLike | IO | None): Where the server's output goes: a file path, an open
                file, or None for a file ``server.log`` in a temporary folder (see :attr:`log_path`).
            verbose (int): Triton's ``--log-verbose``. Defaults to 0.
            extra_args (Iterable[str]): More ``tritonserver`` arguments.
        """
        self.repo = Path(repo).absolute()
        self.host = host
        self.grpc_port = grpc_port or free_port(host)
        self.http_port = http_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.binary, self.embedded = find_tritonserver(tritonserver)
        self._log_arg = log
        self.verbose = verbose
        self.extra_args = list(extra_args)
        self.process: Optional[subprocess.Popen] = None
        self.log_path: Optional[Path] = None
        self._workdir: Optional[tempfile.TemporaryDirectory] = None
        self._log_file: Optional[IO] = None

    # -- life cycle -----------------------------------------------------------------------------------------
    def command(self) -> list[str]:
        """The ``tritonserver`` command line."""
        cmd = [str(self.binary), f"--model-repository={self.repo}",
               f"--http-address={self.host}", f"--http-port={self.http_port}",
               f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
               f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
               "--allow-gpu-metrics=false", "--allow-cpu-metrics=true", f"--log-verbose={self.verbose}"]
        if self.embedded:
            from rnnrt.serve.install import installed

            files = installed()
            cmd.append(f"--backend-directory={files.backend_dir()}")
            cmd.append(f"--cache-directory={files.root / 'caches'}")
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        """The server's environment (see the module doc)."""
        env = dict(os.environ)
        pkg_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in [pkg_root, env.get("PYTHONPATH", "")] if p)
        env["RNNRT_PYTHONPATH"] = pkg_root
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        if self.embedded:
            from rnnrt.serve.install import installed

            files = installed()
            libdir = sysconfig.get_config_var("LIBDIR") or ""
            parts = [str(files.libs), libdir, env.get("LD_LIBRARY_PATH", "")]
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in parts if p)
        return env

    def start(self) -> "TritonServer":
        """Starts the server process (returns at once; see :meth:`wait_ready`)."""
        if self.process is not None:
            raise EngineError(fmt("TritonServer", "Is already started"))
        check_ports_free(self.host, {"--grpc-port": self.grpc_port, "--http-port": self.http_port,
                                     "--metrics-port": self.metrics_port})
        self._workdir = tempfile.TemporaryDirectory(prefix="rnnrt-triton-")
        if self._log_arg is None:
            self.log_path = Path(self._workdir.name) / "server.log"
            self._log_file = open(self.log_path, "wb")
            out: IO = self._log_file
        elif isinstance(self._log_arg, (str, os.PathLike)):
            self.log_path = Path(self._log_arg)
            self._log_file = open(self.log_path, "wb")
            out = self._log_file
        else:
            out = self._log_arg
        self.process = subprocess.Popen(self.command(), cwd=self._workdir.name, env=self.environment(),
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        return self

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://{self._client_host()}:{self.http_port}{path}", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as err:
            return err.code
        except (urllib.error.URLError, OSError):
            return 0

    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else ("[::1]" if self.host == "::" else self.host)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log (when it goes to a file)."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        if self._log_file is not None:
            self._log_file.flush()
        text = self.log_path.read_bytes().decode("utf-8", "replace")
        errors = [line for line in text.splitlines() if line.startswith("E") and "CudaDriverHelper" not in line]
        return ("\n".join(errors[-5:]) + "\n" if errors else "") + text[-chars:]

    def wait_ready(self, models: Iterable[str] = (), timeout: float = 120.0) -> None:
        """Waits until the server and ``models`` are ready.

        Raises:
            EngineError: The server exited, or is not ready within ``timeout`` seconds (the log's end
                is in the message).
        """
        if self.process is None:
            raise EngineError(fmt("TritonServer", "Is not started"))
        models = list(models)
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise EngineError(fmt("tritonserver", f"Exited with code {code} before it was ready: "
                                      f"...{self.log_tail(800)}", "Read the server log above."))
            if self.is_ready(models):
                return
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise EngineError(fmt("tritonserver", f"Not ready after {timeout:.0f} s: ...{tail}"))
            time.sleep(0.1)

    def is_ready(self, models: Iterable[str] = ()) -> bool:
        """Whether the server and ``models`` answer ready now."""
        return self._get("/v2/health/ready") == 200 and all(self._get(f"/v2/models/{m}/ready") == 200 for m in models)

    def endpoints(self) -> dict[str, str]:
        """The addresses clients use."""
        h = self._client_host()
        return {"grpc": f"{h}:{self.grpc_port}", "http": f"http://{h}:{self.http_port}",
                "metrics": f"http://{h}:{self.metrics_port}/metrics"}

    def metrics(self) -> str:
        """The metrics endpoint's text (Prometheus format)."""
        with urllib.request.urlopen(self.endpoints()["metrics"], timeout=5) as r:
            return r.read().decode()

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """Stops the server by its PID (SIGTERM; SIGKILL after ``timeout``); returns its exit code."""
        proc, self.process = self.process, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            code = proc.returncode
            try:  # the python-backend stubs share the server's process group; none may outlive it
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def idle_sequences_only(self) -> bool:
        """Whether nothing but open sequences keeps a stopping server: its log's last count of in-flight
        inferences (Triton counts open sequences among them) is not 0, every model is an rnnrt model (its
        ``rnnrt_busy`` gauge is there), none ran a request in the last metrics period and no request
        waits in Triton's queues. False when the log or the metrics cannot be read."""
        if not self._log_counts_inflight():
            return False
        try:
            text = self.metrics()
        except (OSError, ValueError):
            return False
        pending: dict[str, float] = {}
        busy: dict[str, float] = {}
        for line in text.splitlines():
            for prefix, into in (("nv_inference_pending_request_count{", pending), ("rnnrt_busy{", busy)):
                if line.startswith(prefix) and 'model="' in line:
                    model = line.split('model="', 1)[1].split('"', 1)[0]
                    into[model] = into.get(model, 0.0) + float(line.rsplit(" ", 1)[1])
        models = set(pending) | set(busy)
        return bool(models) and all(busy.get(m, 1.0) == 0 and pending.get(m, 0.0) == 0 for m in models)

    def _log_counts_inflight(self) -> bool:
        """Whether the stopping server's last log line about in-flight inferences counts some."""
        if self.log_path is None or not self.log_path.is_file():
            return False
        if self._log_file is not None:
            self._log_file.flush()
        with open(self.log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            tail = f.read().decode("utf-8", "replace")
        counts = re.findall(r"Found (\d+) model versions that have in-flight inferences", tail)
        return bool(counts) and int(counts[-1]) > 0

    def shutdown(self, timeout: float = 30.0, poll: float = 0.1) -> tuple[Optional[int], bool]:
        """Stops the server at once when no request is in flight; returns ``(exit code, dropped)``.

        SIGTERM first: Triton then answers the requests in flight and waits for open sequences to end.
        A stream's sequence may stay open for hours (the state of an rnnrt stream lives only in the
        server and cannot be waited out), so once :meth:`idle_sequences_only` holds for three polls in a
        row the server is stopped by its PID (SIGKILL; ``dropped`` is True: the open streams are gone,
        as they would be at the end of any stop). After ``timeout`` seconds it is stopped anyway.
        """
        proc = self.process
        if proc is None:
            return None, False
        dropped = False
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            quiet = 0
            while proc.poll() is None and time.monotonic() < deadline:
                quiet = quiet + 1 if self.idle_sequences_only() else 0
                if quiet >= 3:
                    dropped = proc.poll() is None
                    break
                time.sleep(poll)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return self.stop(), dropped

    def cleanup(self) -> None:
        """Removes the working folder (and the log in it)."""
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()


def write_repository(configs: Iterable[Union[str, os.PathLike]], repo: Union[str, os.PathLike], *,
                     name: Optional[str] = None, max_sequences: Optional[int] = None, idle_us: int = 60_000_000,
                     backend: str = "auto", instance_kind: str = "auto", queue_delay_us: int = 0,
                     shared: Optional[dict] = None, max_frames: Optional[int] = None,
                     max_request_bytes: Optional[int] = None) -> list[str]:
    """Writes a python-backend model per config into ``repo``; returns the model names.

    ``name`` names the model of a single config; otherwise each model is named after its config's folder.
    ``shared`` gives the values of inputs without a batch axis (e.g. ``{"sr": 16000}``); each model takes
    those of its own inputs. ``max_frames`` and ``max_request_bytes`` bound each request (see
    :func:`rnnrt.serve.triton.export_triton`).

    Raises:
        ConfigError: No config, ``name`` with several configs, two models with one name, or a ``shared``
            name that is no config's input without a batch axis.
    """
    from rnnrt.ir.config import load_config
    from rnnrt.errors import ConfigError
    from rnnrt.serve.triton import export_triton

    configs = list(configs)
    if not configs:
        raise ConfigError(fmt("rnnrt serve", "Got no model config", "Pass DIR/model.yaml (or --repo DIR)."))
    if name is not None and len(configs) > 1:
        raise ConfigError(fmt("rnnrt serve --name", f"Names one model but {len(configs)} configs were given",
                              "Serve one config with --name, or several named after their folders."))
    names, used = [], set()
    shared = dict(shared or {})
    for path in configs:
        cfg = load_config(path)
        model = name if name is not None else cfg.base_dir.name
        if model in names:
            raise ConfigError(fmt(f"Model name {model!r}", "Is given to two configs",
                                  "Keep each config in a folder of its own name."))
        own = {t.name: shared[t.name] for t in cfg.inputs if t.batch_axis is None and t.name in shared}
        used.update(own)
        export_triton(cfg, repo, engine="python", name=model, max_sequences=max_sequences, idle_us=idle_us,
                      backend=backend, instance_kind=instance_kind, queue_delay_us=queue_delay_us, shared=own,
                      max_frames=max_frames, max_request_bytes=max_request_bytes)
        names.append(model)
    unused = sorted(set(shared) - used)
    if unused:
        raise ConfigError(fmt(f"rnnrt serve --shared {unused[0]}=...", "Is no model's input without a batch axis",
                              "Give --shared only for such inputs (e.g. Silero's sr)."))
    return names


def serve(configs: Iterable[Union[str, os.PathLike]] = (), *, repo: Union[str, os.PathLike, None] = None,
          name: Optional[str] = None, host: str = "127.0.0.1", grpc_port: int = 8001, http_port: Optional[int] = None,
          metrics_port: Optional[int] = None, tritonserver: Union[str, os.PathLike, None] = None,
          max_sequences: Optional[int] = None, idle_us: int = 60_000_000, backend: str = "auto",
          instance_kind: str = "auto", queue_delay_us: int = 0, shared: Optional[dict] = None,
          max_frames: Optional[int] = None, max_request_bytes: Optional[int] = None,
          log: Union[str, os.PathLike, None] = None,
          verbose: int = 0,
          timeout: float = 300.0, exit_timeout: int = 30, out: IO = sys.stdout) -> int:
    """Serves model configs (or an existing repository) on a Triton server until SIGINT/SIGTERM (``rnnrt serve``).

    Writes the repository (a temporary folder unless ``repo`` is given), starts the server, waits until
    every model is ready, prints the endpoints and ``ready``, then blocks. SIGINT or SIGTERM stops the
    server (:meth:`TritonServer.shutdown`: the requests in flight are answered, open streams do not hold
    it) and returns 0; a server that exits on its own returns 1. ``max_frames`` and ``max_request_bytes``
    bound each request (see :func:`rnnrt.serve.triton.export_triton`).

    Raises:
        ConfigError: Bad configs or names (see :func:`write_repository`).
        EngineError: A port in use (one line, before the server starts), no server binary, or the server
            did not get ready (its log's end is in the message).
    """
    import threading

    configs = list(configs)
    tmp = None
    server: Optional[TritonServer] = None
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if configs:
            if repo is None:
                tmp = tempfile.TemporaryDirectory(prefix="rnnrt-repo-")
                repo = tmp.name
            names = write_repository(configs, repo, name=name, max_sequences=max_sequences, idle_us=idle_us,
                                     backend=backend, instance_kind=instance_kind, queue_delay_us=queue_delay_us,
                                     shared=shared, max_frames=max_frames, max_request_bytes=max_request_bytes)
        else:
            if repo is None or not Path(repo).is_dir():
                from rnnrt.errors import ConfigError

                raise ConfigError(fmt("rnnrt serve", "Got no model config and no existing --repo",
                                      "Pass DIR/model.yaml, or --repo DIR of an exported repository."))
            names = sorted(p.name for p in Path(repo).iterdir() if (p / "config.pbtxt").is_file())
        server = TritonServer(repo, host=host, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port,
                              tritonserver=tritonserver, log=log, verbose=verbose,
                              extra_args=[f"--exit-timeout-secs={int(exit_timeout)}"])
        server.start()
        print(f"rnnrt serve: {server.binary} ({'embedded' if server.embedded else 'given'}), pid {server.pid}",
              file=out)
        print(f"  log      {server.log_path}", file=out, flush=True)
        deadline = time.monotonic() + timeout
        while not stop.is_set() and not server.is_ready(names):
            code = server.process.poll()
            if code is not None:
                raise EngineError(fmt("tritonserver", f"Exited with code {code} before it was ready: "
                                      f"...{server.log_tail(800)}", "Read the server log above."))
            if time.monotonic() > deadline:
                raise EngineError(fmt("tritonserver", f"Not ready after {timeout:.0f} s: ...{server.log_tail(800)}"))
            stop.wait(0.1)
        if not stop.is_set():
            for model in names:
                print(f"  model    {model}", file=out)
            for key, value in server.endpoints().items():
                print(f"  {key:<8} {value}", file=out)
            print("ready", file=out, flush=True)
        while not stop.is_set():
            if server.process.poll() is not None:
                print(f"rnnrt serve: tritonserver exited with code {server.process.returncode}\n"
                      f"{server.log_tail(1500)}", file=sys.stderr, flush=True)
                return 1
            stop.wait(0.5)
        code, dropped = server.shutdown(timeout=exit_timeout)
        how = "no request in flight; open streams dropped" if dropped else f"tritonserver exit code {code}"
        print(f"rnnrt serve: stopped (signal {received[0] if received else '?'}; {how})", file=out, flush=True)
        return 0
    finally:
        if server is not None:
            server.stop()
            server.cleanup()
        for s, handler in previous.items():
            signal.signal(s, handler)
        if tmp is not None:
            tmp.cleanup()
