from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from skyfuse.captioning.attributes import VERSION
from skyfuse.inference.predictor import LabelProb, Prediction
from skyfuse.serving import ServeLimits, create_app
from tests.inference.helpers import CLASSES, make_predictor, png_bytes, random_image


@pytest.fixture(scope="module")
def client(bundle_dir: Path):  # type: ignore[no-untyped-def]
    limits = ServeLimits(max_upload_bytes=300_000, max_pixels=600 * 600, timeout_s=60)
    app = create_app(make_predictor(bundle_dir), limits, model_name="tiny")
    with TestClient(app) as c:
        yield c


def test_health_classes_docs_page(client: TestClient) -> None:
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["classes"] == len(CLASSES)
    assert client.get("/classes").json() == {"classes": CLASSES}
    spec = client.get("/openapi.json").json()
    assert "/predict" in spec["paths"] and "/health" in spec["paths"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and "predict" in page.text


def test_predict_with_and_without_caption(client: TestClient) -> None:
    data = png_bytes(random_image(80, seed=1))
    r = client.post(
        "/predict", files={"image": ("x.png", data, "image/png")}, data={"caption": "blue water"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["caption"] == "blue water" and body["caption_source"] == "given"
    assert body["caption_mismatch"] is False
    assert len(body["top_k"]) == 4 and {t["label"] for t in body["top_k"]} == set(CLASSES)
    assert body["latency_ms"] > 0
    r = client.post(
        "/predict",
        files={"image": ("x.jpg", png_bytes(random_image(80, seed=2), "JPEG"), "image/jpeg")},
        data={"top_k": "2", "explain": "true"},
    )
    body = r.json()
    # no caption: made by the source the model was trained on (the attribute captioner here)
    assert r.status_code == 200 and body["caption_source"] == f"attributes:{VERSION}"
    assert body["caption"] and body["caption_mismatch"] is False
    assert len(body["top_k"]) == 2
    assert body["attention_overlay"].startswith("data:image/png;base64,")
    assert len(body["attention_words"]) > 3


def test_bad_requests_are_refused_and_server_survives(client: TestClient) -> None:
    r = client.post("/predict", files={"image": ("a.png", b"hello, not an image", "image/png")})
    assert r.status_code == 415 and "not an accepted image format" in r.json()["detail"]
    gif = png_bytes(random_image(40), "GIF")  # decodable, but not a documented format
    r = client.post("/predict", files={"image": ("a.gif", gif, "image/gif")})
    assert r.status_code == 415 and "JPEG, PNG, TIFF, WebP or BMP" in r.json()["detail"]
    truncated = png_bytes(random_image(200, seed=3))[:300]
    r = client.post("/predict", files={"image": ("t.png", truncated, "image/png")})
    assert r.status_code == 422 and "t.png" in r.json()["detail"]
    r = client.post("/predict", files={"image": ("e.png", b"", "image/png")})
    assert r.status_code == 415
    big = Image.new("RGB", (2000, 2000), (10, 120, 30))  # 4 Mpx, compresses to a few kB
    bomb = png_bytes(big)
    assert len(bomb) < 300_000
    r = client.post("/predict", files={"image": ("bomb.png", bomb, "image/png")})
    assert r.status_code == 413 and "pixels" in r.json()["detail"]
    r = client.post(
        "/predict", files={"image": ("big.bin", b"\x89PNG" + b"0" * 400_000, "image/png")}
    )
    assert r.status_code == 413 and "MiB" in r.json()["detail"]
    r = client.post("/predict", data={"caption": "no image"})
    assert r.status_code == 422
    r = client.post(
        "/predict",
        files={"image": ("x.png", png_bytes(random_image(40)), "image/png")},
        data={"top_k": "0"},
    )
    assert r.status_code == 422
    assert client.get("/health").json()["status"] == "ok"
    ok = client.post(
        "/predict", files={"image": ("x.png", png_bytes(random_image(40)), "image/png")}
    )
    assert ok.status_code == 200


class SlowPredictor:
    """Stands in for a model that takes `delay` seconds, to test the gate, not the model."""

    def __init__(self, delay: float) -> None:
        self.class_names = ["a", "b"]
        self.delay = delay
        self.active = 0
        self.peak = 0
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def predict(
        self,
        images: list[Image.Image],
        captions: Any = None,
        top_k: int = 5,
        *,
        explain: bool = False,
    ) -> list[Prediction]:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.calls.append(len(images))
        time.sleep(self.delay)
        with self.lock:
            self.active -= 1
        caps = captions or [None] * len(images)
        return [
            Prediction(
                [LabelProb("a", 0.6), LabelProb("b", 0.4)][:top_k],
                c or "made",
                caption_source="given" if c else "stub",
            )
            for c in caps
        ]


def test_timeout_and_bounded_concurrency() -> None:
    slow = SlowPredictor(0.6)
    app = create_app(slow, ServeLimits(timeout_s=0.2, max_concurrency=1))
    img = png_bytes(random_image(32))
    with TestClient(app) as c:
        r = c.post("/predict", files={"image": ("x.png", img, "image/png")})
        assert r.status_code == 504 and "within" in r.json()["detail"]
        time.sleep(0.7)
        assert c.get("/health").json()["running"] == 0

    slow = SlowPredictor(0.15)
    app = create_app(slow, ServeLimits(timeout_s=10, max_concurrency=2, max_batch=1))
    results: list[int] = []
    with TestClient(app) as c:

        def call() -> None:
            results.append(
                c.post("/predict", files={"image": ("x.png", img, "image/png")}).status_code
            )

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == [200] * 6
    assert slow.peak == 2 and slow.calls == [1] * 6


def test_waiting_requests_are_batched_and_bad_ones_isolated() -> None:
    slow = SlowPredictor(0.3)
    app = create_app(slow, ServeLimits(timeout_s=20, max_concurrency=1, max_batch=8))
    img = png_bytes(random_image(32))
    codes: dict[int, tuple[int, Any]] = {}
    with TestClient(app) as c:

        def call(i: int) -> None:
            data = img if i != 3 else b"\x89PNG\r\n\x1a\n broken"
            files = {"image": (f"{i}.png", data, "image/png")}
            form = {"caption": f"cap {i}"} if i % 2 else {}
            r = c.post("/predict", files=files, data=form)
            codes[i] = (r.status_code, r.json())

        threads = [threading.Thread(target=call, args=(i,)) for i in range(7)]
        for t in threads:
            t.start()
            time.sleep(0.02)
        for t in threads:
            t.join()
        health = c.get("/health").json()
    assert codes[3][0] == 422  # the broken image fails alone
    assert all(codes[i][0] == 200 for i in codes if i != 3)
    assert codes[1][1]["caption"] == "cap 1" and codes[2][1]["caption"] == "made"
    assert codes[2][1]["caption_source"] == "stub"
    assert slow.peak == 1 and len(slow.calls) < 6 and max(slow.calls) > 1  # merged calls
    assert health["requests_handled"] == 7 and health["batches"] >= len(slow.calls)


def test_queue_limit_gives_503() -> None:
    slow = SlowPredictor(0.5)
    app = create_app(slow, ServeLimits(timeout_s=10, max_concurrency=1, max_queue=1))
    img = png_bytes(random_image(32))
    codes: list[int] = []
    with TestClient(app) as c:

        def call() -> None:
            codes.append(
                c.post("/predict", files={"image": ("x.png", img, "image/png")}).status_code
            )

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join()
    assert sorted(codes) == [200, 200, 503, 503]
