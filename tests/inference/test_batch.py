from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from skyfuse.errors import BadInputError
from skyfuse.inference import PredictionWriter, collect_inputs, predict_files, read_predictions
from tests.inference.helpers import make_predictor, random_image


@pytest.fixture(scope="module")
def predictor(bundle_dir: Path):  # type: ignore[no-untyped-def]
    return make_predictor(bundle_dir, batch_size=4)


def _folder(root: Path, n: int = 5) -> Path:
    (root / "a b").mkdir(parents=True)
    (root / "ü").mkdir()
    for i in range(n):
        random_image(48, seed=i).save(root / ("a b" if i % 2 else "ü") / f"img {i}.png")
    (root / "ü" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "ü" / "notes.txt").write_text("ignored")
    (root / ".hidden").mkdir()
    random_image(48).save(root / ".hidden" / "x.png")
    return root


def test_collect_inputs(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    items = collect_inputs([root])
    keys = [it.key for it in items]
    assert keys == sorted(keys) and len(keys) == 6
    assert "ü/broken.jpg" in keys and not any(".hidden" in k for k in keys)
    single = collect_inputs([root / "a b" / "img 1.png"])
    assert single[0].key == str(root / "a b" / "img 1.png")
    with pytest.raises(BadInputError, match="not found"):
        collect_inputs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no image files"):
        collect_inputs([tmp_path / "empty"])


def test_jsonl_resume_and_corrupt(tmp_path: Path, predictor) -> None:  # type: ignore[no-untyped-def]
    root = _folder(tmp_path / "imgs")
    items = collect_inputs([root])
    out = tmp_path / "preds.jsonl"
    given = {"a b/img 1.png": "a given caption"}
    with PredictionWriter(out, top_k=3) as w:
        s1 = predict_files(predictor, items[:3], w, captions=given, top_k=3, batch_size=2)
    assert s1.predicted + len(s1.failed) == 3
    # simulate a kill mid-write: a torn last line
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"path": "torn", "top')
    with PredictionWriter(out, top_k=3) as w:
        s2 = predict_files(predictor, items, w, captions=given, top_k=3, batch_size=2)
    assert s2.already_done == s1.predicted
    assert s1.predicted + s2.predicted == 5
    # a corrupt file is reported (and retried) by every run, never written
    assert [k for k, _ in s1.failed] == [k for k, _ in s2.failed] == ["ü/broken.jpg"]
    recs = read_predictions(out)
    paths = [r["path"] for r in recs]
    assert sorted(paths) == sorted(it.key for it in items if "broken" not in it.key)
    assert len(set(paths)) == len(paths)
    by_path = {r["path"]: r for r in recs}
    assert by_path["a b/img 1.png"]["caption"] == "a given caption"
    assert all(len(r["top_k"]) == 3 and set(r["top_k"][0]) == {"label", "prob"} for r in recs)
    assert all(json.loads(line) for line in out.read_text().splitlines())
    # a third run has nothing to do
    with PredictionWriter(out, top_k=3) as w:
        s3 = predict_files(predictor, items, w, top_k=3)
    assert s3.predicted == 0 and s3.already_done == 5


def test_csv_output(tmp_path: Path, predictor) -> None:  # type: ignore[no-untyped-def]
    root = _folder(tmp_path / "imgs", n=2)
    items = collect_inputs([root])
    out = tmp_path / "preds.csv"
    with PredictionWriter(out, top_k=2) as w:
        predict_files(predictor, items, w, top_k=2)
    recs = read_predictions(out)
    assert len(recs) == 2 and all(len(r["top_k"]) == 2 for r in recs)
    with pytest.raises(BadInputError, match="--top-k 2"):
        PredictionWriter(out, top_k=5)
    with pytest.raises(BadInputError, match=r"\.jsonl or \.csv"):
        PredictionWriter(tmp_path / "p.txt", top_k=2)


def test_same_key_from_two_folders_is_refused(tmp_path: Path) -> None:
    """Regression: `predict model A B` silently dropped B/x.png when A/x.png existed."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / name / "x.png")
    with pytest.raises(BadInputError, match="same name"):
        collect_inputs([tmp_path / "a", tmp_path / "b"])
    # one file reached twice (its folder and itself by the same key) is one input
    assert len(collect_inputs([tmp_path / "a", tmp_path / "a"])) == 1
