"""A captioning process killed with SIGKILL at random moments, resumed each time: at the end every
image has exactly one successful record and nothing else."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from skyfuse.captioning.store import read_records
from skyfuse.captioning.stub import StubVLMServer
from tests.captioning.helpers import make_folder

SCRIPT = """
import sys
from pathlib import Path
from skyfuse.captioning import caption_folder, create_captioner
cap = create_captioner("openai", model="stub", base_url=sys.argv[1], backoff=0.01)
s = caption_folder(Path(sys.argv[2]), cap, Path(sys.argv[3]), concurrency=4, progress=False)
sys.exit(0 if s.complete else 1)
"""
N_IMAGES = 36


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sigkill_and_resume(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "scenes", per_class=N_IMAGES // 2, size=32)
    out = tmp_path / "caps.jsonl"
    rng = random.Random(1234)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kills = 0
    counts: list[int] = []
    with StubVLMServer(latency=0.08) as srv:
        for _ in range(4):
            before = _lines(out)
            cmd = [sys.executable, "-c", SCRIPT, srv.url, str(root), str(out)]
            proc = subprocess.Popen(cmd, env=env)
            deadline = time.monotonic() + 60
            # wait until this run has written something, then kill at a random moment
            while proc.poll() is None and _lines(out) <= before and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.12))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
            counts.append(_lines(out))
        final = subprocess.run(cmd, env=env, timeout=60)
    assert kills >= 3, counts
    assert counts[0] > 0 and counts[-1] < N_IMAGES, counts  # kills landed mid-run
    assert final.returncode == 0
    recs = read_records(out)
    per_path = Counter(r["path"] for r in recs)
    assert len(per_path) == N_IMAGES
    assert set(per_path.values()) == {1}, per_path.most_common(3)
    assert all(r["status"] == "ok" for r in recs)
