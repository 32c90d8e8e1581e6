"""Prompts are data with ids: built-in ones live in `prompts/*.txt`, users add their own files.

The prompt hash is part of the store's resume key, so editing a prompt's text re-captions everything
instead of silently mixing captions made from two different instructions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from skyfuse.errors import ConfigError

#: The default: what is on the ground, never the scene category (avoids label leakage).
DEFAULT_PROMPT = "ground"


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str

    @property
    def hash(self) -> str:
        """First 16 hex digits of the sha256 of the prompt text (whitespace-normalised)."""
        norm = " ".join(self.text.split())
        return hashlib.sha256(norm.encode("utf-8")).hexdigest()[:16]


#: Stand-in for captioners whose output does not depend on a prompt (files, attributes).
NO_PROMPT = Prompt("none", "")


def builtin_prompts() -> dict[str, Prompt]:
    out: dict[str, Prompt] = {}
    folder = resources.files("skyfuse.captioning") / "prompts"
    for entry in folder.iterdir():
        if entry.name.endswith(".txt"):
            pid = entry.name[: -len(".txt")]
            out[pid] = Prompt(pid, entry.read_text(encoding="utf-8").strip())
    return dict(sorted(out.items()))


def resolve_prompt(spec: str | Path | Prompt) -> Prompt:
    """A built-in id (`ground`, `paper`), or a path to a UTF-8 text file (its stem becomes the id)."""
    if isinstance(spec, Prompt):
        return spec
    known = builtin_prompts()
    if isinstance(spec, str) and spec in known:
        return known[spec]
    path = Path(spec).expanduser()
    if path.is_file():
        text = path.read_text(encoding="utf-8").strip()
        if not text:
            raise ConfigError(
                f"{path}: prompt file is empty; write the instruction for the VLM in it"
            )
        return Prompt(path.stem, text)
    raise ConfigError(
        f"unknown prompt {str(spec)!r}; use one of {', '.join(known)} or the path of a text file"
    )
