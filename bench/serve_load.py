"""Load test of `skyfuse serve` on loopback: N concurrent clients, requests/s, p50/p99 latency, errors.

    .venv/bin/python bench/serve_load.py [--model-dir DIR] [--clients 1 2 4 8 16] [--duration 10]
                                         [--caption given|generated] [--size 256] [--json out.json]

The server runs as a separate process (`skyfuse serve`, default limits: one model call at a time,
64 waiting) so that the client's event loop does not share the server's GIL. Without --model-dir a
`dual` bundle over the bundled encoders (EfficientNet-Lite0 + MiniLM) is written with random fusion
weights: the speed of a forward pass does not depend on the weights' values. Each client posts one
JPEG after another for --duration seconds per level (bounded: at most 64 clients, 120 s per level).
Prints a markdown table and the largest load held with no errors and p99 under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

MAX_CLIENTS = 64
MAX_DURATION = 120.0


def make_bundle(out: Path) -> Path:
    """A randomly initialised `dual` bundle over the bundled default encoders."""
    import torch

    from skyfuse.encoders import create_image_encoder, create_text_encoder
    from skyfuse.models import FusionConfig, create_model
    from skyfuse.training.bundle import save_bundle

    ie, te = create_image_encoder("efficientnet-lite0"), create_text_encoder("minilm")
    classes = [f"class_{i:02d}" for i in range(30)]
    cfg = FusionConfig(model="dual", image_dim=ie.dim, text_dim=te.dim, num_classes=len(classes))
    torch.manual_seed(0)
    return save_bundle(
        out,
        create_model(cfg),
        cfg,
        class_names=classes,
        image_encoder="efficientnet-lite0",
        text_encoder="minilm",
    )


def make_jpegs(n: int, size: int) -> list[bytes]:
    from skyfuse.data.synthetic import SYNTHETIC_CLASSES, render_scene

    out = []
    for i in range(n):
        arr = render_scene(SYNTHETIC_CLASSES[i % len(SYNTHETIC_CLASSES)], i, size=size, seed=1)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


async def run_level(
    url: str, clients: int, duration: float, images: list[bytes], caption: str | None
) -> dict[str, Any]:
    """`clients` workers post images back to back until `duration` has passed."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:

        async def worker(w: int) -> None:
            i = w
            while time.perf_counter() < stop:
                data = {"caption": caption} if caption else {}
                files = {"image": ("scene.jpg", images[i % len(images)], "image/jpeg")}
                t0 = time.perf_counter()
                try:
                    r = await client.post("/predict", files=files, data=data)
                    ok = r.status_code == 200
                    key = str(r.status_code)
                except httpx.HTTPError as exc:
                    ok, key = False, type(exc).__name__
                dt = time.perf_counter() - t0
                if ok:
                    latencies.append(dt)
                else:
                    errors[key] = errors.get(key, 0) + 1
                i += clients

        t_start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = time.perf_counter() - t_start
    lat = np.asarray(latencies) if latencies else np.asarray([float("nan")])
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "seconds": round(wall, 2),
        "req_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 1),
        "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 1),
        "max_ms": round(float(np.max(lat)) * 1000, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per load level")
    ap.add_argument("--caption", choices=["given", "generated"], default="given")
    ap.add_argument("--size", type=int, default=256, help="side of the uploaded JPEGs")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    levels = sorted({max(1, min(MAX_CLIENTS, c)) for c in args.clients})
    duration = max(1.0, min(MAX_DURATION, args.duration))

    from skyfuse.serving.server import free_port, serve_subprocess, stop_subprocess, wait_healthy

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or make_bundle(Path(tmp) / "model")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = serve_subprocess(model_dir, port, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            try:
                wait_healthy(url, proc, timeout_s=300.0, interval_s=0.5)
            except RuntimeError as exc:
                raise SystemExit(str(exc)) from None
            images = make_jpegs(16, args.size)
            caption = (
                "Dark green tree crowns cover most of the image, crossed by a narrow grey road."
                if args.caption == "given"
                else None
            )
            asyncio.run(run_level(url, 1, 2.0, images, caption))  # warm-up
            rows = []
            for n in levels:
                row = asyncio.run(run_level(url, n, duration, images, caption))
                rows.append(row)
                print(
                    f"clients={n:3d} req/s={row['req_per_s']:7.2f} p50={row['p50_ms']:8.1f} ms"
                    f" p99={row['p99_ms']:8.1f} ms errors={row['errors']}",
                    file=sys.stderr,
                )
        finally:
            stop_subprocess(proc, timeout_s=20)

    held = [r for r in rows if r["errors"] == 0 and r["p99_ms"] < 1000.0]
    best = max(held, key=lambda r: r["clients"]) if held else None
    print(
        f"\nserve load: {args.size}px JPEG, caption {args.caption}, {duration:g} s per level,"
        f" {os.cpu_count()} CPUs\n"
    )
    print("| clients | requests | req/s | p50 ms | p99 ms | max ms | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['requests']} | {r['req_per_s']:.2f} | {r['p50_ms']:.0f} |"
            f" {r['p99_ms']:.0f} | {r['max_ms']:.0f} | {r['errors']} |"
        )
    if best:
        print(
            f"\nlargest load held with no errors and p99 < 1 s: {best['clients']} clients,"
            f" {best['req_per_s']:.2f} req/s (p99 {best['p99_ms']:.0f} ms)"
        )
    else:
        print("\nno load level held with no errors and p99 < 1 s")
    if args.json:
        args.json.write_text(json.dumps({"levels": rows, "held": best}, indent=1) + "\n")


if __name__ == "__main__":
    main()
