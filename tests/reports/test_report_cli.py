"""`skyfuse report DIR... --out OUT` end to end, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from skyfuse.cli import app


def test_report_command_writes_the_page(made: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "page"
    res = CliRunner().invoke(app, ["report", str(made["run"]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert "1 run(s)" in res.output and "file://" in res.output


def test_report_errors_are_one_line(made: dict[str, Path], tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["report", str(made["run"]), str(tmp_path), "-o", str(tmp_path)])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(tmp_path) in lines[0] and "neither a run folder" in lines[0]


def test_report_help_has_an_example() -> None:
    res = CliRunner().invoke(app, ["report", "--help"])
    assert res.exit_code == 0
    assert "Example: skyfuse report" in " ".join(res.output.split())
    assert "report" in CliRunner().invoke(app, ["--help"]).output
