"""Class specifications for zero-shot scoring: a name, a prompt phrase and optional descriptions.

Why a file format: unseen classes are known only by their text, so the text is part of the experiment.
Users edit it (YAML or JSON); skyfuse ships descriptions for every class of the registry datasets and
of the synthetic generator (``descriptions/scenes.yaml``), looked up by a normalised class name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from skyfuse.errors import BadInputError

#: Prompt templates; ``{}`` is replaced by the class phrase. "an aerial image of a {}" first: it is the
#: caption-only baseline's single prompt in the issue's reference figure.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "an aerial image of a {}.",
    "a satellite image of a {}.",
    "a remote sensing image of a {}.",
    "an overhead view of a {}.",
    "a top-down photo of a {}, seen from above.",
)


@dataclass(frozen=True)
class ClassSpec:
    """One class: `name` as in the dataset, `phrase` for templates, free-text `descriptions`."""

    name: str
    phrase: str
    descriptions: tuple[str, ...] = ()
    aliases: tuple[str, ...] = field(default=(), compare=False)

    def texts(self, templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[str]:
        """All sentences whose embeddings are averaged into this class's embedding."""
        return [t.format(self.phrase) for t in templates] + list(self.descriptions)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "phrase": self.phrase}
        if self.descriptions:
            out["descriptions"] = list(self.descriptions)
        return out


def humanise(name: str) -> str:
    """'BaseballField' / 'baseball_diamond' / 'storage-tanks' -> 'baseball field' etc."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name.strip())
    text = re.sub(r"[_\-./]+", " ", text)
    return re.sub(r"\s+", " ", text).strip().lower()


def name_key(name: str) -> str:
    """Lookup key: lower-case letters and digits only ('Storage_Tanks' -> 'storagetanks')."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _spec_from_entry(entry: Any, source: str) -> ClassSpec:
    if isinstance(entry, str):
        return ClassSpec(entry, humanise(entry))
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise BadInputError(
            f"{source}: each class needs at least a 'name' string, got {entry!r};"
            " write e.g. '- name: Airport' with an optional 'descriptions' list"
        )
    descriptions = entry.get("descriptions") or []
    if isinstance(descriptions, str):
        descriptions = [descriptions]
    aliases = entry.get("aliases") or []
    if not all(isinstance(d, str) for d in descriptions) or not all(
        isinstance(a, str) for a in aliases
    ):
        raise BadInputError(
            f"{source}: class {entry['name']!r}: 'descriptions' and 'aliases' must be lists of strings"
        )
    phrase = entry.get("phrase") or humanise(entry["name"])
    return ClassSpec(
        entry["name"], str(phrase), tuple(d.strip() for d in descriptions), tuple(aliases)
    )


def parse_class_specs(data: Any, source: str = "<class file>") -> tuple[list[ClassSpec], list[str]]:
    """Parse a class file's content: ``{templates: [...], classes: [...]}``, a bare class list, or
    ``{name: [descriptions]}``. Returns (specs, templates); templates are empty when not given."""
    templates: list[str] = []
    if isinstance(data, Mapping) and "classes" in data:
        raw_templates = data.get("templates") or []
        if not isinstance(raw_templates, list) or not all(
            isinstance(t, str) and "{}" in t for t in raw_templates
        ):
            raise BadInputError(
                f"{source}: 'templates' must be a list of strings each containing '{{}}'"
            )
        templates = list(raw_templates)
        entries = data["classes"]
    elif isinstance(data, Mapping):
        entries = [{"name": k, "descriptions": v or []} for k, v in data.items()]
    else:
        entries = data
    if not isinstance(entries, list) or not entries:
        raise BadInputError(
            f"{source}: no classes found; expected a 'classes:' list of names or"
            " {name, descriptions} entries"
        )
    specs = [_spec_from_entry(e, source) for e in entries]
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise BadInputError(f"{source}: class {s.name!r} is listed twice; merge the entries")
        seen.add(s.name)
    return specs, templates


def load_class_file(path: str | Path) -> tuple[list[ClassSpec], list[str]]:
    """Read a YAML or JSON class file (see `parse_class_specs`)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: class file not found; give a YAML or JSON file of classes")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(f"{path}: not valid YAML/JSON ({first}); fix the syntax") from None
    return parse_class_specs(data, str(path))


def save_class_file(
    path: str | Path, specs: Sequence[ClassSpec], templates: Sequence[str] = ()
) -> Path:
    """Write specs as YAML (or JSON for a .json path) so a user can start from skyfuse's text."""
    path = Path(path)
    data: dict[str, Any] = {}
    if templates:
        data["templates"] = list(templates)
    data["classes"] = [s.to_dict() for s in specs]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


@lru_cache(maxsize=1)
def builtin_specs() -> tuple[ClassSpec, ...]:
    """skyfuse's own scene descriptions (package data), one entry per scene concept."""
    text = (
        resources.files("skyfuse.zeroshot").joinpath("descriptions/scenes.yaml").read_text("utf-8")
    )
    specs, _ = parse_class_specs(yaml.safe_load(text), "skyfuse/zeroshot/descriptions/scenes.yaml")
    return tuple(specs)


@lru_cache(maxsize=1)
def _builtin_index() -> dict[str, ClassSpec]:
    index: dict[str, ClassSpec] = {}
    for spec in builtin_specs():
        for key in {name_key(spec.name), name_key(spec.phrase), *map(name_key, spec.aliases)}:
            index.setdefault(key, spec)
    return index


def builtin_spec(name: str) -> ClassSpec | None:
    """The shipped description for a dataset's class name, or None when skyfuse has none."""
    index = _builtin_index()
    key = name_key(name)
    spec = index.get(key)
    if spec is None and key.endswith("s"):
        spec = index.get(key[:-1])
    if spec is None:
        spec = index.get(key + "s")
    if spec is None:
        return None
    return ClassSpec(name, spec.phrase, spec.descriptions, spec.aliases)


def resolve_classes(
    names: Iterable[str],
    overrides: Sequence[ClassSpec] = (),
    *,
    use_builtin: bool = True,
) -> list[ClassSpec]:
    """Specs for `names` in order: a user's entry first, then skyfuse's description, else the bare name.

    A bare name still works (templates only); descriptions refine it.
    """
    by_key = {name_key(s.name): s for s in overrides}
    out: list[ClassSpec] = []
    for name in names:
        name = name.strip()
        if not name:
            raise BadInputError(
                "empty class name; give comma-separated names such as 'beach,forest'"
            )
        user = by_key.get(name_key(name))
        if user is not None:
            out.append(ClassSpec(name, user.phrase, user.descriptions, user.aliases))
            continue
        shipped = builtin_spec(name) if use_builtin else None
        out.append(shipped if shipped is not None else ClassSpec(name, humanise(name)))
    return out


def parse_class_list(text: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c'] with a clear error for an empty list or duplicates."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise BadInputError(
            "no class names given; pass comma-separated names such as 'beach,forest'"
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BadInputError(f"class name(s) given twice: {', '.join(dupes)}; list each class once")
    return names
