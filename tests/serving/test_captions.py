"""The server's captions: the training kind or a clear refusal, failures as 502/503, warm start."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from skyfuse.captioning.attributes import VERSION
from skyfuse.captioning.base import Captioner, FatalCaptionError, ImageJob
from skyfuse.captioning.prompts import Prompt
from skyfuse.inference import CaptionRefused
from skyfuse.inference.predictor import LabelProb, Prediction
from skyfuse.serving import ServeLimits, check_caption_policy, create_app
from skyfuse.serving.server import free_port
from tests.inference.helpers import make_bundle, make_predictor, png_bytes, random_image
from tests.inference.test_caption_policy import FailingAttributes


def _post(c: TestClient, caption: str | None = None, seed: int = 0) -> Any:
    data = {"caption": caption} if caption else {}
    files = {"image": ("x.png", png_bytes(random_image(48, seed=seed)), "image/png")}
    return c.post("/predict", files=files, data=data)


@pytest.fixture(scope="module")
def human_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("human") / "model", caption_source="human")


def test_human_caption_model_is_refused_at_start_up(human_dir: Path) -> None:
    p = make_predictor(human_dir)
    with pytest.raises(CaptionRefused, match="--require-caption"):
        check_caption_policy(p)
    # the command line: one line, non-zero exit, before the server starts
    from skyfuse.cli import app

    r = CliRunner().invoke(app, ["serve", str(human_dir), "--port", str(free_port())])
    assert r.exit_code != 0 and "no captioner can reproduce" in r.output
    assert "--require-caption" in r.output and "Traceback" not in r.output


def test_require_caption_answers_only_requests_with_a_caption(human_dir: Path) -> None:
    p = make_predictor(human_dir)
    assert "422" in check_caption_policy(p, require_caption=True)
    with TestClient(create_app(p)) as c:
        r = _post(c)
        assert r.status_code == 422 and "needs a caption" in r.json()["detail"]
        r = _post(c, "boats moored in a harbour")
        body = r.json()
        assert r.status_code == 200 and body["caption_source"] == "given"
        assert body["caption_mismatch"] is False
        assert c.get("/health").json()["captions_when_absent"] == "required"


def test_caption_dropout_model_answers_image_only_and_says_so(tmp_path: Path) -> None:
    d = make_bundle(tmp_path / "m", caption_source="human", fusion={"caption_dropout": 0.3})
    p = make_predictor(d)
    assert "image alone" in check_caption_policy(p)
    with TestClient(create_app(p)) as c:
        body = _post(c).json()
        assert body["caption_source"] == "none" and body["caption"] is None
        assert body["caption_mismatch"] is False and len(body["top_k"]) == 4


def test_forced_captioner_is_flagged_in_every_answer(human_dir: Path) -> None:
    p = make_predictor(human_dir, captioner="attributes", allow_caption_mismatch=True)
    with TestClient(create_app(p)) as c:
        body = _post(c).json()
        assert body["caption_source"] == f"attributes:{VERSION}" and body["caption_mismatch"]


class BrokenCaptioner(Captioner):
    """An attribute-kind captioner that cannot run at all (e.g. its weights are missing)."""

    backend = "attributes"
    uses_prompt = False
    batch_size = 4

    def __init__(self) -> None:
        self.model = VERSION

    def caption_batch(self, jobs: list[ImageJob], prompt: Prompt) -> list[Any]:
        raise FatalCaptionError("model weights not found")


def test_failed_captions_are_502_and_503_never_scored(bundle_dir: Path) -> None:
    p = make_predictor(bundle_dir, captioner=FailingAttributes())
    with TestClient(create_app(p, ServeLimits(max_batch=1))) as c:
        # FailingAttributes fails every second image of a batch; batches of one always succeed,
        # so ask the predictor for two at once through the same route code
        from skyfuse.serving.app import _Request, _run_batch

        img = png_bytes(random_image(40))
        reqs = [_Request(img, f"{i}.png", None, 3, False) for i in range(2)]
        ok, failed = _run_batch(p, ServeLimits(), reqs)
        assert ok.caption == "grey roofs and roads" and ok.caption_source == f"attributes:{VERSION}"
        assert failed.status == 502 and "timed out" in failed.message
        assert _post(c).status_code == 200
    broken = make_predictor(bundle_dir, captioner=BrokenCaptioner())
    with TestClient(create_app(broken)) as c:
        r = _post(c)
        assert r.status_code == 503 and "weights not found" in r.json()["detail"]
        assert _post(c, "a given caption").status_code == 200  # given captions still work


class WarmingPredictor:
    """Records when warm-up ran and whether a request came before it finished."""

    def __init__(self) -> None:
        self.class_names = ["a", "b"]
        self.warm = False
        self.early_requests = 0

    def warm_up(self) -> float:
        time.sleep(0.3)
        self.warm = True
        return 0.3

    def predict(self, images: Any, captions: Any = None, top_k: int = 5, **_: Any) -> list[Any]:
        self.early_requests += not self.warm
        return [Prediction([LabelProb("a", 1.0)], "c") for _ in images]


def test_model_is_warmed_before_health_reports_ready(bundle_dir: Path) -> None:
    stub = WarmingPredictor()
    with TestClient(create_app(stub)) as c:
        health = c.get("/health").json()
        assert stub.warm and health["ready"] is True and health["warm_up_s"] == 0.3
        assert _post(c, "x").status_code == 200 and stub.early_requests == 0
    real = make_predictor(bundle_dir)
    with TestClient(create_app(real)) as c:
        assert real._captions._fn is not None  # the captioner was built at start-up
        assert c.get("/health").json()["warm_up_s"] is not None


def test_captioner_that_cannot_load_is_reported_at_start_and_503(bundle_dir: Path) -> None:
    # the files backend cannot be built without a source: a stand-in for a VLM whose weights fail
    p = make_predictor(bundle_dir, captioner="files", allow_caption_mismatch=True)
    with TestClient(create_app(p)) as c:
        health = c.get("/health").json()
        assert health["ready"] and "cannot be built" in health["warm_up_error"]
        r = _post(c)
        assert r.status_code == 503 and "cannot be built" in r.json()["detail"]
        assert _post(c, "a given caption").status_code == 200
