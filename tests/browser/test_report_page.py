"""Browser test of the `skyfuse report` page: opened from file:// in Debian's chromium driven by
playwright-core (installed by .ci/system-deps), with no server. Skips cleanly when chromium, node or
playwright-core are absent; the screenshot is kept in test-artifacts/browser/report_page.png."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.browser.chromium import missing_requirements, run_driver
from tests.conftest import REPO


def test_report_page_in_chromium(tmp_path: Path, one_torch_thread: None) -> None:
    missing = missing_requirements()
    if missing:
        pytest.skip(missing)
    from skyfuse.reports.page import write_report
    from skyfuse.reports.runs import collect_runs, group_runs
    from tests.reports.helpers import make_bench, make_run, scene_folder

    folder = scene_folder(tmp_path / "data")
    bench = make_bench(tmp_path / "bench", folder, models=("concat", "dual"), seeds=(0, 1))
    run = make_run(tmp_path / "run", folder, epochs=4)
    runs = collect_runs([bench, run])
    page = write_report(runs, tmp_path / "page")
    shots = REPO / "test-artifacts" / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "report_page.png"
    shot.unlink(missing_ok=True)
    done = run_driver("report_page.mjs", page.resolve().as_uri(), str(shot), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    groups = group_runs(runs)
    expected = []
    for g in groups:
        cells = [f"{m:.2f} ± {s:.2f}" for m, s in (g.mean_std(k) for k in ("oa", "aa", "kappa"))]
        seeds = ", ".join(str(r.seed) for r in g.runs)
        expected.append([g.label, *cells, str(g.n), seeds])
    assert seen["rows"] == expected
    assert [r[0] for r in seen["rows"]][:2] == [
        "concat (epochs=2, selection=fixed)",
        "concat (epochs=4, selection=val)",
    ]
    assert seen["runs"] == len(runs) == 5
    images = seen["images"]
    assert len(images) == 2 + len(groups) + len(runs)  # bars, heat map, confusions, curves
    assert all(i["complete"] and i["width"] > 0 for i in images), images
    assert seen["errors"] == [] and seen["failedRequests"] == []
    assert seen["offsite"] == []  # nothing but file:// (and inline data:) was requested
    with Image.open(shot) as im:
        assert im.size[0] >= 1000 and im.size[1] >= 1500
