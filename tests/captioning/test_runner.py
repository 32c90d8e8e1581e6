from __future__ import annotations

from pathlib import Path

import pytest

from skyfuse.captioning import caption_folder, create_captioner, load_captions, parse_shard
from skyfuse.captioning.store import read_records
from skyfuse.errors import ConfigError
from tests.captioning.helpers import make_folder


def test_attributes_run_then_resume(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "scenes")
    out = tmp_path / "caps.jsonl"
    cap = create_captioner("attributes")
    s1 = caption_folder(root, cap, out, limit=4, progress=False)
    assert (s1.total, s1.captioned, s1.skipped) == (4, 4, 0) and s1.complete
    s2 = caption_folder(root, cap, out, progress=False)
    assert (s2.total, s2.captioned, s2.skipped) == (6, 2, 4) and s2.complete
    recs = read_records(out)
    assert len(recs) == 6 and len({r["path"] for r in recs}) == 6
    r = recs[0]
    for k in ("path", "sha256", "caption", "backend", "model", "prompt_id"):
        assert k in r
    assert r["backend"] == "attributes" and r["is_vlm"] is False
    assert load_captions(out) == {x["path"]: x["caption"] for x in recs}


def test_bad_image_is_recorded_and_retried(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "scenes", per_class=1)
    (root / "Alpha" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "caps.jsonl"
    s = caption_folder(root, create_captioner("attributes"), out, progress=False)
    assert s.failed == 1 and not s.complete
    assert s.failures[0][0] == "Alpha/broken.png"
    (root / "Alpha" / "broken.png").unlink()
    s = caption_folder(root, create_captioner("attributes"), out, progress=False)
    assert s.complete and s.skipped == 2


def test_shards_partition_the_work(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "scenes", per_class=5)
    seen: list[str] = []
    for i in range(3):
        out = tmp_path / f"s{i}.jsonl"
        caption_folder(root, create_captioner("attributes"), out, shard=(i, 3), progress=False)
        seen += [r["path"] for r in read_records(out)]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 10
    assert parse_shard("1/3") == (1, 3)
    with pytest.raises(ConfigError):
        parse_shard("3/3")


def test_identical_images_get_one_record_each(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "scenes", per_class=1)
    out = tmp_path / "caps.jsonl"
    caption_folder(root, create_captioner("attributes"), out, progress=False)
    (root / "Beta" / "copy.png").write_bytes((root / "Alpha" / "alpha_0.png").read_bytes())
    s = caption_folder(root, create_captioner("attributes"), out, progress=False)
    assert s.complete and s.captioned == 0 and s.skipped == 3
    caps = load_captions(out)
    assert caps["Beta/copy.png"] == caps["Alpha/alpha_0.png"]
    recs = read_records(out)
    assert len(recs) == 3 and recs[-1]["copied_from"] == "Alpha/alpha_0.png"


def test_backend_bugs_become_recorded_failures(tmp_path: Path) -> None:
    from skyfuse.captioning import Captioner, ImageJob, Prompt

    class Flaky(Captioner):
        backend = "flaky"
        model = "flaky-1"

        async def acaption(self, job: ImageJob, prompt: Prompt) -> str:
            if job.rel.startswith("Beta"):
                raise ValueError("boom")
            return "fine"

    root = make_folder(tmp_path / "scenes", per_class=2)
    s = caption_folder(root, Flaky(), tmp_path / "c.jsonl", progress=False)
    assert s.captioned == 2 and s.failed == 2 and not s.complete
    assert s.failures[0][1] == "unexpected ValueError: boom"
