"""Browser test of the web page: `skyfuse serve` in a subprocess, Debian's chromium driven by
playwright-core (installed by .ci/system-deps). Skips cleanly when chromium, node or playwright-core
are absent; the screenshot is kept in test-artifacts/browser/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from skyfuse.data.synthetic import render_scene
from skyfuse.serving.server import free_port
from tests.conftest import REPO
from tests.inference.helpers import CLASSES, make_bundle

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("SKYFUSE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _requirements() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"chromium not found ({CHROMIUM}); .ci/system-deps installs it"
    if shutil.which("node") is None:
        return "node not found; .ci/system-deps installs it"
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        return "playwright-core not installed; run .ci/system-deps"
    return None


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"skyfuse serve exited with {proc.returncode}: {out[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("skyfuse serve did not become healthy")


def test_web_page_in_chromium(tmp_path: Path) -> None:
    missing = _requirements()
    if missing:
        pytest.skip(missing)
    bundle = make_bundle(tmp_path / "model")
    image = tmp_path / "forest scene.png"
    Image.fromarray(render_scene("forest", 0, size=160, seed=3)).save(image)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-c",
        "from skyfuse.cli import main; main()",
        "serve",
        str(bundle),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(url, proc)
        shots = REPO / "test-artifacts" / "browser"
        shots.mkdir(parents=True, exist_ok=True)
        shot = shots / "web_page.png"
        shot.unlink(missing_ok=True)
        env = dict(os.environ, SKYFUSE_CHROMIUM=CHROMIUM)
        run = subprocess.run(
            ["node", str(HERE / "web_page.mjs"), url, str(image), str(shot), json.dumps(CLASSES)],
            cwd=HERE,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        seen = json.loads(run.stdout.strip().splitlines()[-1])
        assert set(seen["labels"]) <= set(CLASSES) and len(seen["labels"]) == 4
        assert seen["overlay"] is True
        with Image.open(shot) as im:
            assert im.size[0] >= 1000 and im.size[1] >= 600
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
