"""Seeded seen / unseen class folds for zero-shot evaluation.

Why this shape: the unseen classes of one fold must never leak into training *or* model selection, so a
fold lists its images explicitly: ``train`` and ``val`` come from seen classes only, ``test_seen`` holds
back seen-class images for the generalised setting, ``test_unseen`` is every image of the unseen classes.
Unseen sets are consecutive blocks of one seeded class permutation, so they are disjoint across folds
whenever ``folds * n_unseen <= n_classes`` and always differ from fold to fold otherwise.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from skyfuse.errors import BadInputError, ConfigError

FOLD_FORMAT = "skyfuse-zeroshot-fold/1"


@dataclass(frozen=True)
class ZeroShotFold:
    """One seen / unseen split with its image lists (POSIX paths relative to the image root)."""

    index: int
    seed: int
    seen: list[str]
    unseen: list[str]
    train: list[str]
    val: list[str]
    test_seen: list[str]
    test_unseen: list[str]

    @property
    def classes(self) -> list[str]:
        """Seen then unseen: the label space of the generalised (GZSL) setting."""
        return [*self.seen, *self.unseen]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for part in (
            self.seen,
            self.unseen,
            self.train,
            self.val,
            self.test_seen,
            self.test_unseen,
        ):
            h.update("\n".join(part).encode())
            h.update(b"\0")
        return h.hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"format": FOLD_FORMAT, **asdict(self), "fingerprint": self.fingerprint()}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ZeroShotFold:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BadInputError(f"{path}: fold file not found; check the path") from None
        except json.JSONDecodeError as exc:
            raise BadInputError(
                f"{path}: not valid JSON ({exc.msg}); regenerate the fold"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FOLD_FORMAT:
            raise BadInputError(f"{path}: not a skyfuse zero-shot fold file ({FOLD_FORMAT})")
        fields = ("index", "seed", "seen", "unseen", "train", "val", "test_seen", "test_unseen")
        fold = cls(**{k: data[k] for k in fields})
        if data.get("fingerprint") not in (None, fold.fingerprint()):
            raise BadInputError(f"{path}: fingerprint mismatch (file edited?); regenerate the fold")
        return fold

    def check_disjoint(self) -> None:
        """Raise if any unseen-class image reaches training or validation (a protocol bug)."""
        unseen = set(self.unseen)
        leaked = [r for r in (*self.train, *self.val) if r.split("/", 1)[0] in unseen]
        if leaked or set(self.seen) & unseen:
            raise ConfigError(
                f"fold {self.index}: unseen classes leak into training ({leaked[:3]})"
            )


def class_folds(
    classes: Sequence[str], *, unseen: float = 0.25, folds: int = 3, seed: int = 0
) -> list[tuple[list[str], list[str]]]:
    """(seen, unseen) class lists per fold, both in the input order."""
    classes = list(classes)
    n = len(classes)
    if not 0.0 < unseen < 1.0:
        raise ConfigError(f"--unseen must be a fraction between 0 and 1, got {unseen}")
    if folds < 1:
        raise ConfigError(f"--folds must be at least 1, got {folds}")
    n_unseen = max(1, round(unseen * n))
    if n - n_unseen < 2:
        raise ConfigError(
            f"{n} classes leave fewer than 2 seen classes with --unseen {unseen};"
            " lower --unseen or use a dataset with more classes"
        )
    perm = list(classes)
    random.Random(seed).shuffle(perm)
    if folds * n_unseen <= n:
        starts = [k * n_unseen for k in range(folds)]
    else:
        starts = sorted({(k * n) // folds for k in range(folds)})
        if len(starts) < folds:
            raise ConfigError(f"{n} classes cannot make {folds} different folds; lower --folds")
    out = []
    for start in starts:
        picked = {perm[(start + j) % n] for j in range(n_unseen)}
        out.append(([c for c in classes if c not in picked], [c for c in classes if c in picked]))
    return out


def make_folds(
    rels_by_class: dict[str, list[str]],
    *,
    unseen: float = 0.25,
    folds: int = 3,
    seed: int = 0,
    test: float = 0.2,
    val: float = 0.1,
) -> list[ZeroShotFold]:
    """Folds over a dataset given as {class: [rel paths]}.

    Seen-class images are split per class (seeded): `test` of them held out for GZSL, then `val` of
    the rest for early stopping; the remainder trains. Unseen-class images are all test.
    """
    if not 0.0 < test < 1.0 or not 0.0 <= val < 1.0:
        raise ConfigError(f"test ({test}) and val ({val}) fractions must lie in [0, 1)")
    out = []
    for k, (seen, unseen_classes) in enumerate(
        class_folds(sorted(rels_by_class), unseen=unseen, folds=folds, seed=seed)
    ):
        rng = random.Random(f"{seed}:{k}")
        train: list[str] = []
        val_rels: list[str] = []
        test_seen: list[str] = []
        for c in seen:
            rels = sorted(rels_by_class[c])
            rng.shuffle(rels)
            n_test = max(1, round(test * len(rels))) if len(rels) > 2 else 0
            rest = rels[n_test:]
            n_val = max(1, round(val * len(rest))) if val > 0 and len(rest) > 2 else 0
            test_seen += sorted(rels[:n_test])
            val_rels += sorted(rest[:n_val])
            train += sorted(rest[n_val:])
        test_unseen = sorted(r for c in unseen_classes for r in rels_by_class[c])
        fold = ZeroShotFold(k, seed, seen, unseen_classes, train, val_rels, test_seen, test_unseen)
        fold.check_disjoint()
        out.append(fold)
    return out


def row_labels(
    feature_rels: Sequence[str], rels: Sequence[str], class_names: Sequence[str]
) -> tuple[list[int], list[int]]:
    """(row of each rel in ``feature_rels``, its class index in ``class_names``), or a one-line
    BadInputError naming the first image without features or outside the classes."""
    index = {r: i for i, r in enumerate(feature_rels)}
    missing = [r for r in rels if r not in index]
    if missing:
        raise BadInputError(
            f"{len(missing)} image(s) have no features (e.g. {missing[0]});"
            " extract features for every image of the dataset"
        )
    to_idx = {c: i for i, c in enumerate(class_names)}
    labels = [to_idx.get(r.split("/", 1)[0], -1) for r in rels]
    if -1 in labels:
        bad = rels[labels.index(-1)]
        raise BadInputError(f"{bad}: its class is not among the {len(class_names)} classes given")
    return [index[r] for r in rels], labels
