"""metrics.json and its markdown table (percent, mean ± std over folds)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

COLUMNS = (
    ("zsl", "top1", "ZSL top-1"),
    ("zsl", "top5", "ZSL top-5"),
    ("gzsl", "seen", "GZSL seen"),
    ("gzsl", "unseen", "GZSL unseen"),
    ("gzsl", "h", "GZSL H"),
)
METHOD_NAMES = {
    "aligned": "aligned image side (LiT + class objective)",
    "aligned_plus_caption": "aligned image side + caption (weighted)",
    "head": "fusion semantic head",
    "caption_only": "caption-only (untrained)",
    "head_plus_caption": "fusion head + caption-only (score sum)",
    "clip": "CLIP",
}


def _cell(stat: Mapping[str, Any]) -> str:
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def metrics_markdown(metrics: Mapping[str, Any]) -> str:
    """One row per caption setting and method; the picked method is marked, with why."""
    cfg = metrics.get("config", {})
    picked = metrics.get("method")
    lines = [
        "Zero-shot"
        + (f", fusion head `{cfg.get('model', '?')}`" if cfg.get("fusion_head") else "")
        + f", {len(metrics.get('folds', []))} fold(s),"
        f" unseen fraction {cfg.get('unseen', '?')}, seed {cfg.get('seed', '?')}"
        " (per-class accuracy %, mean ± std over folds)",
        "",
        "| captions | method | " + " | ".join(c[2] for c in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for setting, methods in metrics["settings"].items():
        for method, groups in methods.items():
            if not (isinstance(groups, Mapping) and "zsl" in groups):
                continue
            cells = [_cell(groups[g][k]) for g, k, _ in COLUMNS]
            name = METHOD_NAMES.get(method, method)
            if method == picked:
                name = f"**{name}** (picked)"
            lines.append(f"| {setting} | {name} | " + " | ".join(cells) + " |")
    if picked:
        why = (metrics.get("selection") or {}).get("why", "")
        lines += [
            "",
            f"Picked: `{picked}` ({METHOD_NAMES.get(picked, picked)}): {why}. GZSL rows of trained"
            " methods use calibrated stacking (seen-class offset chosen on validation classes).",
        ]
    return "\n".join(lines) + "\n"


def write_metrics(out: str | Path, metrics: Mapping[str, Any]) -> tuple[Path, Path]:
    """DIR/metrics.json and DIR/metrics.md, each written to a temporary name and renamed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (
        ("metrics.json", json.dumps(metrics, indent=1) + "\n"),
        ("metrics.md", metrics_markdown(metrics)),
    ):
        path = out / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        paths.append(path)
    return paths[0], paths[1]
