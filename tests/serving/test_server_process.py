"""`serve_subprocess` + `wait_healthy`: the child-process server used by the load benchmark and the
browser test; failures must say why (the server's own output), never hang."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from skyfuse.serving.server import free_port, serve_subprocess, stop_subprocess, wait_healthy

# A stand-in server: /health answers STATUS once the process is up.
STAND_IN = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(int(sys.argv[2]) if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *a):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _stand_in(status: int) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    cmd = [sys.executable, "-c", STAND_IN, str(port), str(status)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return f"http://127.0.0.1:{port}", proc


def test_returns_once_health_answers_200() -> None:
    url, proc = _stand_in(200)
    try:
        wait_healthy(url, proc, timeout_s=30.0, interval_s=0.05)
        assert proc.poll() is None
    finally:
        stop_subprocess(proc, timeout_s=10)
    assert proc.returncode is not None  # stopped, not left running


def test_times_out_when_health_never_answers_200() -> None:
    url, proc = _stand_in(503)
    try:
        with pytest.raises(RuntimeError, match="did not become healthy in 2 s"):
            wait_healthy(url, proc, timeout_s=2.0, interval_s=0.05)
    finally:
        stop_subprocess(proc, timeout_s=10)


@pytest.mark.parametrize("merged", [False, True])
def test_a_server_that_dies_reports_its_output(tmp_path: Path, merged: bool) -> None:
    missing = tmp_path / "no such bundle"
    port = free_port()
    streams = (
        {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
        if merged
        else {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    )
    proc = serve_subprocess(missing, port, **streams)
    try:
        with pytest.raises(RuntimeError, match=r"skyfuse serve exited with [1-9]") as info:
            wait_healthy(f"http://127.0.0.1:{port}", proc, timeout_s=120.0, interval_s=0.1)
        assert "no such bundle" in str(info.value)
    finally:
        stop_subprocess(proc, timeout_s=10)
