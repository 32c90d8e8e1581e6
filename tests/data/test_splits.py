"""Splits: stratified, seeded, val carved from train, JSON round trip, folder verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyfuse.data import SceneFolder
from skyfuse.data.splits import (
    Split,
    caption_overlap,
    folder_fingerprint,
    get_protocol,
    list_protocols,
    make_split,
)
from skyfuse.data.synthetic import make_synthetic_dataset
from skyfuse.errors import BadInputError, ConfigError

CLASSES = ["beach", "desert", "forest"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("scenes"), per_class=20, size=24, classes=CLASSES
    )


def test_protocol_registry() -> None:
    for name in (
        "ucm-80",
        "ucm-50",
        "aid-20",
        "aid-50",
        "nwpu-10",
        "nwpu-20",
        "whu-60",
        "whu-40",
        "rsscn7-50",
        "patternnet-80",
        "eurosat-80",
    ):
        assert name in list_protocols()
    assert get_protocol("AID-20").train == pytest.approx(0.2)
    assert list_protocols("aid") == ["aid-20", "aid-50"]
    with pytest.raises(ConfigError, match="known"):
        get_protocol("aid-99")


def test_stratified_disjoint_and_seeded(scenes: Path) -> None:
    folder = SceneFolder(scenes)
    split = make_split(folder, protocol="aid-50", seed=3, val=0.2)
    counts = split.counts()
    assert counts["test"] == dict.fromkeys(CLASSES, 10)
    assert counts["val"] == dict.fromkeys(CLASSES, 2)
    assert counts["train"] == dict.fromkeys(CLASSES, 8)
    all_rels = split.train + split.val + split.test
    assert sorted(all_rels) == sorted(s.rel for s in folder.samples)
    assert len(set(all_rels)) == len(all_rels)
    again = make_split(folder, protocol="aid-50", seed=3, val=0.2)
    assert again.to_dict() == split.to_dict()
    other = make_split(folder, protocol="aid-50", seed=4, val=0.2)
    assert set(other.test) != set(split.test)
    assert split.protocol == "aid-50" and split.synthetic


def test_val_is_carved_from_train_and_test_is_fixed(scenes: Path) -> None:
    folder = SceneFolder(scenes)
    no_val = make_split(folder, train=0.6, val=0.0, seed=1)
    with_val = make_split(folder, train=0.6, val=0.25, seed=1)
    assert no_val.val == []
    assert with_val.test == no_val.test  # model selection never touches the test images
    assert set(with_val.train) | set(with_val.val) == set(no_val.train)
    assert with_val.part("trainval") == with_val.train + with_val.val


def test_adding_a_class_keeps_other_classes_split(tmp_path: Path) -> None:
    small = make_synthetic_dataset(
        tmp_path / "a", per_class=10, size=16, classes=["beach", "forest"]
    )
    big = make_synthetic_dataset(
        tmp_path / "b", per_class=10, size=16, classes=["beach", "desert", "forest"]
    )
    s1 = make_split(SceneFolder(small), train=0.5, seed=0)
    s2 = make_split(SceneFolder(big), train=0.5, seed=0)
    assert [r for r in s2.test if r.startswith("forest/")] == [
        r for r in s1.test if r.startswith("forest/")
    ]


def test_tiny_classes_keep_both_parts(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path, per_class=2, size=16, classes=["beach", "forest"])
    split = make_split(SceneFolder(root), protocol="nwpu-10", seed=0)
    assert split.counts()["test"] == {"beach": 1, "forest": 1}
    assert split.counts()["train"] == {"beach": 1, "forest": 1}


def test_useless_splits_are_refused(tmp_path: Path) -> None:
    """Regression: `skyfuse split` on a one-class folder wrote a split with an empty test part."""
    one = make_synthetic_dataset(tmp_path / "one", per_class=3, size=16, classes=["beach"])
    with pytest.raises(BadInputError, match=r"only 1 class folder \(beach\)"):
        make_split(SceneFolder(one), train=0.5)
    singles = make_synthetic_dataset(
        tmp_path / "singles", per_class=1, size=16, classes=["beach", "forest"]
    )
    with pytest.raises(BadInputError, match="enough images to leave one for testing"):
        make_split(SceneFolder(singles), train=0.5)


def test_bad_arguments(scenes: Path) -> None:
    folder = SceneFolder(scenes)
    with pytest.raises(ConfigError, match="exactly one"):
        make_split(folder)
    with pytest.raises(ConfigError, match="exactly one"):
        make_split(folder, protocol="aid-20", train=0.5)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        make_split(folder, train=1.0)
    with pytest.raises(ConfigError, match="val"):
        make_split(folder, train=0.5, val=1.0)
    split = make_split(folder, train=0.5)
    with pytest.raises(ConfigError, match="part"):
        split.part("holdout")


def test_save_load_round_trip_and_labels(scenes: Path, tmp_path: Path) -> None:
    folder = SceneFolder(scenes)
    split = make_split(folder, protocol="whu-60", seed=7)
    path = split.save(tmp_path / "sub" / "split.json")
    loaded = Split.load(path)
    assert loaded == split
    raw = json.loads(path.read_text())
    assert raw["classes"] == CLASSES and raw["seed"] == 7 and raw["protocol"] == "whu-60"
    assert raw["fingerprint"] == folder_fingerprint(folder)
    samples = loaded.samples(folder, "test")
    assert [s.label for s in samples] == loaded.labels("test")
    assert all(s.rel in loaded.test for s in samples)
    loaded.verify(folder)
    loaded.verify(scenes)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BadInputError, match=r"bad\.json.*skyfuse split"):
        Split.load(bad)
    bad.write_text(json.dumps({"classes": ["a"]}))
    with pytest.raises(BadInputError, match="lacks"):
        Split.load(bad)
    raw = {
        "classes": ["a"],
        "train": ["a/1.jpg"],
        "val": [],
        "test": ["a/1.jpg"],
        "seed": 0,
        "fingerprint": "x",
    }
    bad.write_text(json.dumps(raw))
    with pytest.raises(BadInputError, match="twice"):
        Split.load(bad)
    with pytest.raises(BadInputError, match="not found"):
        Split.load(tmp_path / "nope.json")


def test_verify_detects_changes(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "s", per_class=6, size=16, classes=CLASSES)
    split = make_split(SceneFolder(root), train=0.5, seed=0)
    victim = root / split.test[0]
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(BadInputError, match="sizes changed"):
        split.verify(root)
    victim.unlink()
    with pytest.raises(BadInputError, match=r"1 missing.*make a new split"):
        split.verify(root)
    (root / "water").mkdir()
    (root / "water" / "w.jpg").write_bytes((root / split.train[0]).read_bytes())
    with pytest.raises(BadInputError, match=r"new: \['water'\]"):
        split.verify(root)


def test_caption_overlap(scenes: Path) -> None:
    split = make_split(SceneFolder(scenes), train=0.5, val=0.2, seed=0)
    captions = {r: f"unique caption {i}" for i, r in enumerate(split.part("trainval") + split.test)}
    assert caption_overlap(captions, split) == 0
    captions[split.test[0]] = "A  Sandy beach."
    captions[split.test[1]] = "a sandy beach"
    captions[split.train[0]] = "a sandy BEACH"
    captions[split.val[0]] = "grey roofs"
    captions[split.test[2]] = "Grey roofs."
    del captions[split.test[3]]
    assert caption_overlap(captions, split) == 3
    assert caption_overlap(captions, split, against=("train",)) == 2


class _FakeFolder(SceneFolder):
    """A SceneFolder over made-up samples (no files), for property tests of the split arithmetic."""

    def __init__(self, sizes: list[int]) -> None:
        from skyfuse.data.folder import Sample

        self.root = Path("/nonexistent/fake")
        self.image_root = self.root
        self.classes = [f"c{i}" for i in range(len(sizes))]
        self.samples = [
            Sample(Path(f"/nonexistent/c{i}/{j}.jpg"), f"c{i}/{j}.jpg", i, f"c{i}")
            for i, n in enumerate(sizes)
            for j in range(n)
        ]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6),
    ratio=st.floats(min_value=0.05, max_value=0.95),
    val=st.sampled_from([0.0, 0.1, 0.25]),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_split_properties(sizes: list[int], ratio: float, val: float, seed: int) -> None:
    folder = _FakeFolder(sizes)
    if len(sizes) < 2:
        with pytest.raises(BadInputError, match="only 1 class folder"):
            make_split(folder, train=ratio, val=val, seed=seed)
        return
    try:
        split = make_split(folder, train=ratio, val=val, seed=seed)
    except BadInputError as exc:  # only when no class can spare a test image
        assert max(sizes) == 1 and "testing" in str(exc)
        return
    parts = split.train + split.val + split.test
    assert sorted(parts) == sorted(s.rel for s in folder.samples)  # a partition
    counts = split.counts()
    for i, n in enumerate(sizes):
        c = f"c{i}"
        trainval = counts["train"][c] + counts["val"][c]
        if n >= 2:
            assert counts["test"][c] >= 1 and counts["train"][c] >= 1
        assert abs(trainval - ratio * n) <= 1  # stratified: each class near the ratio
        if val == 0.0:
            assert counts["val"][c] == 0
    assert make_split(folder, train=ratio, val=val, seed=seed).to_dict() == split.to_dict()


def test_byte_identical_images_stay_in_one_part(tmp_path: Path) -> None:
    from skyfuse.data.splits import duplicate_groups

    root = make_synthetic_dataset(tmp_path / "d", per_class=10, size=24, classes=CLASSES)
    # copies of the same bytes under other names: within a class, and across two classes
    copies = []
    for i in range(4):
        src = root / "beach" / sorted(p.name for p in (root / "beach").iterdir())[i]
        for k in range(3):
            dst = root / "beach" / f"copy{i}_{k}{src.suffix}"
            dst.write_bytes(src.read_bytes())
            copies.append(dst)
    forest = sorted((root / "forest").iterdir())[0]
    (root / "desert" / f"from_forest{forest.suffix}").write_bytes(forest.read_bytes())
    folder = SceneFolder(root)
    groups = duplicate_groups(folder)
    assert len(groups) == 5 and all(len(g) in (2, 4) for g in groups)
    moved_any = 0
    for seed in range(6):
        split = make_split(folder, train=0.5, val=0.2, seed=seed)
        part_of = {r: p for p in ("train", "val", "test") for r in split.part(p)}
        for g in groups:
            assert len({part_of[r] for r in g}) == 1, (seed, g)
        assert sorted(part_of) == sorted(s.rel for s in folder.samples)  # still a partition
        dup = split.extra["duplicates"]
        assert dup["groups"] == 5 and 0 <= dup["moved_groups"] <= 5
        moved_any += dup["moved_groups"]
        assert Split.from_dict(json.loads(json.dumps(split.to_dict()))).extra == split.extra
    assert moved_any > 0  # without grouping, random cuts split these groups


def test_folders_without_duplicates_split_as_before(scenes: Path) -> None:
    split = make_split(SceneFolder(scenes), protocol="aid-50", seed=3, val=0.2)
    assert split.extra == {}  # no duplicates: nothing recorded, same JSON as before
