from __future__ import annotations

from pathlib import Path

import pytest

from skyfuse.captioning import caption_folder, create_captioner
from skyfuse.captioning.store import read_records
from skyfuse.errors import BadInputError, CheckpointError
from tests.captioning.helpers import make_folder
from tests.captioning.tiny_vlm import build_tiny_llava


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("vlm") / "tiny-llava")


def test_tiny_llava_captions_offline(tiny_vlm: Path, tmp_path: Path) -> None:
    root = make_folder(tmp_path / "scenes", per_class=2, size=40)
    (root / "Beta" / "broken.png").write_bytes(b"nope")
    cap = create_captioner("transformers", model=str(tiny_vlm), batch_size=3, max_tokens=6)
    out = tmp_path / "c.jsonl"
    s = caption_folder(root, cap, out, progress=False)
    assert s.captioned == 4 and s.failed == 1
    recs = [r for r in read_records(out) if r["status"] == "ok"]
    assert all(r["caption"].startswith("w") for r in recs)  # words of the tiny vocabulary
    assert {r["backend"] for r in recs} == {"transformers"}
    assert recs[0]["model"].startswith("tiny-llava@") and recs[0]["params"]["max_new_tokens"] == 6
    # batched and one-by-one generation agree (left padding is handled)
    single = create_captioner("transformers", model=str(tiny_vlm), batch_size=1, max_tokens=6)
    s2 = caption_folder(root, single, tmp_path / "c1.jsonl", progress=False)
    assert s2.captioned == 4
    one = {r["path"]: r["caption"] for r in read_records(tmp_path / "c1.jsonl") if r["caption"]}
    assert one == {r["path"]: r["caption"] for r in recs}


def test_missing_weights_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="model folder not found"):
        create_captioner("transformers", model=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        create_captioner("transformers", model=str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="hf download"):
        create_captioner("transformers", model="nobody/no-such-vlm")


def test_cli_picks_transformers_for_a_local_folder(tiny_vlm: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from skyfuse.cli import app

    root = make_folder(tmp_path / "scenes", per_class=1, size=40)
    out = tmp_path / "c.jsonl"
    r = CliRunner().invoke(
        app,
        [
            "caption",
            str(root),
            "--model",
            str(tiny_vlm),
            "--out",
            str(out),
            "--max-tokens",
            "4",
            "--batch-size",
            "2",
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    assert {x["backend"] for x in read_records(out)} == {"transformers"}
