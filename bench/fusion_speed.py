"""Training-step speed of skyfuse's `dual` fusion against PaperFusion at the paper's configuration.

One step = forward + backward (+ zeroing gradients) on a batch of random token features shaped like the
paper's encoders: 197 image tokens x 768 (ViT-B/16) and 77 text tokens x 512 (CLIP text). Ours gets
key padding masks (text lengths drawn at random, as real captions pad to 77), PaperFusion none. The
models are timed in interleaved rounds so a noisy shared machine slows all of them alike. Both wall time
and this process's CPU time are measured; on a machine shared with other jobs the CPU time (with one
thread) is the stable figure, so the ratio to the published model's compute is taken on it.

    .venv/bin/python bench/fusion_speed.py --batch 16 --rounds 5 --steps 3 --threads 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from skyfuse.models import FusionConfig, create_model
from skyfuse.models.reference import PaperFusion

Step = Callable[[], None]


def make_inputs(batch: int, n_img: int, n_txt: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(n_txt // 4, n_txt + 1, (batch,), generator=g)
    return {
        "image": torch.randn(batch, n_img, 768, generator=g),
        "text": torch.randn(batch, n_txt, 512, generator=g),
        "image_mask": torch.ones(batch, n_img, dtype=torch.bool),
        "text_mask": torch.arange(n_txt)[None, :] < lengths[:, None],
        "labels": torch.randint(0, 30, (batch,), generator=g),
    }


def ours_step(cfg: FusionConfig, x: dict[str, torch.Tensor]) -> tuple[nn.Module, Step]:
    model = create_model(cfg).train()

    def step() -> None:
        out = model(x["image"], x["image_mask"], x["text"], x["text_mask"])
        nn.functional.cross_entropy(out.logits, x["labels"]).backward()
        model.zero_grad(set_to_none=True)

    return model, step


def paper_step(model: PaperFusion, x: dict[str, torch.Tensor]) -> tuple[nn.Module, Step]:
    model.train()

    def step() -> None:
        logits = model(x["image"], x["text"])
        nn.functional.cross_entropy(logits, x["labels"]).backward()
        model.zero_grad(set_to_none=True)

    return model, step


def time_steps(step: Step, steps: int) -> tuple[float, float]:
    """(wall, process CPU) seconds per step, averaged over `steps` consecutive steps."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--image-tokens", type=int, default=197)
    ap.add_argument("--text-tokens", type=int, default=77)
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument(
        "--rounds", type=int, default=5, help="interleaved timing rounds (median reported)"
    )
    ap.add_argument("--steps", type=int, default=3, help="steps per model per round")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    x = make_inputs(args.batch, args.image_tokens, args.text_tokens)
    common = dict(
        image_dim=768, text_dim=512, num_classes=30, width=512, heads=4, levels=args.levels
    )
    common.update(mlp_ratio=2.0, dropout=0.1)
    candidates: dict[str, tuple[nn.Module, Step]] = {
        "PaperFusion (published compute, batch-mixing bug)": paper_step(
            PaperFusion(30, levels=args.levels, seq_first_bug=True), x
        ),
        "PaperFusion, per-sample self-attention": paper_step(
            PaperFusion(30, levels=args.levels, seq_first_bug=False), x
        ),
        "skyfuse dual, shared weights, masks": ours_step(
            FusionConfig(model="dual", shared_weights=True, shortcut=True, **common),
            x,  # type: ignore[arg-type]
        ),
        "skyfuse dual, per-level weights, masks": ours_step(
            FusionConfig(model="dual", shared_weights=False, shortcut=True, **common),
            x,  # type: ignore[arg-type]
        ),
        "skyfuse dual, shared weights, no padding": ours_step(
            FusionConfig(model="dual", shared_weights=True, shortcut=True, **common),  # type: ignore[arg-type]
            {**x, "text_mask": torch.ones_like(x["text_mask"])},
        ),
    }
    for _, step in candidates.values():  # warm-up: allocator, kernel selection
        step()
        step()
    wall: dict[str, list[float]] = {name: [] for name in candidates}
    cpu: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(args.rounds):
        for name, (_, step) in candidates.items():
            w, c = time_steps(step, args.steps)
            wall[name].append(w)
            cpu[name].append(c)

    baseline = statistics.median(cpu[next(iter(candidates))])
    print(
        f"# fusion step speed: batch {args.batch}, {args.image_tokens} image tokens x 768, "
        f"{args.text_tokens} text tokens x 512, levels {args.levels}, width 512, 4 heads, fp32, "
        f"{args.threads} threads, torch {torch.__version__}, {platform.machine()}"
    )
    print(f"# median of {args.rounds} interleaved rounds x {args.steps} forward+backward steps")
    print("# speed ratio = published CPU time per step / this row's CPU time per step")
    print()
    print(
        "| model | params | CPU ms/step | steps/s (CPU time) | wall ms/step | speed vs published |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, (model, _) in candidates.items():
        c = statistics.median(cpu[name])
        w = statistics.median(wall[name])
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(
            f"| {name} | {params:.2f} M | {c * 1e3:.0f} | {1 / c:.2f} | {w * 1e3:.0f} | {baseline / c:.2f}x |"
        )


if __name__ == "__main__":
    main()
