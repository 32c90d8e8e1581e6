"""The report page and its markdown twin: self-contained HTML, the same tables, pictures that load."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from skyfuse.errors import ConfigError
from skyfuse.reports.page import write_report
from skyfuse.reports.runs import collect_runs, group_runs, run_differences

PNG = b"\x89PNG\r\n\x1a\n"


def _md_table(md: str, heading: str) -> list[list[str]]:
    """Rows of the first table after ``## heading`` (header and rule left out)."""
    lines: list[str] = []
    for line in md.split(f"## {heading}\n", 1)[1].splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[2:]]


@pytest.fixture(scope="module")
def page(made: dict[str, Path]) -> Path:
    """The page `run_bench` wrote for the shared bench folder."""
    return made["bench"] / "report.html"


def test_page_is_self_contained_and_the_twin_has_the_same_tables(
    made: dict[str, Path], page: Path
) -> None:
    runs = collect_runs([made["bench"]])
    out = page.parent
    assert page.name == "report.html"
    text = page.read_text(encoding="utf-8")
    # nothing to fetch: no script, no stylesheet link, no http(s) anywhere, every image inline
    assert "<script" not in text and "<link" not in text
    assert not re.search(r"https?://", text)
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(base64.b64decode(s.split(",", 1)[1])[:8] == PNG for s in sources)
    assert "<title>skyfuse report: data</title>" in text
    groups = group_runs(runs)
    curves = sum(1 for r in runs if r.curves)
    assert len(sources) == 2 + len(groups) + curves  # bars, heat map, confusions, curves
    # the markdown twin: the same models table, pictures as files beside it
    md = (out / "report.md").read_text(encoding="utf-8")
    rows = _md_table(md, "Models")
    assert [r[0] for r in rows] == [g.label for g in groups]
    for row, g in zip(rows, groups, strict=True):
        mean, std = g.mean_std("oa")
        assert row[1] == f"{mean:.2f} ± {std:.2f}" and row[4] == str(g.n)
        assert f"<td>{row[0]}</td>" in text
        assert f'<td class="num">{row[1]}</td>' in text or f'class="num best">{row[1]}<' in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == len(sources)
    assert all((out / link).read_bytes()[:8] == PNG for link in links)
    assert [r[0] for r in _md_table(md, "Runs")] == [r.name for r in runs]


def test_settings_differences_are_listed_per_run(made: dict[str, Path], page: Path) -> None:
    md = page.with_name("report.md").read_text(encoding="utf-8")
    diffs = dict(_md_table(md, "Settings that differ from the first run (bench/concat-s0)"))
    assert diffs["bench/concat-s0"] == "reference"
    assert diffs["bench/concat-s1"] == "seed: 0 → 1; split.seed: 0 → 1; train_config.seed: 0 → 1"
    assert diffs["bench/image-s0"] == "fusion_config.model: concat → image; model: concat → image"
    # a probe records few settings: the rest is one count, not dozens of 'absent' lines
    assert "setting(s) recorded by only one of the two" in diffs["bench/probe-text-s0"]
    html = page.read_text(encoding="utf-8")
    assert "<div>train_config.seed: 0 → 1</div>" in html
    # the separate run: trained otherwise
    run = run_differences(collect_runs([made["bench"], made["run"]]))[-1]
    assert run["train_config.epochs"] == (2, 4) and run["train_config.selection"] == (
        "fixed",
        "val",
    )


def test_bench_writes_its_page_beside_its_tables(made: dict[str, Path]) -> None:
    bench = made["bench"]
    for name in ("bench.md", "bench.csv", "runs.md", "runs.csv", "report.html", "report.md"):
        assert (bench / name).is_file(), name
    assert (bench / "bench.md").read_text().startswith("| model | runs | oa_mean")  # not clobbered
    assert "## Models" in (bench / "report.md").read_text()


def test_a_second_report_replaces_the_pictures(made: dict[str, Path], tmp_path: Path) -> None:
    one = collect_runs([made["run"]])
    (tmp_path / "report-figures").mkdir()
    (tmp_path / "report-figures" / "stale.png").write_bytes(PNG)
    write_report(one, tmp_path)
    names = sorted(p.name for p in (tmp_path / "report-figures").glob("*.png"))
    assert names == ["confusion-00-concat.png", "curves-00-run.png", "f1.png", "oa.png"]


def test_a_run_folder_is_not_an_output(made: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"is a run folder .* choose another --out"):
        write_report(collect_runs([made["run"]]), made["run"])
    with pytest.raises(ConfigError, match="no runs"):
        write_report([], made["root"] / "nothing")
