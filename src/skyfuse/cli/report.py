"""`skyfuse report`: one HTML page (and a markdown twin) comparing run and bench folders."""

from __future__ import annotations

from pathlib import Path

import typer

from skyfuse.cli.common import console, friendly_errors


@friendly_errors
def report(
    dirs: list[Path] = typer.Argument(
        ...,
        help="Run folders (skyfuse train/evaluate --out: metrics.json) and bench folders "
        "(skyfuse bench --out: runs/*/metrics.json), in any mix.",
        show_default=False,
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder for report.html, report.md and report-figures/ (default: the folder itself "
        "when one bench folder is given, else ./report).",
    ),
    title: str | None = typer.Option(None, "--title", help="Page title (default: the dataset)."),
) -> None:
    """Compare finished runs on one self-contained page: models table (mean ± std over seeds), OA bars, per-class F1 heat map, confusion matrices, training curves and settings differences.

    OUT/report.html embeds its pictures and opens from disk with no server or network; OUT/report.md has the same tables, with the pictures as PNG files in OUT/report-figures/. Runs over different class lists are refused. `skyfuse bench --out DIR` writes the same page into DIR.

    Example: skyfuse report bench/aid runs/dual-lr3e-4 --out reports/aid
    """
    from skyfuse.reports.page import write_report
    from skyfuse.reports.runs import bench_run_folders, collect_runs

    runs = collect_runs(dirs)
    if out is None:
        out = dirs[0] if len(dirs) == 1 and bench_run_folders(dirs[0]) else Path("report")
    page = write_report(runs, out, title=title)
    console.print(
        f"{len(runs)} run(s) -> {page} and {page.with_name('report.md')}\n"
        f"open {page.resolve().as_uri()}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("report")(report)
