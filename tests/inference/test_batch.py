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


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_failed_captions_are_error_records_retried_on_resume(
    bundle_dir: Path, tmp_path: Path, suffix: str
) -> None:
    """Regression: a caption that failed was an empty string, scored as if it were a caption."""
    from tests.inference.test_caption_policy import FailingAttributes

    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(4):
        random_image(48, seed=i).save(root / f"{i}.png")
    items = collect_inputs([root])
    failing = make_predictor(bundle_dir, captioner=FailingAttributes(), batch_size=4)
    out = tmp_path / f"p{suffix}"
    with PredictionWriter(out, top_k=2) as w:
        s = predict_files(failing, items, w, top_k=2, batch_size=4)
    assert s.predicted == 2 and len(s.caption_failed) == 2 and s.captioned == 2
    recs = {r["path"]: r for r in read_predictions(out)}
    bad = recs[s.caption_failed[0][0]]
    assert bad["error"] and bad["top_k"] == [] and not bad["caption"]
    good = next(r for r in recs.values() if "error" not in r)
    assert good["caption"] == "grey roofs and roads" and good["caption_mismatch"] is False
    # the next run predicts only the failed images again; their new records replace the old
    working = make_predictor(bundle_dir, batch_size=4)
    with PredictionWriter(out, top_k=2) as w:
        assert len(w.done) == 2
        s2 = predict_files(working, items, w, top_k=2, batch_size=4)
    assert s2.predicted == 2 and s2.already_done == 2 and not s2.caption_failed
    final = read_predictions(out)
    assert len(final) == 4 and not any("error" in r for r in final)


def test_plan_refuses_missing_captions_and_captions_of_another_kind(
    tmp_path: Path, bundle_dir: Path
) -> None:
    from skyfuse.captioning.prompts import resolve_prompt
    from skyfuse.captioning.store import make_record
    from skyfuse.errors import ConfigError
    from skyfuse.inference import CaptionRefused, plan_captions
    from tests.inference.helpers import make_bundle

    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(2):
        random_image(48, seed=i).save(root / f"{i}.png")
    items = collect_inputs([root])
    human = make_predictor(make_bundle(tmp_path / "h", caption_source="human"))
    with pytest.raises(CaptionRefused, match="2 of 2 images have no caption"):
        plan_captions(human, items, None)
    given = {"0.png": "boats", "1.png": "roofs"}
    assert plan_captions(human, items, given).missing == 0
    # a caption store written by a VLM, given to a model trained on attribute captions
    ground = resolve_prompt("ground")
    store = tmp_path / "vlm.jsonl"
    store.write_text(
        "".join(
            json.dumps(
                make_record(
                    rel=k,
                    sha256="0" * 64,
                    caption=v,
                    backend="openai",
                    model="qwen",
                    prompt_id=ground.id,
                    prompt_hash=ground.hash,
                    params={},
                    is_vlm=True,
                    latency_s=0.1,
                )
            )
            + "\n"
            for k, v in given.items()
        )
    )
    attrs = make_predictor(bundle_dir)
    with pytest.raises(ConfigError, match="--allow-caption-mismatch"):
        plan_captions(attrs, items, given, store)
    plan = plan_captions(attrs, items, given, store, allow_mismatch=True)
    assert plan.given_mismatch
    with PredictionWriter(tmp_path / "p.jsonl", top_k=1) as w:
        predict_files(attrs, items, w, captions=given, top_k=1, given_mismatch=True)
    recs = read_predictions(tmp_path / "p.jsonl")
    assert all(r["caption_source"] == "given" and r["caption_mismatch"] for r in recs)
