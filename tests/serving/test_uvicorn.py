"""The app under a real uvicorn on a free loopback port: keep-alive, chunked uploads, bad clients."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from skyfuse.serving import ServeLimits, create_app
from skyfuse.serving.server import BackgroundServer
from tests.inference.helpers import make_predictor, png_bytes, random_image


@pytest.fixture(scope="module")
def server(bundle_dir: Path) -> Iterator[BackgroundServer]:
    app = create_app(make_predictor(bundle_dir), ServeLimits(max_upload_bytes=200_000))
    with BackgroundServer(app) as srv:
        yield srv


def test_real_server_round_trip(server: BackgroundServer) -> None:
    assert server.host == "127.0.0.1"
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.get("/health").json()["status"] == "ok"
        img = png_bytes(random_image(64))
        for _ in range(2):  # keep-alive connection reused
            r = c.post(
                "/predict", files={"image": ("x.png", img, "image/png")}, data={"caption": "roads"}
            )
            assert r.status_code == 200 and r.json()["caption"] == "roads"


def test_chunked_upload_over_the_cap_is_refused(server: BackgroundServer) -> None:
    boundary = "skyfuseboundary"

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        for _ in range(40):  # 40 x 10 kB = 400 kB > 200 kB, no Content-Length header
            yield b"\x89PNG" + b"0" * 9996
        yield f"\r\n--{boundary}--\r\n".encode()

    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post(
            "/predict",
            content=body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert r.status_code == 413
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def test_garbage_client_does_not_kill_server(server: BackgroundServer) -> None:
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=zz\r\n"
            b"Content-Length: 100\r\n\r\n--zz\r\nbroken"
        )  # then hang up mid-body
    r = httpx.post(
        server.url + "/predict",
        content=b"not multipart",
        headers={"content-type": "text/plain"},
        timeout=30,
    )
    assert r.status_code == 422
    assert httpx.get(server.url + "/classes", timeout=10).status_code == 200
