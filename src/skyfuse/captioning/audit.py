"""The class-name leakage audit and the masking that removes the leak.

Why: a VLM asked "what kind of scene is this" writes its guess of the class into the caption
("Overall, this scene can be classified as an airport"), so a text branch can read the label instead
of learning from the description. Human caption sets leak differently: RSICD reuses one caption for
many images, so a test image may find its own caption in the training part. The audit measures both;
`mask_captions` removes verdict sentences and masks class words so that "does text help" can be
measured without the leak.

Class terms: the registry's aliases (`skyfuse.data.catalog.class_aliases`) when it knows the class,
plus variants derived from the name: CamelCase / snake_case / kebab-case split into words, written
with a space, a hyphen, an underscore or nothing between them, singular and plural. Matching is
case-insensitive on whole words.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

#: Sentences that state a scene class or category rather than describe what is visible.
VERDICT_PATTERNS = (
    r"\b(?:be|is|are|being)\s+(?:\w+\s+)?(?:classified|categori[sz]ed|labell?ed|identified)\s+as\b",
    r"\bclassif(?:y|ied|ication)\b",
    r"\bcategor(?:y|ies|i[sz]e|i[sz]ed|i[sz]ation)\b",
    r"\b(?:scene|image|land[\s-]?use|area)\s+(?:type|class)\b",
    r"\btype\s+of\s+(?:scene|land[\s-]?use|area|landscape)\b",
)
VERDICT_RE = re.compile("|".join(VERDICT_PATTERNS), re.IGNORECASE)
_SENTENCE_RE = re.compile(r"[^.!?]+(?:[.!?]+|$)")
_CAMEL_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def split_words(name: str) -> list[str]:
    """``BaseballField`` / ``baseball_field`` / ``storage-tanks`` -> lower-case words."""
    words: list[str] = []
    for chunk in re.split(r"[\s_\-/]+", name.strip()):
        words.extend(w.lower() for w in _CAMEL_RE.findall(chunk))
    return [w for w in words if w]


def _word_forms(word: str) -> str:
    """Regex for a word's singular and plural spellings."""
    if word.endswith("ies") and len(word) > 4:
        stem = re.escape(word[:-3])
        return f"{stem}(?:y|ies)"
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        return f"{re.escape(word[:-1])}(?:y|ies)"
    if word.endswith(("ss", "sh", "ch", "x", "z")):
        return f"{re.escape(word)}(?:es)?"
    if word.endswith("s") and len(word) > 3:
        return f"{re.escape(word[:-1])}(?:s|es)?"
    return f"{re.escape(word)}(?:s|es)?"


def _phrase_regex(words: Sequence[str]) -> str:
    if not words:
        return ""
    head = [re.escape(w) for w in words[:-1]]
    return r"[\s_-]?".join([*head, _word_forms(words[-1])])


def _catalog_aliases(class_name: str) -> list[str]:
    try:
        from skyfuse.data.catalog import class_aliases
    except ImportError:
        return []
    try:
        return [a for a in class_aliases(class_name) if isinstance(a, str) and a.strip()]
    except Exception:  # unknown class or catalog still in flux: fall back to derived variants
        return []


def class_terms(class_name: str) -> list[str]:
    """Lower-case spellings that count as naming the class (aliases + derived variants)."""
    words = split_words(class_name)
    terms = {" ".join(words), "".join(words), "-".join(words)}
    terms.update(a.lower().strip() for a in _catalog_aliases(class_name))
    return sorted(t for t in terms if t)


@lru_cache(maxsize=4096)
def class_regex(class_name: str) -> re.Pattern[str]:
    alts = {
        _phrase_regex(split_words(class_name)),
        _phrase_regex(["".join(split_words(class_name))]),
    }
    for alias in _catalog_aliases(class_name):
        alts.add(_phrase_regex(alias.lower().replace("_", " ").replace("-", " ").split()))
    body = "|".join(sorted((a for a in alts if a), key=len, reverse=True))
    return re.compile(rf"(?<![a-z0-9])(?:{body})(?![a-z0-9])", re.IGNORECASE)


def names_class(caption: str, class_name: str) -> bool:
    return class_regex(class_name).search(caption) is not None


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_RE.findall(text) if s.strip()]


def is_verdict(sentence: str) -> bool:
    return VERDICT_RE.search(sentence) is not None


def strip_verdicts(caption: str) -> str:
    return " ".join(s for s in split_sentences(caption) if not is_verdict(s))


def mask_caption(caption: str, class_names: Sequence[str], token: str = "[MASK]") -> str:
    text = strip_verdicts(caption)
    # longest class names first, so "DenseResidential" is masked before a shorter overlapping name
    for name in sorted(class_names, key=lambda c: len(split_words(c)), reverse=True):
        text = class_regex(name).sub(token, text)
    return " ".join(text.split())


def mask_captions(
    captions: dict[str, str], class_names: Sequence[str], *, token: str = "[MASK]"
) -> dict[str, str]:
    """Verdict sentences removed and every class term (of *all* classes) replaced by `token`."""
    return {rel: mask_caption(c, class_names, token) for rel, c in captions.items()}


