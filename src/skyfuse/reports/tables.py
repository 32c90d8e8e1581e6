"""Mean ± std tables over seeds, as markdown and CSV (what the field reports for repeated splits).

Rows are runs grouped by a key (usually the model name); each metric ``m`` becomes the columns
``m_mean`` and ``m_std`` (sample std, ddof=1; 0 for a single run) plus ``runs``. Values are shown in
percent when ``percent=True`` (the input is fractions, as in ``metrics.json``).
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def aggregate(
    runs: Sequence[Mapping[str, Any]],
    *,
    key: str = "model",
    metrics: Sequence[str] = ("oa", "aa", "kappa"),
    percent: bool = True,
) -> list[dict[str, Any]]:
    """Group ``runs`` by ``key`` (first-seen order) and return one row per group with mean and std."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        groups.setdefault(str(run[key]), []).append(run)
    scale = 100.0 if percent else 1.0
    rows: list[dict[str, Any]] = []
    for name, items in groups.items():
        row: dict[str, Any] = {key: name, "runs": len(items)}
        for m in metrics:
            values = [float(r[m]) * scale for r in items if r.get(m) is not None]
            row[f"{m}_mean"], row[f"{m}_std"] = mean_std(values)
        rows.append(row)
    return rows


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value, nan for none)."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        for c in row:
            if c not in cols:
                cols.append(c)
    return cols


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def to_markdown(rows: Sequence[Mapping[str, Any]], *, digits: int = 2) -> str:
    """A markdown table with every column (``oa_mean``, ``oa_std``, ...)."""
    cols = _columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, ""), digits) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def to_markdown_pm(
    rows: Sequence[Mapping[str, Any]],
    *,
    key: str = "model",
    metrics: Sequence[str] = ("oa", "aa", "kappa"),
    digits: int = 2,
) -> str:
    """A compact human table: one ``mean ± std`` cell per metric."""
    head = [key, *metrics, "runs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        cells = [str(row[key])]
        for m in metrics:
            mean, std = row.get(f"{m}_mean", math.nan), row.get(f"{m}_std", math.nan)
            cells.append(f"{_fmt(mean, digits)} ± {_fmt(std, digits)}")
        cells.append(str(row.get("runs", "")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Mapping[str, Any]], *, digits: int = 4) -> str:
    buf = io.StringIO()
    cols = _columns(rows)
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_fmt(row.get(c, ""), digits) for c in cols])
    return buf.getvalue()


def write_atomic(path: Path, text: str) -> Path:
    """Write text via a temp file + rename, so a killed run never leaves half a table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_tables(rows: Sequence[Mapping[str, Any]], out_stem: Path) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.csv``; returns both paths."""
    out_stem = Path(out_stem)
    md = write_atomic(out_stem.with_suffix(".md"), to_markdown(rows))
    cs = write_atomic(out_stem.with_suffix(".csv"), to_csv(rows))
    return md, cs
