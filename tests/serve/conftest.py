"""Real Triton servers for the serving tests: `rnnrt serve` started as a user starts it, on free loopback
ports, stopped by its PID. The embedded server is installed on first use when `make test` has not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tritonserver_installed():
    """The embedded server's files (unpacked from the nvidia-pytriton wheel when missing)."""
    from rnnrt.serve.install import install, installed

    return installed() or install()


class ServeProcess:
    """A running `rnnrt serve` command."""

    def __init__(self, args: list[str], grpc_port: int, log: Path) -> None:
        from rnnrt.serve.server import free_port

        self.grpc_port = grpc_port
        self.http_port, self.metrics_port = free_port(), free_port()
        self.address = f"127.0.0.1:{grpc_port}"
        self.args = args + ["--grpc-port", str(grpc_port), "--http-port", str(self.http_port),
                            "--metrics-port", str(self.metrics_port), "--log", str(log)]
        self.log = log
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "rnnrt.cli", "serve", *self.args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.strip() == "ready":
                self._ready.set()

    def wait_ready(self, timeout: float = 240) -> "ServeProcess":
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._reader.join(2)
                log = self.log.read_text(errors="replace")[-3000:] if self.log.is_file() else ""
                self.stop()
                raise AssertionError("rnnrt serve did not get ready:\n" + "\n".join(self.lines[-30:]) + "\n" + log)
        return self

    def server_pid(self) -> int:
        line = next(x for x in self.lines if x.startswith("rnnrt serve:") and ", pid " in x)
        return int(line.rsplit("pid ", 1)[1])

    def metrics(self) -> str:
        """The metrics text, after the model's counters reached the server (it sends them every 50 ms)."""
        import urllib.request

        from rnnrt.serve.backend import METRICS_PERIOD

        time.sleep(4 * METRICS_PERIOD)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM to the `rnnrt serve` process by its PID; returns its exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


@pytest.fixture(scope="module")
def start_serve(tritonserver_installed, tmp_path_factory):
    """``start_serve(args, grpc_port=None)``: starts `rnnrt serve ARGS` and waits until ready; all are
    stopped (by PID) at the end of the module."""
    from rnnrt.serve.server import free_port

    started: list[ServeProcess] = []
    logs = tmp_path_factory.mktemp("serve_logs")

    def start(args: list[str], grpc_port: int | None = None, wait: bool = True) -> ServeProcess:
        proc = ServeProcess([str(a) for a in args], grpc_port or free_port(), logs / f"server{len(started)}.log")
        started.append(proc)
        return proc.wait_ready() if wait else proc

    yield start
    for proc in started:
        proc.stop()
