from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyfuse.data.catalog import get_dataset, list_datasets
from skyfuse.data.synthetic import SYNTHETIC_CLASSES
from skyfuse.errors import BadInputError
from skyfuse.zeroshot.classes import (
    DEFAULT_TEMPLATES,
    ClassSpec,
    builtin_spec,
    builtin_specs,
    humanise,
    load_class_file,
    parse_class_list,
    resolve_classes,
    save_class_file,
)


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("BaseballField", "baseball field"),
        ("baseball_diamond", "baseball diamond"),
        ("storage-tanks", "storage tanks"),
        ("RiverLake", "river lake"),
        ("  golf  course ", "golf course"),
    ],
)
def test_humanise(name: str, phrase: str) -> None:
    assert humanise(name) == phrase


@pytest.mark.parametrize("dataset", list_datasets())
def test_every_registry_class_has_a_description(dataset: str) -> None:
    for info in get_dataset(dataset).classes:
        spec = builtin_spec(info.name)
        assert spec is not None, f"{dataset}: {info.name} has no shipped description"
        assert spec.name == info.name and spec.descriptions and spec.phrase


def test_synthetic_classes_have_descriptions() -> None:
    for name in SYNTHETIC_CLASSES:
        spec = builtin_spec(name)
        assert spec is not None and spec.descriptions, name


def test_spellings_map_to_the_same_concept() -> None:
    assert builtin_spec("BaseballField").phrase == builtin_spec("baseball_diamond").phrase  # type: ignore[union-attr]
    assert builtin_spec("Parking").phrase == "parking lot"  # type: ignore[union-attr]
    assert builtin_spec("storage_tank").phrase == builtin_spec("StorageTanks").phrase  # type: ignore[union-attr]
    assert builtin_spec("helipad") is None


def test_builtin_entries_are_unique_and_described() -> None:
    names = [s.name for s in builtin_specs()]
    assert len(names) == len(set(names))
    assert all(s.descriptions for s in builtin_specs())


def test_texts_fill_templates_then_descriptions() -> None:
    spec = ClassSpec("x", "golf course", ("green fairways.",))
    texts = spec.texts(("a photo of a {}.", "{} from above"))
    assert texts == ["a photo of a golf course.", "golf course from above", "green fairways."]
    assert DEFAULT_TEMPLATES[0] == "an aerial image of a {}."


def test_resolve_prefers_user_then_builtin_then_name() -> None:
    user = [ClassSpec("Beach", "sandy coast", ("sand by the sea.",))]
    specs = resolve_classes(["beach", "Forest", "helipad"], user)
    assert specs[0].phrase == "sandy coast" and specs[0].name == "beach"
    assert specs[1].phrase == "forest" and specs[1].descriptions
    assert specs[2] == ClassSpec("helipad", "helipad")
    bare = resolve_classes(["Forest"], use_builtin=False)
    assert bare[0].descriptions == ()


def test_yaml_and_json_round_trip(tmp_path: Path) -> None:
    specs = [ClassSpec("Golf", "golf course", ("fairways.",)), ClassSpec("Helipad", "helipad")]
    for name in ("c.yaml", "c.json"):
        path = save_class_file(tmp_path / name, specs, ["an image of a {}."])
        loaded, templates = load_class_file(path)
        assert loaded == specs and templates == ["an image of a {}."]


def test_class_file_shapes(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("- beach\n- name: Golf\n  descriptions: green.\n")
    specs, templates = load_class_file(tmp_path / "a.yaml")
    assert [s.name for s in specs] == ["beach", "Golf"] and specs[1].descriptions == ("green.",)
    assert templates == []
    (tmp_path / "b.json").write_text(json.dumps({"beach": ["sand."], "golf": None}))
    specs, _ = load_class_file(tmp_path / "b.json")
    assert specs[0].descriptions == ("sand.",) and specs[1].descriptions == ()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("classes: []\n", "no classes"),
        ("classes:\n  - {descriptions: [x]}\n", "'name'"),
        ("classes: [a, a]\n", "twice"),
        ("templates: [no placeholder]\nclasses: [a]\n", "templates"),
        ("classes: [a\n", "not valid YAML"),
    ],
)
def test_bad_class_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BadInputError, match=match) as info:
        load_class_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_class_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not found"):
        load_class_file(tmp_path / "nope.yaml")


def test_parse_class_list() -> None:
    assert parse_class_list(" beach, golf course ,") == ["beach", "golf course"]
    with pytest.raises(BadInputError, match="no class names"):
        parse_class_list(" , ")
    with pytest.raises(BadInputError, match="twice: beach"):
        parse_class_list("beach,forest,beach")
