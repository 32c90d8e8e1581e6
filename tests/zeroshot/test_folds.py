from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyfuse.errors import BadInputError, ConfigError
from skyfuse.zeroshot.folds import ZeroShotFold, class_folds, make_folds

CLASSES = [f"c{i:02d}" for i in range(12)]


def _data(n_per: int = 10) -> dict[str, list[str]]:
    return {c: [f"{c}/{i}.jpg" for i in range(n_per)] for c in CLASSES}


def test_unseen_sets_disjoint_when_possible() -> None:
    folds = class_folds(CLASSES, unseen=0.25, folds=4, seed=0)
    unseen = [set(u) for _, u in folds]
    assert all(len(u) == 3 for u in unseen)
    assert len(set().union(*unseen)) == 12  # 4 x 3 disjoint sets cover the 12 classes
    for seen, u in folds:
        assert set(seen) | set(u) == set(CLASSES) and not set(seen) & set(u)


def test_folds_differ_when_they_must_overlap() -> None:
    folds = class_folds(CLASSES, unseen=0.5, folds=3, seed=1)
    unseen = [tuple(u) for _, u in folds]
    assert len(set(unseen)) == 3


def test_seed_changes_and_reproduces_folds() -> None:
    a = class_folds(CLASSES, seed=0)
    assert a == class_folds(CLASSES, seed=0)
    assert a != class_folds(CLASSES, seed=1)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"unseen": 0.0}, "fraction"),
        ({"unseen": 1.0}, "fraction"),
        ({"folds": 0}, "at least 1"),
        ({"unseen": 0.95}, "fewer than 2 seen"),
    ],
)
def test_bad_fold_settings(kw: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        class_folds(CLASSES, **kw)  # type: ignore[arg-type]


def test_images_of_unseen_classes_never_train() -> None:
    for fold in make_folds(_data(), unseen=0.25, folds=3, seed=0):
        unseen = set(fold.unseen)
        for rel in fold.train + fold.val + fold.test_seen:
            assert rel.split("/")[0] not in unseen
        assert {r.split("/")[0] for r in fold.test_unseen} == unseen
        assert len(fold.test_unseen) == 10 * len(unseen)
        parts = [fold.train, fold.val, fold.test_seen]
        flat = [r for p in parts for r in p]
        assert len(flat) == len(set(flat)) == 10 * len(fold.seen)
        assert len(fold.test_seen) == 2 * len(fold.seen) and len(fold.val) == len(fold.seen)


def test_check_disjoint_catches_leaks() -> None:
    fold = make_folds(_data(), folds=1)[0]
    bad = ZeroShotFold(0, 0, fold.seen, fold.unseen, [*fold.train, fold.test_unseen[0]], [], [], [])
    with pytest.raises(ConfigError, match="leak"):
        bad.check_disjoint()


def test_save_load_and_tamper(tmp_path: Path) -> None:
    fold = make_folds(_data(), folds=2, seed=3)[1]
    path = fold.save(tmp_path / "f" / "fold_1.json")
    assert ZeroShotFold.load(path) == fold
    data = json.loads(path.read_text())
    data["train"].append(data["test_unseen"][0])
    path.write_text(json.dumps(data))
    with pytest.raises(BadInputError, match="fingerprint"):
        ZeroShotFold.load(path)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(BadInputError, match="not a skyfuse"):
        ZeroShotFold.load(tmp_path / "x.json")
    with pytest.raises(BadInputError, match="not found"):
        ZeroShotFold.load(tmp_path / "missing.json")
