from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyfuse.captioning import caption_folder, create_captioner, join_sentences, load_captions
from skyfuse.errors import BadInputError
from tests.captioning.helpers import make_folder
from tests.conftest import shared_path


def test_join_rule() -> None:
    s = ["a plane is parked .", "A plane is parked.", "  two   roads cross ", "a plane is parked ."]
    assert join_sentences(s) == "A plane is parked. Two roads cross."


def test_jsonl_csv_and_caps_pairs(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"image": "A/x.png", "text": "one"})
        + "\n"
        + json.dumps({"path": "A/y.png", "captions": ["p .", "q"]})
        + "\n"
    )
    assert load_captions(tmp_path / "c.jsonl") == {"A/x.png": "one", "A/y.png": "P. Q."}
    (tmp_path / "c.csv").write_text('path,caption\nA/x.png,"grass, trees"\n')
    assert load_captions(tmp_path / "c.csv") == {"A/x.png": "grass, trees"}
    (tmp_path / "train_filename.txt").write_text("x.png\ny.png\n")
    (tmp_path / "train_caps.txt").write_text("a .\na .\nb .\nc .\n")
    (tmp_path / "test_filename.txt").write_text("z.png\nz.png\n")
    (tmp_path / "test_caps.txt").write_text("d .\ne .\n")
    caps = load_captions(tmp_path / "train_caps.txt")
    assert caps == {"x.png": "A.", "y.png": "B. C."}
    assert load_captions(tmp_path)["z.png"] == "D. E."
    (tmp_path / "bad_filename.txt").write_text("x.png\ny.png\n")
    (tmp_path / "bad_caps.txt").write_text("a\nb\nc\n")
    with pytest.raises(BadInputError, match=r"bad_caps\.txt"):
        load_captions(tmp_path / "bad_caps.txt")


def test_karpathy_json_maps_to_dataset(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "scenes", per_class=2)
    data = {
        "images": [
            {
                "filename": "alpha_0.png",
                "split": "train",
                "sentences": [{"raw": "red roofs ."}, {"raw": "Red roofs."}],
            },
            {"filename": "beta_1.png", "sentences": [{"raw": "a pond"}]},
        ]
    }
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    caps = load_captions(tmp_path / "dataset.json", root)
    assert caps == {"Alpha/alpha_0.png": "Red roofs.", "Beta/beta_1.png": "A pond."}
    # the files backend uses the same matching; unmatched images are recorded failures
    s = caption_folder(
        root,
        create_captioner("files", source=tmp_path / "dataset.json"),
        tmp_path / "s.jsonl",
        progress=False,
    )
    assert s.captioned == 2 and s.failed == 2 and "no caption" in s.failures[0][1]


def test_paper_text_tree() -> None:
    root = shared_path("aid-minitest")
    caps = load_captions(root / "text")
    assert len(caps) == 200 and "Airport/airport_1.jpg" in caps
    assert caps == load_captions(root)
    assert caps["Airport/airport_1.jpg"].startswith("There are several aircraft")


def test_rsicd_json_and_caps_txt_map_to_aid() -> None:
    mini = shared_path("aid-minitest")
    human = load_captions(mini / "human_captions_rsicd.json", mini)
    assert len(human) == 200
    # repeated sentences are kept once
    assert (
        human["Airport/airport_1.jpg"]
        == "Many planes are parked next to a long building in an airport."
    )
    rsicd = load_captions(shared_path("captions", "rsicd"), mini / "image")
    assert rsicd == human  # the same RSICD sentences, read from *_caps.txt and joined by file name


def test_other_human_sets_read() -> None:
    # RSITMD lists 4743 images, 4 of which have only empty caption lines
    for name, n in (("ucm", 2100), ("sydney", 583), ("rsitmd", 4739)):
        caps = load_captions(shared_path("captions", name))
        assert len(caps) == n, name
        assert all(c and not c[0].islower() and c.endswith((".", "!", "?")) for c in caps.values())
