from __future__ import annotations

import time
from pathlib import Path

import pytest

from skyfuse.captioning import caption_folder, create_captioner
from skyfuse.captioning.openai_backend import backoff_delay, parse_retry_after
from skyfuse.captioning.store import read_records
from skyfuse.captioning.stub import StubVLMServer, always, first_attempt_faults
from skyfuse.errors import BadInputError
from tests.captioning.helpers import make_folder


def openai(url: str, **kw: object):  # type: ignore[no-untyped-def]
    opts = {"model": "stub-vlm", "base_url": url, "backoff": 0.01, "max_backoff": 0.05}
    opts.update(kw)
    return create_captioner("openai", **opts)


@pytest.fixture
def scenes(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "scenes", per_class=3)


def test_captions_with_bounded_concurrency(scenes: Path, tmp_path: Path) -> None:
    with StubVLMServer(latency=0.05) as srv:
        s = caption_folder(
            scenes, openai(srv.url), tmp_path / "c.jsonl", concurrency=3, progress=False
        )
    assert s.complete and s.captioned == 6
    assert 1 < srv.max_in_flight <= 3
    for r in read_records(tmp_path / "c.jsonl"):
        assert r["caption"] == f"stub caption {r['sha256'][:12]}"
        assert r["backend"] == "openai" and r["model"] == "stub-vlm" and r["prompt_id"] == "ground"


def test_transient_faults_are_retried(scenes: Path, tmp_path: Path) -> None:
    plan = first_attempt_faults(["500", "429", "malformed", "drop", "hang", "ok"])
    with StubVLMServer(latency=0.01, faults=plan, retry_after=0.05, hang_s=3) as srv:
        cap = openai(srv.url, read_timeout=0.4)
        s = caption_folder(scenes, cap, tmp_path / "c.jsonl", concurrency=6, progress=False)
    assert s.complete and s.captioned == 6, s.failures
    assert all(srv.counts[k] == 1 for k in ("500", "429", "malformed", "drop", "hang"))
    assert cap.retries == 5  # type: ignore[attr-defined]
    assert len(read_records(tmp_path / "c.jsonl")) == 6


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "scenes", per_class=1, classes=("Alpha",))
    with StubVLMServer(faults=first_attempt_faults(["429"]), retry_after=0.4) as srv:
        t0 = time.perf_counter()
        s = caption_folder(root, openai(srv.url), tmp_path / "c.jsonl", progress=False)
        assert time.perf_counter() - t0 >= 0.4
    assert s.complete


def test_give_up_is_recorded_and_retried_next_run(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    with StubVLMServer(faults=always("500")) as srv:
        s = caption_folder(scenes, openai(srv.url, max_retries=2), out, progress=False, limit=2)
    assert s.failed == 2 and not s.complete
    assert "gave up after 3 attempts" in s.failures[0][1] and "HTTP 500" in s.failures[0][1]
    with StubVLMServer() as srv:
        s = caption_folder(scenes, openai(srv.url), out, progress=False, limit=2)
    assert s.complete and s.captioned == 2
    assert [r["status"] for r in read_records(out)].count("ok") == 2


def test_image_too_large_is_not_retried(scenes: Path, tmp_path: Path) -> None:
    with StubVLMServer(faults=always("413")) as srv:
        s = caption_folder(scenes, openai(srv.url), tmp_path / "c.jsonl", progress=False, limit=1)
    assert s.failed == 1 and "--max-side" in s.failures[0][1]
    assert srv.counts["413"] == 1


def test_unknown_model_stops_the_run(scenes: Path, tmp_path: Path) -> None:
    with StubVLMServer(faults=always("404")) as srv, pytest.raises(BadInputError, match="--model"):
        caption_folder(scenes, openai(srv.url), tmp_path / "c.jsonl", progress=False, concurrency=2)
    assert srv.counts["404"] <= 3


def test_bad_key_message_never_shows_the_key(
    scenes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYFUSE_TEST_KEY", "sk-very-secret-123")
    out = tmp_path / "c.jsonl"
    with StubVLMServer(faults=always("401")) as srv, pytest.raises(BadInputError) as info:
        caption_folder(scenes, openai(srv.url, api_key_env="SKYFUSE_TEST_KEY"), out, progress=False)
    assert srv.last_headers["authorization"] == "Bearer sk-very-secret-123"
    assert "SKYFUSE_TEST_KEY" in str(info.value) and "sk-very-secret" not in str(info.value)
    assert "sk-very-secret" not in out.read_text()


def test_backoff_helpers() -> None:
    import random

    rng = random.Random(0)
    delays = [backoff_delay(a, 1.0, 8.0, rng) for a in range(6)]
    assert all(0.5 * min(8, 2**a) <= d <= min(8, 2**a) for a, d in enumerate(delays))
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


def test_images_are_sent_as_data_urls(tmp_path: Path) -> None:
    import base64
    import io

    import numpy as np
    import tifffile
    from PIL import Image

    from skyfuse.captioning.base import CaptionFailure, ImageJob
    from skyfuse.captioning.openai_backend import encode_image

    jpg = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 20, 30)).save(jpg, format="JPEG")
    job = ImageJob(tmp_path / "a.jpg", "A/a.jpg", "x", jpg.getvalue())
    assert (
        encode_image(job, None)
        == "data:image/jpeg;base64," + base64.b64encode(jpg.getvalue()).decode()
    )
    small = encode_image(job, 100)  # re-encoded, longer side 100
    img = Image.open(io.BytesIO(base64.b64decode(small.split(",", 1)[1])))
    assert max(img.size) == 100
    tif = io.BytesIO()
    tifffile.imwrite(tif, np.random.default_rng(0).integers(0, 4000, (32, 32, 4), dtype=np.uint16))
    url = encode_image(ImageJob(tmp_path / "b.tif", "A/b.tif", "y", tif.getvalue()), None)
    assert url.startswith("data:image/jpeg;base64,")  # 16-bit multiband -> 8-bit RGB JPEG
    with pytest.raises(CaptionFailure):
        encode_image(ImageJob(tmp_path / "c.tif", "A/c.tif", "z", b"junk"), None)


def test_prompt_is_part_of_the_resume_key(scenes: Path, tmp_path: Path) -> None:
    from skyfuse.captioning import resolve_prompt

    mine = tmp_path / "roofs.txt"
    mine.write_text("Count the roofs.\n")
    assert resolve_prompt(mine).id == "roofs" and resolve_prompt(mine).text == "Count the roofs."
    out = tmp_path / "c.jsonl"
    with StubVLMServer() as srv:
        for prompt, new in (("ground", 6), ("paper", 6), (mine, 6), ("ground", 0)):
            s = caption_folder(scenes, openai(srv.url), out, prompt=prompt, progress=False)
            assert s.captioned == new and s.complete
        sent = srv.counts["ok"]
    recs = read_records(out)
    assert sent == 18 and len(recs) == 18
    assert {r["prompt_id"] for r in recs} == {"ground", "paper", "roofs"}


def test_no_server_stops_the_run(scenes: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cap = openai(f"http://127.0.0.1:{port}/v1", max_retries=1)
    with pytest.raises(BadInputError, match="start the server or check --base-url"):
        caption_folder(scenes, cap, tmp_path / "c.jsonl", progress=False, concurrency=2)
