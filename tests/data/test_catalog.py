"""Dataset registry: names, spellings, counts, matching, aliases for the leakage audit."""

from __future__ import annotations

import pytest

from skyfuse.data.catalog import (
    class_aliases,
    get_dataset,
    list_datasets,
    match_dataset,
    name_key,
    split_words,
)
from skyfuse.data.splits import list_protocols
from skyfuse.errors import ConfigError

EXPECTED = {
    "ucm": (21, 2100, 256),
    "aid": (30, 10000, 600),
    "nwpu-resisc45": (45, 31500, 256),
    "whu-rs19": (19, 1005, 600),
    "rsscn7": (7, 2800, 400),
    "patternnet": (38, 30400, 256),
    "eurosat-rgb": (10, 27000, 64),
}


def test_registry_has_the_seven_datasets_with_consistent_counts() -> None:
    assert sorted(EXPECTED) == list_datasets()
    for name, (n_classes, total, size) in EXPECTED.items():
        info = get_dataset(name)
        assert len(info.classes) == n_classes, name
        assert info.total == total and info.image_size == (size, size)
        counts = [c.count for c in info.classes]
        assert all(c is not None for c in counts)
        assert sum(c for c in counts if c is not None) == total, name
        assert len({name_key(c.name) for c in info.classes}) == n_classes
        assert info.citation and info.licence and info.homepage
        for proto in info.protocols:
            assert proto in list_protocols(info.name)
        assert info.url is None or info.md5 or info.sha256  # never a URL without a checksum


def test_whu_counts_follow_source() -> None:
    counts = get_dataset("WHU-RS19").expected_counts()
    assert counts["meadow"] == 61 and counts["viaduct"] == 58 and counts["airport"] == 55


def test_dataset_name_spellings() -> None:
    assert get_dataset("NWPU").name == "nwpu-resisc45"
    assert get_dataset("UC Merced Land Use").name == "ucm"
    assert get_dataset("EuroSAT").name == "eurosat-rgb"
    with pytest.raises(ConfigError, match="known"):
        get_dataset("imagenet")


def test_split_words() -> None:
    assert split_words("StorageTanks") == ["storage", "tanks"]
    assert split_words("storage_tank") == ["storage", "tank"]
    assert split_words("railwayStation") == ["railway", "station"]
    assert split_words("ground-track field") == ["ground", "track", "field"]


def test_class_spellings_match_across_releases() -> None:
    aid = get_dataset("aid")
    tanks = aid.find_class("storage tanks")
    assert tanks is not None and tanks.name == "StorageTanks"
    for spelling in ("storagetanks", "Storage_Tank", "storage-tanks", "STORAGE TANK"):
        assert aid.find_class(spelling) is tanks
    whu = get_dataset("whu-rs19")
    assert whu.find_class("footballField") is whu.find_class("football field") is not None
    assert get_dataset("rsscn7").find_class("dRiverLake") is not None


def test_match_dataset() -> None:
    whu = get_dataset("whu-rs19")
    assert match_dataset(whu.class_names) is whu
    # the README's class_changes spellings still match
    spaced = [n.replace("footballfield", "football field") for n in whu.class_names]
    assert match_dataset(spaced) is whu
    # a subset matches the smallest dataset that holds all of it
    assert match_dataset(["Airport", "BareLand", "BaseballField", "Beach"]) is get_dataset("aid")
    assert match_dataset([c.upper() for c in get_dataset("ucm").class_names]) is get_dataset("ucm")
    assert match_dataset(["beach", "volcano"]) is None
    assert match_dataset([]) is None
    assert match_dataset(["river", "river"]) is None  # two folders cannot be one class


def test_class_aliases_for_leakage_audit() -> None:
    tanks = class_aliases("StorageTanks")
    for s in ("storagetanks", "storage tanks", "storage tank", "storage_tanks", "oil tanks"):
        assert s in tanks
    assert all(a == a.lower() for a in tanks)
    parking = class_aliases("parking")
    assert "parking lot" in parking and "car park" in parking
    assert parking.index("parking lot") < parking.index("parking")
    # works for names outside the registry too
    novel = class_aliases("SolarFarm")
    assert {"solar farm", "solarfarm", "solar farms", "solar_farm"} <= set(novel)
    assert "baseball diamond" in class_aliases("BaseballField")
