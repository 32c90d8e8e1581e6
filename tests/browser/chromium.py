"""What the browser tests need (Debian's chromium, node, playwright-core from .ci/system-deps) and how
they run a driver script; each test skips cleanly, naming what is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("SKYFUSE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def missing_requirements() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).is_file():
        return f"chromium not found ({CHROMIUM}); .ci/system-deps installs it"
    if shutil.which("node") is None:
        return "node not found; .ci/system-deps installs it"
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        return "playwright-core not installed; run .ci/system-deps"
    return None


def run_driver(script: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``node tests/browser/SCRIPT ARGS...`` with the chromium found above."""
    env = dict(os.environ, SKYFUSE_CHROMIUM=CHROMIUM)
    return subprocess.run(
        ["node", str(HERE / script), *args],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
