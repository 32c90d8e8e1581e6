"""One self-contained HTML page (and a markdown twin) comparing finished runs.

``OUT/report.html`` needs no server and no network: CSS is inline and every picture is a base64 PNG
data URI, so the file can be mailed or opened from ``file://``. ``OUT/report.md`` holds the same
tables and links the same pictures, written as PNG files under ``OUT/report-figures/``.

The page: the models table (OA, AA and kappa in percent, mean ± sample std over the runs of a
group, with the number of runs), a bar chart of OA with error bars, a per-class F1 heat map, one
row-normalised confusion matrix per group (summed over its runs), training curves per run, and each
run's settings that differ from the first run's. Runs come from `skyfuse.reports.runs.collect_runs`.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyfuse.reports.runs import ABSENT, RunGroup, RunRecord, group_runs, run_differences

HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"
FIGURES_DIR = "report-figures"
#: at most this many settings per run are listed before the rest fold away
SHOWN_DIFFERENCES = 8


@dataclass
class Figure:
    """A picture of the page: its PNG beside the markdown, its caption, and what it shows."""

    path: Path
    caption: str
    alt: str
    group: str = ""  # the model group a per-run picture belongs to


def write_report(runs: Sequence[RunRecord], out_dir: Path, *, title: str | None = None) -> Path:
    """Write ``out_dir/report.html``, ``out_dir/report.md`` and ``out_dir/report-figures/*.png``
    for ``runs``; returns the HTML path. Pictures of an earlier report there are replaced."""
    from skyfuse.reports.tables import write_atomic

    if not runs:
        from skyfuse.errors import ConfigError

        raise ConfigError("no runs to report; pass run or bench folders")
    out_dir = Path(out_dir)
    if (out_dir / "metrics.json").is_file():  # a run folder: its report.md is the run's own summary
        from skyfuse.errors import ConfigError

        raise ConfigError(
            f"{out_dir}: is a run folder (metrics.json) whose report.md must stay; choose another --out"
        )
    groups = group_runs(runs)
    figures = _figures(runs, groups, out_dir / FIGURES_DIR)
    title = title or _default_title(runs)
    md = render_markdown(runs, groups, figures, out_dir, title=title)
    page = render_html(runs, groups, figures, title=title)
    write_atomic(out_dir / MARKDOWN_FILE, md)
    return write_atomic(out_dir / HTML_FILE, page)


def _default_title(runs: Sequence[RunRecord]) -> str:
    datasets = sorted({Path(r.dataset).name for r in runs if r.dataset})
    return "skyfuse report" + (f": {', '.join(datasets)}" if datasets else "")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-")[:60] or "x"


def _figures(
    runs: Sequence[RunRecord], groups: Sequence[RunGroup], fig_dir: Path
) -> dict[str, list[Figure]]:
    from skyfuse.reports.confusion import plot_confusion
    from skyfuse.reports.curves import plot_curves
    from skyfuse.reports.figures import plot_f1_heatmap, plot_oa_bars

    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):
        old.unlink()
    labels = [g.label for g in groups]
    classes = runs[0].classes
    oa = [g.mean_std("oa") for g in groups]
    out: dict[str, list[Figure]] = {"overview": [], "confusion": [], "curves": []}
    out["overview"].append(
        Figure(
            plot_oa_bars(
                labels, [m for m, _ in oa], [s for _, s in oa], [g.n for g in groups],
                fig_dir / "oa.png", muted=[all(r.kind == "probe" for r in g.runs) for g in groups],
            ),
            "Test OA per model: mean ± sample std over its runs (black outline: the best).",
            "bar chart of test OA per model with error bars",
        )
    )  # fmt: skip
    out["overview"].append(
        Figure(
            plot_f1_heatmap(labels, classes, [g.f1_mean() for g in groups], fig_dir / "f1.png"),
            "Per-class F1 (%), averaged over each model's runs: dark cells are the classes a model misses.",
            "heat map of per-class F1, models by classes",
        )
    )
    for i, g in enumerate(groups):
        runs_word = "run" if g.n == 1 else "runs"
        path = plot_confusion(
            g.confusion_sum(),
            classes,
            fig_dir / f"confusion-{i:02d}-{_slug(g.label)}.png",
            title=f"{g.label}: {g.n} {runs_word} summed, rows normalised",
        )
        out["confusion"].append(
            Figure(
                path, f"{g.label} ({g.n} {runs_word})", f"confusion matrix of {g.label}", g.label
            )
        )
    label_of = {id(r): g.label for g in groups for r in g.runs}
    for i, r in enumerate(runs):
        if not r.curves:
            continue
        path = plot_curves(
            r.curves,
            fig_dir / f"curves-{i:02d}-{_slug(r.name)}.png",
            chosen_epoch=r.chosen_epoch,
            title=r.name,
            refit_rows=r.refit_curves,
        )
        seed = "" if r.seed is None else f", seed {r.seed}"
        caption = f"{label_of[id(r)]}{seed}: test OA {_pct(r.oa)} %"
        out["curves"].append(
            Figure(path, caption, f"training curves of {r.name}", group=label_of[id(r)])
        )
    return out


# ---------------------------------------------------------------------------------------- cells


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.2f} ± {std:.2f}"


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.2f}"


def _value(v: Any) -> str:
    if v is ABSENT:
        return "absent"
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= 48 else text[:22] + "…" + text[-22:]


def _diff_lines(diff: Mapping[str, tuple[Any, Any]]) -> tuple[list[str], list[str]]:
    """(``key: old → new`` for settings both runs record, names of settings only one records)."""
    both = [f"{k}: {_value(a)} → {_value(b)}" for k, (a, b) in diff.items() if ABSENT not in (a, b)]
    one_sided = [k for k, (a, b) in diff.items() if a is ABSENT or b is ABSENT]
    return both, one_sided


def _one_sided_text(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:SHOWN_DIFFERENCES]) + (", …" if len(keys) > SHOWN_DIFFERENCES else "")
    return f"{len(keys)} setting(s) recorded by only one of the two: {shown}"


def _best(groups: Sequence[RunGroup], metric: str) -> float:
    means = [g.mean_std(metric)[0] for g in groups]
    finite = [m for m in means if not math.isnan(m)]
    return max(finite) if finite else math.nan


def _seeds(g: RunGroup) -> str:
    seeds = [str(r.seed) for r in g.runs if r.seed is not None]
    return ", ".join(seeds) if seeds else "–"


def _epochs(r: RunRecord) -> str:
    if not r.curves:
        return "–"
    last = int(max(row["epoch"] for row in r.curves)) + 1
    return f"{r.chosen_epoch + 1} of {last}" if r.chosen_epoch is not None else str(last)


def _summary(runs: Sequence[RunRecord], groups: Sequence[RunGroup]) -> list[str]:
    datasets = sorted({r.dataset for r in runs if r.dataset})
    classes = runs[0].classes
    return [
        f"{len(runs)} run(s) of {len(groups)} model group(s), {len(classes)} classes: "
        + ", ".join(classes),
        "dataset(s): " + (", ".join(datasets) if datasets else "not recorded"),
        "scores in percent on each run's test part; ± is the sample standard deviation over the "
        "runs of a group (0 for a single run)",
    ]


# ------------------------------------------------------------------------------------- markdown


def _md_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def models_rows(groups: Sequence[RunGroup]) -> list[list[str]]:
    """The models table as text cells: model, OA, AA, kappa (mean ± std, %), runs, seeds."""
    return [
        [g.label, *(_pm(*g.mean_std(m)) for m in ("oa", "aa", "kappa")), str(g.n), _seeds(g)]
        for g in groups
    ]


MODELS_HEAD = ("model", "OA (%)", "AA (%)", "kappa (%)", "runs", "seeds")
RUNS_HEAD = ("run", "model", "seed", "OA (%)", "AA (%)", "kappa (%)", "epochs (kept of run)")


def _run_cells(r: RunRecord) -> list[str]:
    seed = "–" if r.seed is None else str(r.seed)
    return [r.name, r.model, seed, _pct(r.oa), _pct(r.aa), _pct(r.kappa), _epochs(r)]


def render_markdown(
    runs: Sequence[RunRecord],
    groups: Sequence[RunGroup],
    figures: Mapping[str, Sequence[Figure]],
    out_dir: Path,
    *,
    title: str,
) -> str:
    """The markdown twin of the page; pictures are linked relative to ``out_dir``."""

    def link(f: Figure) -> str:
        return f"![{f.alt}]({f.path.relative_to(out_dir).as_posix()})"

    lines = [f"# {title}", "", *(f"- {s}" for s in _summary(runs, groups)), "", "## Models", ""]
    lines += _md_table(MODELS_HEAD, models_rows(groups))
    for f in figures["overview"]:
        lines += ["", link(f), "", f"*{f.caption}*"]
    lines += ["", "## Confusion matrices", "", "Rows are the true class, columns the prediction."]
    for f in figures["confusion"]:
        lines += ["", f"### {f.caption}", "", link(f)]
    if figures["curves"]:
        lines += ["", "## Training curves", "", "Dotted line: the epoch whose weights were kept."]
        for f in figures["curves"]:
            lines += ["", f"### {f.caption}", "", link(f)]
    lines += ["", "## Runs", ""]
    lines += _md_table(RUNS_HEAD, [_run_cells(r) for r in runs])
    lines += ["", f"## Settings that differ from the first run ({runs[0].name})", ""]
    diffs = run_differences(runs)
    cells = []
    for i, (r, d) in enumerate(zip(runs, diffs, strict=True)):
        both, one_sided = _diff_lines(d)
        text = "; ".join(both + ([_one_sided_text(one_sided)] if one_sided else []))
        cells.append([r.name, text or ("reference" if i == 0 else "none")])
    lines += _md_table(("run", "differences"), cells)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- html

_CSS = """
:root { --fg:#1d2330; --muted:#5c6677; --line:#dfe3ea; --accent:#1f5fa8; --bg:#f6f7f9; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
  color:var(--fg); background:var(--bg); }
main { max-width:1180px; margin:0 auto; padding:28px 28px 60px; }
h1 { font-size:26px; margin:0 0 6px; }
h2 { font-size:19px; margin:34px 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); }
h3 { font-size:14px; margin:0 0 6px; color:var(--muted); font-weight:600; }
.meta { color:var(--muted); margin:0 0 4px; padding-left:18px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px 16px;
  box-shadow:0 1px 2px rgba(0,0,0,.04); }
table { border-collapse:collapse; width:100%; background:#fff; font-size:14px; }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { background:#eef1f5; font-weight:600; white-space:nowrap; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr:nth-child(even) td { background:#fafbfc; }
tr.probe td { color:var(--muted); }
tr td.best { font-weight:700; color:var(--accent); }
figure { margin:14px 0 0; }
figure img { max-width:100%; height:auto; display:block; margin:0 auto; }
figcaption { color:var(--muted); font-size:13px; margin-top:6px; text-align:center; }
.grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(340px,1fr)); gap:14px; }
.grid.two { grid-template-columns:repeat(auto-fill,minmax(520px,1fr)); }
.fold { margin:10px 0; }
.fold > summary { font-size:15px; font-weight:600; color:var(--fg); padding:4px 0; }
.fold .card { max-width:900px; margin:10px auto; }
.grid figure { margin:0; }
.diff { font-family:ui-monospace,"DejaVu Sans Mono",monospace; font-size:12.5px; }
.diff div { white-space:nowrap; }
.diff .keys { white-space:normal; color:var(--muted); }
details summary { cursor:pointer; color:var(--accent); font-size:13px; }
.note { color:var(--muted); font-size:13px; margin:6px 0 0; }
"""


def _img(f: Figure) -> str:
    data = base64.b64encode(f.path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(f.alt)}">'
        f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
    )


def _html_table(
    head: Sequence[str], rows: Iterable[tuple[Sequence[str], str]], *, table_id: str, num_from: int
) -> str:
    """``rows`` are (cells, tr class); cells from index ``num_from`` on are right-aligned numbers;
    a cell may start with ``\\x00best`` to be highlighted."""
    out = [f'<table id="{table_id}"><thead><tr>']
    out += [f"<th>{html.escape(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for cells, cls in rows:
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        for i, c in enumerate(cells):
            classes = ["num"] if i >= num_from else []
            if c.startswith("\x00best"):
                classes.append("best")
                c = c[len("\x00best") :]
            attr = f' class="{" ".join(classes)}"' if classes else ""
            out.append(f"<td{attr}>{html.escape(c)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _diff_cell(diff: Mapping[str, tuple[Any, Any]], first: bool) -> str:
    if first:
        return "<em>reference</em>"
    if not diff:
        return "<em>none</em>"
    both, one_sided = _diff_lines(diff)
    lines = [f"<div>{html.escape(s)}</div>" for s in both]
    head, rest = lines[:SHOWN_DIFFERENCES], lines[SHOWN_DIFFERENCES:]
    out = '<div class="diff">' + "".join(head)
    if rest:
        out += f"<details><summary>{len(rest)} more</summary>{''.join(rest)}</details>"
    if one_sided:
        out += (
            f"<details><summary>{len(one_sided)} setting(s) recorded by only one of the two"
            f'</summary><div class="keys">{html.escape(", ".join(one_sided))}</div></details>'
        )
    return out + "</div>"


def _confusion_section(figs: Sequence[Figure], classes: int) -> str:
    """Three matrices a row for a few classes, two for up to 20; above that one a row, each model
    folded (the first open) so that 45-class matrices stay legible without an endless page."""
    if classes > 20:
        hint = '<p class="note">Click a model to open or fold its matrix.</p>'
        return hint + _folded(figs, open_all=2)
    width = "" if classes <= 8 else " two"
    cards = "".join(f'<div class="card">{_img(f)}</div>' for f in figs)
    return f'<div class="grid{width}">{cards}</div>'


def _folded(figs: Sequence[Figure], open_all: int = 6) -> str:
    """One foldable section per model group; all open for a few pictures, else only the first."""
    by_group: dict[str, list[Figure]] = {}
    for f in figs:
        by_group.setdefault(f.group, []).append(f)
    out = []
    for i, (label, members) in enumerate(by_group.items()):
        opened = " open" if len(figs) <= open_all or i == 0 else ""
        count = (
            f" ({len(members)} {'run' if len(members) == 1 else 'runs'})"
            if any(f.alt.startswith("training curves") for f in members)
            else ""
        )
        out.append(
            f'<details class="fold"{opened}><summary>{html.escape(label)}{count}</summary>'
            + "".join(f'<div class="card">{_img(f)}</div>' for f in members)
            + "</details>"
        )
    return "".join(out)


def render_html(
    runs: Sequence[RunRecord],
    groups: Sequence[RunGroup],
    figures: Mapping[str, Sequence[Figure]],
    *,
    title: str,
) -> str:
    """The self-contained page (inline CSS, pictures as data URIs, no script)."""
    best = {m: _best(groups, m) for m in ("oa", "aa", "kappa")}
    model_rows = []
    for g, cells in zip(groups, models_rows(groups), strict=True):
        for j, m in enumerate(("oa", "aa", "kappa"), start=1):
            if len(groups) > 1 and g.mean_std(m)[0] == best[m]:
                cells[j] = "\x00best" + cells[j]
        kind = "probe" if all(r.kind == "probe" for r in g.runs) else ""
        model_rows.append((cells, kind))
    run_rows = [(_run_cells(r), "probe" if r.kind == "probe" else "") for r in runs]
    diffs = run_differences(runs)
    diff_rows = "".join(
        f"<tr><td>{html.escape(r.name)}</td><td>{_diff_cell(d, i == 0)}</td></tr>"
        for i, (r, d) in enumerate(zip(runs, diffs, strict=True))
    )
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
        '<ul class="meta">'
        + "".join(f"<li>{html.escape(s)}</li>" for s in _summary(runs, groups))
        + f"<li>written {html.escape(stamp)}</li></ul>",
        '<h2 id="models-title">Models</h2>',
        _html_table(MODELS_HEAD, model_rows, table_id="models", num_from=1),
        '<p class="note">Bold: the best mean.'
        + (
            " Grey rows: logistic-regression probes (floors every fusion model should clear)."
            if any(r.kind == "probe" for r in runs)
            else ""
        )
        + "</p>",
        '<div class="card">' + "".join(_img(f) for f in figures["overview"]) + "</div>",
        "<h2>Confusion matrices</h2>",
        '<p class="note">Rows are the true class, columns the prediction; each row sums to 1.</p>',
        _confusion_section(figures["confusion"], len(runs[0].classes)),
    ]
    if figures["curves"]:
        parts += [
            "<h2>Training curves</h2>",
            '<p class="note">Per run, by model; the dotted line marks the epoch whose weights were '
            "kept. Click a model to fold its runs in or out.</p>",
            _folded(figures["curves"]),
        ]
    parts += [
        "<h2>Runs</h2>",
        _html_table(RUNS_HEAD, run_rows, table_id="runs", num_from=2),
        f"<h2>Settings that differ from the first run ({html.escape(runs[0].name)})</h2>",
        '<table id="settings"><thead><tr><th>run</th><th>differences (first run → this run)</th>'
        f"</tr></thead><tbody>{diff_rows}</tbody></table>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_bench_report(bench_dir: Path, *, title: str | None = None) -> Path:
    """The page for one bench folder, written into it (``report.html``, ``report.md``,
    ``report-figures/``); what `skyfuse bench --out` ends with. Returns the HTML path."""
    from skyfuse.reports.runs import collect_runs

    return write_report(collect_runs([bench_dir]), bench_dir, title=title)
