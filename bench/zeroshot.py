"""Zero-shot benchmark: the semantic head against the caption-only baseline on real data.

    .venv/bin/python bench/zeroshot.py [--data aid whu] [--models dual image] [--folds 3] [--epochs 8]
        [--image-grid 2] [--out runs/bench-zeroshot] [--cache-dir DIR]

1. AID-150px-dev (30 classes x 100) with human RSICD captions, raw and leakage-masked:
   a. caption-only top-1 over all 30 classes (no split), with the single prompt "an aerial image of
      a {class}" and with skyfuse's templates + descriptions (the issue's reference scale);
   b. the zero-shot protocol (`run_zeroshot`): unseen 0.25, K folds, per model.
2. WHU-RS19 (19 classes, 1005 images) with offline attribute captions (no class words at all): the
   protocol per model (raw only: attribute captions have nothing to mask).
Prints markdown tables (per-class accuracy %, mean ± std over folds) and writes OUT/bench.json.
Frozen features are cached (default cache), so a second run costs only the head training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def caption_only_all_classes(root: Path, captions: dict[str, str]) -> dict[str, dict[str, float]]:
    """Caption-only top-1 over every class of the folder, per caption setting and class text."""
    import torch

    from skyfuse.captioning import mask_captions
    from skyfuse.data.folder import SceneFolder
    from skyfuse.encoders import create_text_encoder
    from skyfuse.zeroshot.baselines import caption_only_scores
    from skyfuse.zeroshot.classes import humanise, resolve_classes
    from skyfuse.zeroshot.embeddings import class_embeddings, embed_texts
    from skyfuse.zeroshot.metrics import zsl_metrics

    folder = SceneFolder(root)
    encoder = create_text_encoder("minilm")
    labels = torch.tensor([s.label for s in folder.samples])
    class_texts = {
        "one prompt, class name": class_embeddings(
            encoder,
            resolve_classes([humanise(c) for c in folder.classes], use_builtin=False),
            ["an aerial image of a {}"],
        ),
        "skyfuse templates + descriptions": class_embeddings(
            encoder, resolve_classes(folder.classes)
        ),
    }
    out: dict[str, dict[str, float]] = {}
    for setting, caps in (("raw", captions), ("masked", mask_captions(captions, folder.classes))):
        vec = embed_texts(encoder, [caps[s.rel] for s in folder.samples])
        for name, emb in class_texts.items():
            m = zsl_metrics(caption_only_scores(vec, emb), labels)
            out.setdefault(setting, {})[name] = m["top1"]
    return out


def attribute_captions(root: Path, store: Path) -> dict[str, str]:
    """Offline attribute captions for a folder (resumable JSONL store)."""
    from skyfuse.captioning import caption_folder, create_captioner, load_captions

    caption_folder(root, create_captioner("attributes"), store, progress=False)
    return load_captions(store, root)


def protocol(
    root: Path,
    captions: dict[str, str],
    out: Path,
    model: str,
    args: argparse.Namespace,
    mask: bool,
) -> dict[str, Any]:
    from skyfuse.zeroshot.protocol import ZeroShotSettings, run_zeroshot
    from skyfuse.zeroshot.task import HeadTrainConfig

    settings = ZeroShotSettings(
        model=model,
        unseen=0.25,
        folds=args.folds,
        seed=args.seed,
        captions=("raw", "masked") if mask else ("raw",),
        train=HeadTrainConfig(epochs=args.epochs, seed=args.seed),
        fusion={"width": args.width},
        image_grid=args.image_grid or None,
        final_model=False,
    )
    t0 = time.perf_counter()
    metrics = run_zeroshot(
        root,
        captions,
        out,
        settings,
        cache_dir=args.cache_dir,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


def table(rows: list[tuple[str, str, str, dict[str, Any]]]) -> str:
    """rows: (dataset, captions, method, groups) -> markdown."""
    from skyfuse.zeroshot.report import COLUMNS

    head = "| data | captions | method | " + " | ".join(c[2] for c in COLUMNS) + " |"
    lines = [head, "|---|---|---|" + "---|" * len(COLUMNS)]
    for data, setting, method, g in rows:
        cells = [f"{100 * g[a][b]['mean']:.1f} ± {100 * g[a][b]['std']:.1f}" for a, b, _ in COLUMNS]
        lines.append(f"| {data} | {setting} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", nargs="+", default=["aid", "whu"], choices=["aid", "whu"])
    p.add_argument("--models", nargs="+", default=["dual", "image"])
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument(
        "--image-grid", type=int, default=2, help="pool image tokens to NxN (0: keep all)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=256, help="fusion width (dual costs ~width^2)")
    p.add_argument(
        "--no-all-classes", action="store_true", help="skip the all-class caption-only table"
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench-zeroshot"))
    p.add_argument("--cache-dir", type=Path, default=None)
    args = p.parse_args()

    from skyfuse.captioning import load_captions

    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    rows: list[tuple[str, str, str, dict[str, Any]]] = []
    if "aid" in args.data:
        root = SHARED / "aid-150px-dev"
        captions = load_captions(SHARED / "captions" / "rsicd", root)
        if not args.no_all_classes:
            report["aid_caption_only_all_30"] = all30 = caption_only_all_classes(root, captions)
            print("\nCaption-only top-1 over all 30 AID classes (%):")
            for setting, by_text in all30.items():
                for name, acc in by_text.items():
                    print(f"| {setting} | {name} | {100 * acc:.1f} |")
        for model in args.models:
            m = protocol(root, captions, args.out / f"aid-{model}", model, args, mask=True)
            report[f"aid-{model}"] = m
            for setting, methods in m["settings"].items():
                rows.append(("AID-150 RSICD", setting, f"head ({model})", methods["head"]))
                rows.append(
                    (
                        "AID-150 RSICD",
                        setting,
                        f"head+caption ({model})",
                        methods["head_plus_caption"],
                    )
                )
                if model == args.models[0]:
                    rows.append(("AID-150 RSICD", setting, "caption-only", methods["caption_only"]))
    if "whu" in args.data:
        root = SHARED / "whu-rs19"
        args.out.mkdir(parents=True, exist_ok=True)
        captions = attribute_captions(root, args.out / "whu-attribute-captions.jsonl")
        for model in args.models:
            m = protocol(root, captions, args.out / f"whu-{model}", model, args, mask=False)
            report[f"whu-{model}"] = m
            methods = m["settings"]["raw"]
            rows.append(("WHU-RS19 attributes", "raw", f"head ({model})", methods["head"]))
            rows.append(
                (
                    "WHU-RS19 attributes",
                    "raw",
                    f"head+caption ({model})",
                    methods["head_plus_caption"],
                )
            )
            if model == args.models[0]:
                rows.append(("WHU-RS19 attributes", "raw", "caption-only", methods["caption_only"]))
    print()
    print(table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