def _norm_caption(c: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", c.lower()).strip()


@dataclass
class ClassAudit:
    n: int = 0
    self_named: int = 0
    verdicts: int = 0
    other_classes: Counter[str] = field(default_factory=Counter)

    @property
    def self_rate(self) -> float:
        return self.self_named / self.n if self.n else 0.0


@dataclass
class AuditReport:
    per_class: dict[str, ClassAudit]
    duplicate_groups: list[tuple[str, list[str]]]

    @property
    def n(self) -> int:
        return sum(c.n for c in self.per_class.values())

    @property
    def self_named(self) -> int:
        return sum(c.self_named for c in self.per_class.values())

    @property
    def verdicts(self) -> int:
        return sum(c.verdicts for c in self.per_class.values())

    @property
    def shared_images(self) -> int:
        """Images whose caption is word for word the caption of at least one other image."""
        return sum(len(rels) for _, rels in self.duplicate_groups)

    @property
    def cross_class_groups(self) -> int:
        return sum(
            1 for _, rels in self.duplicate_groups if len({r.split("/")[0] for r in rels}) > 1
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "captions": self.n,
            "self_named": self.self_named,
            "self_named_rate": self.self_named / self.n if self.n else 0.0,
            "verdict_captions": self.verdicts,
            "shared_images": self.shared_images,
            "duplicate_groups": len(self.duplicate_groups),
            "per_class": {
                name: {
                    "n": c.n,
                    "self_named": c.self_named,
                    "self_named_rate": round(c.self_rate, 4),
                    "verdicts": c.verdicts,
                    "other_classes": dict(c.other_classes.most_common()),
                }
                for name, c in self.per_class.items()
            },
            "top_duplicates": [
                {"caption": cap, "images": rels} for cap, rels in self.duplicate_groups[:20]
            ],
        }


def audit_captions(
    captions: Mapping[str, str],
    class_of: Mapping[str, str] | None = None,
    class_names: Sequence[str] | None = None,
) -> AuditReport:
    """Per class: how many captions name their own class, how many hold a verdict sentence, which
    other classes are named; and groups of images sharing one caption word for word.

    `class_of` maps each caption's key to its class (default: the first path component).
    """
    labels = {
        rel: (class_of[rel] if class_of is not None else rel.split("/")[0]) for rel in captions
    }
    names = list(class_names) if class_names is not None else sorted(set(labels.values()))
    per_class = {name: ClassAudit() for name in names}
    for rel, cap in captions.items():
        cls = labels[rel]
        entry = per_class.setdefault(cls, ClassAudit())
        entry.n += 1
        if names_class(cap, cls):
            entry.self_named += 1
        if any(is_verdict(s) for s in split_sentences(cap)):
            entry.verdicts += 1
        for other in names:
            if other != cls and names_class(cap, other) and not _inside_own(cap, cls, other):
                entry.other_classes[other] += 1
    groups: dict[str, list[str]] = {}
    for rel, cap in captions.items():
        key = _norm_caption(cap)
        if key:
            groups.setdefault(key, []).append(rel)
    dups = sorted(
        ((captions[rels[0]], sorted(rels)) for rels in groups.values() if len(rels) > 1),
        key=lambda g: (-len(g[1]), g[0]),
    )
    return AuditReport(per_class, dups)


def _inside_own(caption: str, own: str, other: str) -> bool:
    """True when every mention of `other` lies inside a mention of the own class
    (``"dense residential"`` contains ``"residential"``)."""
    own_spans = [m.span() for m in class_regex(own).finditer(caption)]
    if not own_spans:
        return False
    return all(
        any(a <= m.start() and m.end() <= b for a, b in own_spans)
        for m in class_regex(other).finditer(caption)
    )


def with_registry_classes(folder_classes: Sequence[str]) -> tuple[list[str], str | None]:
    """The folder's classes plus the other classes of the registry dataset they belong to.

    Why: a four-class AID subset's captions can still name AID's other classes ("desert" for bare
    land), which is leakage too. Returns (names, registry dataset name or None).
    """
    try:
        from skyfuse.data.catalog import match_dataset
    except ImportError:
        return list(folder_classes), None
    try:
        info = match_dataset(list(folder_classes))
    except Exception:
        return list(folder_classes), None
    if info is None:
        return list(folder_classes), None
    spelled = {c.name for c in (info.find_class(f) for f in folder_classes) if c is not None}
    extra = [c.name for c in info.classes if c.name not in spelled]
    return [*folder_classes, *extra], info.name


def caption_overlap(captions: Mapping[str, str], train: Sequence[str], test: Sequence[str]) -> int:
    """How many test images have a caption that also occurs, word for word, in the training part."""
    seen = {_norm_caption(captions[r]) for r in train if r in captions}
    return sum(1 for r in test if r in captions and _norm_caption(captions[r]) in seen)
