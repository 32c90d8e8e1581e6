"""Frozen-feature epoch vs end-to-end epoch on 1,000 images (target: frozen >= 30x faster), CPU.

Frozen: one Lightning epoch of `dual` over 1,000 in-memory token features of the bundled encoders'
shapes (49 image tokens x 1280, 64 caption tokens x 384), exactly as `skyfuse train` runs it.
End to end: `EndToEndClassifier` with trainable EfficientNet-Lite0 + MiniLM and the same fusion model,
forward + backward + AdamW step on 224 px pixels and tokenised captions. The end-to-end epoch is
timed over ``--e2e-batches`` batches and scaled to 1,000 images (stated in the output); image decoding
is left out of it, which favours end to end.

Example: python bench/epoch_speed.py --images 1000 --e2e-batches 3
"""

from __future__ import annotations

import argparse
import platform
import time

import torch


def frozen_epoch(n: int, batch: int, width: int, classes: int) -> float:
    from skyfuse.models import FusionConfig, create_model
    from skyfuse.training.config import TrainConfig
    from skyfuse.training.data import TensorSet
    from skyfuse.training.fit import fit_phase

    g = torch.Generator().manual_seed(0)
    data = TensorSet(
        torch.randn(n, 49, 1280, generator=g).half(),
        torch.ones(n, 49, dtype=torch.bool),
        torch.randn(n, 64, 384, generator=g).half(),
        torch.arange(64)[None, :] < torch.randint(20, 65, (n, 1), generator=g),
        torch.randint(0, classes, (n,), generator=g),
        [f"c/{i}" for i in range(n)],
    )
    cfg = FusionConfig(model="dual", image_dim=1280, text_dim=384, num_classes=classes, width=width)
    res = fit_phase(create_model(cfg), data, None, TrainConfig(epochs=1, batch_size=batch))
    return float(res.history[0]["seconds"])


def e2e_epoch(n: int, batch: int, width: int, classes: int, batches: int) -> tuple[float, float]:
    from skyfuse.encoders import create_image_encoder, create_text_encoder
    from skyfuse.models import FusionConfig, create_model
    from skyfuse.models.e2e import EndToEndClassifier

    img = create_image_encoder("efficientnet-lite0", trainable=True)
    txt = create_text_encoder("minilm", trainable=True)
    cfg = FusionConfig(
        model="dual", image_dim=img.dim, text_dim=txt.dim, num_classes=classes, width=width
    )
    model = EndToEndClassifier(img, txt, create_model(cfg)).train()
    opt = torch.optim.AdamW(model.param_groups(encoder_lr=1e-5, fusion_lr=1e-3))
    words = [
        "a",
        "large",
        "grey",
        "building",
        "beside",
        "a",
        "road",
        "with",
        "green",
        "trees",
        "and",
        "parked",
        "cars",
        "near",
        "water",
    ]
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(batches + 1):  # the first batch warms up and is not counted
        pixels = torch.randn(batch, 3, 224, 224, generator=g)
        caps = [
            " ".join(words[int(i)] for i in torch.randint(0, len(words), (40,), generator=g))
            for _ in range(batch)
        ]
        tokens = txt.tokenize(caps)
        labels = torch.randint(0, classes, (batch,), generator=g)
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(pixels, **tokens).logits, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    per_image = sum(times[1:]) / (batches * batch)
    return per_image * n, per_image


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--classes", type=int, default=30)
    ap.add_argument("--e2e-batches", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    frozen = frozen_epoch(args.images, args.batch_size, args.width, args.classes)
    e2e, per_image = e2e_epoch(
        args.images, args.batch_size, args.width, args.classes, args.e2e_batches
    )
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    print(f"| mode | epoch on {args.images} images (s) |")
    print("|---|---|")
    print(f"| frozen features (dual, width {args.width}) | {frozen:.1f} |")
    print(
        f"| end to end (Lite0 + MiniLM + dual) | {e2e:.1f} (= {per_image * 1000:.0f} ms/image x {args.images};"
        f" timed on {args.e2e_batches} batches of {args.batch_size}) |"
    )
    print(f"frozen is {e2e / frozen:.1f}x faster per epoch (target >= 30x)")


if __name__ == "__main__":
    main()
