"""Map caption-source names to a dataset's images.

Why: caption sets name images their own way (RSICD ``airport_1.jpg`` for AID's
``Airport/airport_1.jpg``; the paper's text tree ``Airport/airport_1`` without extension). A name
matches an image by, in order: the full relative path, ``<class>/<stem>``, the file name, the stem —
all case-insensitive. A form shared by several source names is ambiguous and never used.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath


def _forms(name: str) -> list[str]:
    p = PurePosixPath(name.replace("\\", "/").lstrip("./").lower())
    parts = p.parts
    forms = ["full:" + str(p)]
    if parts and parts[0] == "image" and len(parts) > 1:
        forms.append("full:" + "/".join(parts[1:]))
    if len(parts) >= 2:
        forms.append(f"cls:{parts[-2]}/{PurePosixPath(parts[-1]).stem}")
    if parts:
        forms.append("base:" + parts[-1])
        forms.append("stem:" + PurePosixPath(parts[-1]).stem)
    return forms


class NameIndex:
    """Index of source names; `lookup(rel)` returns the source name for a dataset image or None."""

    def __init__(self, names: Iterable[str]) -> None:
        self._by_form: dict[str, str | None] = {}
        for name in names:
            for f in _forms(name):
                if f in self._by_form and self._by_form[f] != name:
                    self._by_form[f] = None  # ambiguous
                else:
                    self._by_form[f] = name

    def lookup(self, rel: str) -> str | None:
        for f in _forms(rel):
            hit = self._by_form.get(f)
            if hit is not None:
                return hit
        return None
