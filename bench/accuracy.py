"""Real-data accuracy benchmarks of the core (results go to BENCHMARKS.md, section core-accuracy).

Each experiment prepares a dataset + captions, extracts frozen features once (cached), and runs
`skyfuse.training.bench.run_bench` over models x seeds with linear-probe floors. Finished runs are
skipped on a rerun (``--out`` keeps them), so a long grid can be stopped and resumed.

Experiments (``../shared/data`` must exist):
  aid-raw / aid-masked    aid-150px-dev + human RSICD captions (joined by file name), raw or with class
                          names and verdicts masked; --protocol aid-20 or aid-50
  whu-attributes          WHU-RS19 + offline attribute captions (measured statistics, not a VLM); whu-60
  minitest-llava / minitest-human   aid-minitest with its LLaVA captions or its human RSICD captions
  minitest-llava-masked / minitest-human-masked   the same with class names and verdicts masked
                          (--train 0.1 leaves 4 training images per class: a harder comparison)

Example:
  python bench/accuracy.py aid-masked --protocol aid-50 --seeds 0,1,2 --models image,text,concat,dual
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SKYFUSE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _captions(name: str, folder: Any, work: Path) -> dict[str, str]:
    from skyfuse.captioning import caption_folder, create_captioner, load_captions, mask_captions

    if name in ("aid-raw", "aid-masked"):
        caps = load_captions(SHARED / "captions" / "rsicd", dataset_root=folder.root)
        return mask_captions(caps, folder.classes) if name == "aid-masked" else caps
    if name == "whu-attributes":
        store = work / "whu-attributes.jsonl"
        caption_folder(folder.root, create_captioner("attributes"), store, progress=False)
        return load_captions(store, dataset_root=folder.root)
    if name.startswith("minitest-llava"):
        caps = folder.texts()
    elif name.startswith("minitest-human"):
        caps = load_captions(
            SHARED / "aid-minitest" / "human_captions_rsicd.json", dataset_root=folder.root
        )
    else:
        raise SystemExit(f"unknown experiment {name!r}")
    return mask_captions(caps, folder.classes) if name.endswith("-masked") else caps


DATASETS = {
    "aid-raw": "aid-150px-dev",
    "aid-masked": "aid-150px-dev",
    "whu-attributes": "whu-rs19",
    "minitest-llava": "aid-minitest",
    "minitest-human": "aid-minitest",
    "minitest-llava-masked": "aid-minitest",
    "minitest-human-masked": "aid-minitest",
}


def experiment_parser(doc: str | None) -> argparse.ArgumentParser:
    """The arguments the side benchmarks (caption_dropout.py, probe_views.py) share."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("experiment", choices=sorted(DATASETS))
    ap.add_argument("--protocol", default="aid-20")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--work", type=Path, default=Path("/tmp/skyfuse-bench"))
    return ap


def load_experiment(name: str, work: Path, views: int) -> tuple[Any, dict[str, str], Any] | None:
    """(folder, captions, cached features with ``views`` dihedral views), or None when the shared
    data is absent (reported on stderr)."""
    from skyfuse.data.folder import SceneFolder
    from skyfuse.training.prepare import extract

    root = SHARED / DATASETS[name]
    if not root.exists():
        print(f"skipped: {root} is absent", file=sys.stderr)
        return None
    folder = SceneFolder(root)
    caps = _captions(name, folder, work)
    features = extract(folder, caps, cache_dir=work / "cache", show_progress=False, views=views)
    return folder, caps, features


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("experiment", choices=sorted(DATASETS))
    ap.add_argument("--protocol", default=None, help="aid-20, aid-50, whu-60 ...")
    ap.add_argument(
        "--train", type=float, default=None, help="training fraction instead of a protocol"
    )
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default="image,text,concat,dual")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--views", type=int, default=8, help="dihedral views (1 = off)")
    ap.add_argument("--selection", default="fixed", choices=["fixed", "val"])
    ap.add_argument("--no-linear-path", action="store_true")
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument(
        "--token-drop", type=float, default=0.0, help="fraction of tokens hidden in training"
    )
    ap.add_argument("--refit", action="store_true")
    ap.add_argument("--no-shortcut", action="store_true")
    ap.add_argument("--no-probes", action="store_true")
    ap.add_argument(
        "--work", type=Path, default=Path("/tmp/skyfuse-bench"), help="cache + run folders"
    )
    ap.add_argument("--tag", default="", help="suffix of the run folder (e.g. refit)")
    args = ap.parse_args(argv)

    from skyfuse.data.folder import SceneFolder
    from skyfuse.reports.tables import to_markdown
    from skyfuse.training.bench import run_bench
    from skyfuse.training.config import TrainConfig
    from skyfuse.training.prepare import extract

    root = SHARED / DATASETS[args.experiment]
    if not root.exists():
        print(f"skipped: {root} is absent", file=sys.stderr)
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    folder = SceneFolder(root)
    caps = _captions(args.experiment, folder, args.work)
    features = extract(
        folder, caps, cache_dir=args.work / "cache", show_progress=False, views=args.views
    )
    t_feat = time.perf_counter() - t0
    split_name = args.protocol or f"train{args.train}"
    out = args.work / "runs" / f"{args.experiment}-{split_name}{'-' + args.tag if args.tag else ''}"
    cfg = TrainConfig(
        epochs=args.epochs,
        patience=args.patience,
        refit=args.refit,
        views=args.views,
        selection=args.selection,
    )
    fusion = {
        "width": args.width,
        "levels": args.levels,
        "shortcut": not args.no_shortcut,
        "dropout": args.dropout,
        "token_drop": args.token_drop,
        "linear_path": not args.no_linear_path,
    }

    def on_run(row: dict[str, Any]) -> None:
        print(
            f"  {row['model']:<18} seed {row['seed']}: OA {100 * row['oa']:.2f}  ({row['seconds']:.0f} s)",
            flush=True,
        )

    print(
        f"{args.experiment} {split_name}: {len(features)} images with captions, features {t_feat:.0f} s",
        flush=True,
    )
    table, _runs = run_bench(
        features,
        folder,
        models=[m.strip() for m in args.models.split(",") if m.strip()],
        seeds=[int(s) for s in args.seeds.split(",")],
        protocol=args.protocol,
        train_ratio=args.train,
        cfg=cfg,
        fusion=fusion,
        out_dir=out,
        image_encoder=features.image_encoder_id,
        text_encoder=features.text_encoder_id,
        dataset=root.name,
        probes=not args.no_probes,
        on_run=on_run,
    )
    total = time.perf_counter() - t0
    print(to_markdown(table, digits=2))
    print(f"total {total:.0f} s (features {t_feat:.0f} s); runs in {out}")
    (out / "settings.json").write_text(
        json.dumps({**vars(args), "work": str(args.work), "seconds": total}, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
