"""Running the app under uvicorn: in the foreground (the CLI) or in a background thread (tests,
benchmarks, the browser test), always on loopback unless told otherwise."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def uvicorn_config(app: Any, host: str = LOOPBACK, port: int = 8000, **kw: Any) -> uvicorn.Config:
    """One place for server settings: keep-alive, no access log spam, limits on connections."""
    kw.setdefault("log_level", "warning")
    kw.setdefault("access_log", False)
    kw.setdefault("timeout_keep_alive", 5)
    kw.setdefault("limit_concurrency", 256)
    kw.setdefault("timeout_graceful_shutdown", 5)
    return uvicorn.Config(app, host=host, port=port, **kw)


def serve_subprocess(model_dir: str | Path, port: int, **popen_kw: Any) -> subprocess.Popen[bytes]:
    """`skyfuse serve MODEL_DIR --port PORT` in a child process, with this interpreter.

    Why a process: a load test or browser test must not share the server's GIL; `popen_kw` chooses
    where its output goes (pipe one stream to see why it died in `wait_healthy`).
    """
    cmd = [
        sys.executable,
        "-c",
        "from skyfuse.cli import main; main()",
        "serve",
        str(model_dir),
        "--port",
        str(port),
    ]
    return subprocess.Popen(cmd, **popen_kw)


def wait_healthy(
    url: str, proc: subprocess.Popen[bytes], *, timeout_s: float, interval_s: float
) -> None:
    """Return once GET url/health answers 200; RuntimeError with the end of the server's piped output
    when the process exits first, RuntimeError when `timeout_s` passes."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stream = proc.stderr or proc.stdout
            out = stream.read().decode(errors="replace") if stream else ""
            raise RuntimeError(f"skyfuse serve exited with {proc.returncode}: {out[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval_s)
    raise RuntimeError(f"skyfuse serve on {url} did not become healthy in {timeout_s:g} s")


def stop_subprocess(proc: subprocess.Popen[bytes], *, timeout_s: float) -> None:
    """Ask a `serve_subprocess` server to stop (SIGTERM: uvicorn shuts down gracefully); kill it
    when it has not exited after `timeout_s`."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class BackgroundServer:
    """A uvicorn server in a daemon thread; `url` is set once it accepts connections."""

    def __init__(self, app: Any, host: str = LOOPBACK, port: int | None = None, **kw: Any) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(uvicorn_config(app, host, self.port, **kw))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="skyfuse-serve")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
