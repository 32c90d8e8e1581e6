"""Browser test of the web page: `skyfuse serve` in a subprocess, Debian's chromium driven by
playwright-core (installed by .ci/system-deps). Skips cleanly when chromium, node or playwright-core
are absent; the screenshot is kept in test-artifacts/browser/."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from skyfuse.data.synthetic import render_scene
from skyfuse.serving.server import free_port, serve_subprocess, stop_subprocess, wait_healthy
from tests.browser.chromium import missing_requirements, run_driver
from tests.conftest import REPO
from tests.inference.helpers import CLASSES, make_bundle


def test_web_page_in_chromium(tmp_path: Path) -> None:
    missing = missing_requirements()
    if missing:
        pytest.skip(missing)
    bundle = make_bundle(tmp_path / "model")
    image = tmp_path / "forest scene.png"
    Image.fromarray(render_scene("forest", 0, size=160, seed=3)).save(image)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve_subprocess(bundle, port, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, proc, timeout_s=120.0, interval_s=0.3)
        shots = REPO / "test-artifacts" / "browser"
        shots.mkdir(parents=True, exist_ok=True)
        shot = shots / "web_page.png"
        shot.unlink(missing_ok=True)
        run = run_driver("web_page.mjs", url, str(image), str(shot), json.dumps(CLASSES))
        assert run.returncode == 0, run.stdout + run.stderr
        seen = json.loads(run.stdout.strip().splitlines()[-1])
        assert set(seen["labels"]) <= set(CLASSES) and len(seen["labels"]) == 4
        assert seen["overlay"] is True
        with Image.open(shot) as im:
            assert im.size[0] >= 1000 and im.size[1] >= 600
    finally:
        stop_subprocess(proc, timeout_s=15)
