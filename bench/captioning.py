"""Captioning benchmarks: throughput against a stub VLM server, the attribute captioner, the store.

    .venv/bin/python bench/captioning.py [--latency 0.2] [--concurrency 1 8 32 64] [--rounds 6]

1. A stub OpenAI-compatible server (separate process, fixed latency) answers every request; the
   `openai` backend captions a folder of 600x600 JPEGs through `caption_folder` (fresh store per
   run, fsync per record). Throughput is reported as a share of the ideal concurrency / latency.
2. The attribute captioner's images/s on 600x600 images (decode included and not).
3. The store: time per appended record with and without fsync, and resume time of a large store.
Prints markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(root: Path, n: int, size: int = 600, distinct: int = 32) -> Path:
    """Smooth random scenes saved as JPEG (~50-100 kB files) in two class folders. Only `distinct`
    are rendered; the rest are copies made byte-distinct by a few bytes after the JPEG end marker
    (decoders ignore them), so every file is new work for the store and the server."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    bases: list[bytes] = []
    for _ in range(min(n, distinct)):
        f = rng.uniform(2, 12, 3)
        base = np.stack([np.sin(xx * f[c] * np.pi + f[(c + 1) % 3] * yy) for c in range(3)], -1)
        arr = (127 + 100 * base + rng.normal(0, 12, (size, size, 3))).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
        bases.append(buf.getvalue())
    for i in range(n):
        cls = root / ("A" if i % 2 else "B")
        cls.mkdir(parents=True, exist_ok=True)
        tail = b"" if i < len(bases) else i.to_bytes(4, "big")
        (cls / f"img_{i:04d}.jpg").write_bytes(bases[i % len(bases)] + tail)
    return root


def start_stub(latency: float, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "skyfuse.captioning.stub",
            "--port",
            str(port),
            "--latency",
            str(latency),
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "stub VLM server on ..." once it listens
    return proc


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of another process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_throughput(images: Path, latency: float, concs: list[int], rounds: int) -> list[str]:
    from skyfuse.captioning import caption_folder, create_captioner

    port = 18000 + os.getpid() % 1000
    proc = start_stub(latency, port)
    rows = [
        "| concurrency | images | seconds | images/s | ideal images/s | share of ideal |"
        " client CPU ms/image | stub server CPU ms/image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for c in concs:
                n = max(30, c * rounds)
                cap = create_captioner(
                    "openai", model="stub", base_url=f"http://127.0.0.1:{port}/v1"
                )
                out = Path(tmp) / f"c{c}.jsonl"
                s0, c0, t0 = _proc_cpu(proc.pid), time.process_time(), time.perf_counter()
                s = caption_folder(images, cap, out, concurrency=c, limit=n, progress=False)
                dt = time.perf_counter() - t0
                client, server = time.process_time() - c0, _proc_cpu(proc.pid) - s0
                assert s.complete and s.captioned == n, s.failures[:3]
                rate, ideal = n / dt, c / latency
                rows.append(
                    f"| {c} | {n} | {dt:.2f} | {rate:.1f} | {ideal:.1f} | {rate / ideal:.0%} |"
                    f" {client / n * 1e3:.2f} | {server / n * 1e3:.2f} |"
                )
                print(rows[-1], flush=True)
    finally:
        proc.terminate()
        proc.wait()
    return rows


def bench_attributes(images: Path, n: int) -> list[str]:
    from skyfuse.captioning.attributes import caption_pil
    from skyfuse.data.images import load_image

    paths = sorted(images.glob("*/*.jpg"), key=lambda p: p.name)[:n]  # the distinct renders first
    decoded = [load_image(p) for p in paths]
    caption_pil(decoded[0])  # warm-up
    t0 = time.perf_counter()
    for img in decoded:
        caption_pil(img)
    only = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in paths:
        caption_pil(load_image(p))
    full = time.perf_counter() - t0
    return [
        "| attribute captioner, 600x600 | images | seconds | images/s |",
        "|---|---|---|---|",
        f"| from decoded images | {n} | {only:.2f} | {n / only:.1f} |",
        f"| from JPEG files (decode + caption) | {n} | {full:.2f} | {n / full:.1f} |",
    ]


def bench_store(n: int, big: int) -> list[str]:
    from skyfuse.captioning.store import CaptionStore, make_record

    def rec(i: int) -> dict[str, object]:
        return make_record(
            rel=f"Class/img_{i:06d}.jpg",
            sha256=f"{i:064x}",
            caption="x" * 300,
            backend="bench",
            model="m",
            prompt_id="ground",
            prompt_hash="h",
            params={"max_tokens": 256},
            is_vlm=True,
            latency_s=0.2,
        )

    rows = ["| store operation | records | total seconds | per record |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for fsync in (True, False):
            path = Path(tmp) / f"s{fsync}.jsonl"
            with CaptionStore(path, fsync=fsync) as st:
                t0 = time.perf_counter()
                for i in range(n):
                    st.append(rec(i))
                dt = time.perf_counter() - t0
            rows.append(
                f"| append {'with' if fsync else 'without'} fsync | {n} | {dt:.3f} |"
                f" {dt / n * 1e3:.3f} ms |"
            )
        path = Path(tmp) / "big.jsonl"
        buf = io.StringIO()
        import json

        for i in range(big):
            buf.write(json.dumps(rec(i)) + "\n")
        path.write_text(buf.getvalue())
        t0 = time.perf_counter()
        with CaptionStore(path) as st:
            assert st.state.records == big
        dt = time.perf_counter() - t0
        rows.append(f"| open + resume index | {big} | {dt:.3f} | {dt / big * 1e6:.1f} µs |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--rounds", type=int, default=10, help="requests per concurrency slot")
    ap.add_argument("--attr-images", type=int, default=32)
    ap.add_argument("--store-records", type=int, default=500)
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    n_img = max(max(args.concurrency) * args.rounds, args.attr_images)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        images = make_images(Path(tmp) / "scenes", n_img)
        print(f"made {n_img} 600x600 JPEGs in {time.perf_counter() - t0:.1f} s", flush=True)
        tables = []
        if not args.skip_throughput:
            tables.append(bench_throughput(images, args.latency, args.concurrency, args.rounds))
        tables.append(bench_attributes(images, args.attr_images))
        tables.append(bench_store(args.store_records, 20000))
    print(f"\nload average: {os.getloadavg()[0]:.1f}; cpus: {os.cpu_count()}\n")
    for t in tables:
        print("\n".join(t) + "\n")


if __name__ == "__main__":
    main()
