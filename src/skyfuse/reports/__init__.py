"""Reports: tables over seeds, confusion matrices, and (engineer F) attention overlays."""

from __future__ import annotations

from skyfuse.reports.confusion import plot_confusion, save_confusion_json
from skyfuse.reports.tables import aggregate, to_csv, to_markdown, to_markdown_pm, write_tables

__all__ = [
    "aggregate",
    "plot_confusion",
    "save_confusion_json",
    "to_csv",
    "to_markdown",
    "to_markdown_pm",
    "write_tables",
]
