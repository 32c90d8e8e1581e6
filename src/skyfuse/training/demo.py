"""The offline demo: synthetic scenes -> attribute captions -> bundled encoders -> four models compared.

Why: a fresh install must show the whole method working without a download, a GPU or a VLM. The
scenes are procedural (marked SYNTHETIC), the captions are measured image statistics (not a VLM), and
the encoders are the bundled EfficientNet-Lite0 and MiniLM, so the numbers say that the pipeline
works, not how well skyfuse does on real imagery (see BENCHMARKS.md for that).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyfuse.training.config import TrainConfig

DEMO_MODELS = ("image", "text", "concat", "dual")
Say = Callable[[str], None]


@dataclass
class DemoResult:
    """Where the demo wrote its outputs and the comparison table it printed."""

    out_dir: Path
    table: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    plots: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(
    out_dir: Path,
    *,
    per_class: int = 30,
    size: int = 128,
    seeds: Sequence[int] = (0,),
    models: Sequence[str] = DEMO_MODELS,
    train_ratio: float = 0.5,
    epochs: int = 15,
    width: int = 128,
    cache_dir: Path | None = None,
    show_progress: bool = True,
    say: Say = print,
) -> DemoResult:
    """Run the demo end to end into ``out_dir`` (reusing what an earlier run there already made)."""
    from skyfuse.captioning import caption_folder, create_captioner, load_captions
    from skyfuse.captioning.provenance import source_of_file
    from skyfuse.data.folder import SceneFolder
    from skyfuse.data.synthetic import make_synthetic_dataset
    from skyfuse.reports.tables import to_markdown
    from skyfuse.training.bench import run_bench
    from skyfuse.training.prepare import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER, extract

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    secs: dict[str, float] = {}
    t = time.perf_counter()
    data = out_dir / "synthetic-scenes"
    make_synthetic_dataset(data, per_class=per_class, size=size, seed=0)
    folder = SceneFolder(data)
    secs["dataset"] = time.perf_counter() - t
    say(f"1/4 synthetic dataset: {len(folder)} images, {len(folder.classes)} classes -> {data}")

    t = time.perf_counter()
    store = out_dir / "captions.jsonl"
    caption_folder(data, create_captioner("attributes"), store, progress=show_progress)
    captions = load_captions(store, dataset_root=data)
    secs["captions"] = time.perf_counter() - t
    example = captions[folder.samples[0].rel]
    say(f"2/4 attribute captions (measured, not a VLM): {len(captions)} -> {store}")
    say(f"    e.g. {folder.samples[0].rel}: {example[:150]}")

    t = time.perf_counter()
    cfg = TrainConfig(epochs=epochs)  # the default recipe: 8 dihedral views, fixed schedule
    features = extract(
        folder,
        captions,
        cache_dir=cache_dir or out_dir / "feature-cache",
        show_progress=show_progress,
        views=cfg.views,
    )
    secs["features"] = time.perf_counter() - t
    say(
        f"3/4 features: image tokens {tuple(features.image_tokens.shape[1:])} ({DEFAULT_IMAGE_ENCODER}),"
        f" text tokens {tuple(features.text_tokens.shape[1:])} ({DEFAULT_TEXT_ENCODER})"
    )

    t = time.perf_counter()

    def on_run(row: dict[str, Any]) -> None:
        say(
            f"    {row['model']:<18} seed {row['seed']}: test OA {100 * row['oa']:.1f} %  ({row['seconds']:.1f} s)"
        )

    say(f"4/4 training {', '.join(models)} (+ linear probes) on a {train_ratio:.0%} train split")
    table, runs = run_bench(
        features,
        folder,
        models=models,
        seeds=seeds,
        train_ratio=train_ratio,
        cfg=cfg,
        fusion={"width": width, "linear_path": True},
        out_dir=out_dir,
        image_encoder=features.image_encoder_id,
        text_encoder=features.text_encoder_id,
        prompt_id=None,
        caption_source=source_of_file(store).to_dict(),
        encoder_names=(DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER),
        dataset=f"synthetic ({len(folder)} images)",
        save_models=True,
        plots=True,
        on_run=on_run,
    )
    secs["training"] = time.perf_counter() - t
    say("")
    say(to_markdown(table, digits=1))
    plots = _plots(out_dir, folder, captions, seeds[0], models, say)
    return DemoResult(out_dir, table, runs, plots, secs)


def _plots(
    out_dir: Path, folder: Any, captions: dict[str, str], seed: int, models: Sequence[str], say: Say
) -> list[Path]:
    """Copy the best fusion model's confusion matrix up, and draw attention overlays when available."""
    name = "dual" if "dual" in models else models[-1]
    run_dir = out_dir / "runs" / f"{name}-s{seed}"
    plots: list[Path] = []
    src = run_dir / "confusion.png"
    if src.is_file():
        dst = out_dir / f"confusion_{name}.png"
        shutil.copyfile(src, dst)
        plots.append(dst)
    with contextlib.suppress(ImportError):  # the predict/explain parts are optional in a build
        plots += attention_plots(run_dir / "model", folder, captions, out_dir / "attention", n=3)
    for p in plots:
        say(f"plot: {p}")
    return plots


def attention_plots(
    model_dir: Path, folder: Any, captions: dict[str, str], out_dir: Path, *, n: int = 3
) -> list[Path]:
    """Attention overlays of the first ``n`` classes' first test images (dual model only)."""
    from skyfuse.data.images import load_image
    from skyfuse.inference.predictor import Predictor
    from skyfuse.reports.attention import plot_explanation

    predictor = Predictor(model_dir)
    seen: set[str] = set()
    picks = []
    for s in folder.samples:
        if s.class_name not in seen and s.rel in captions:
            seen.add(s.class_name)
            picks.append(s)
        if len(picks) >= n:
            break
    out: list[Path] = []
    for s in picks:
        img = load_image(s.path)
        pred = predictor.predict([img], [captions[s.rel]], top_k=1, explain=True)[0]
        if pred.explanation is None:
            continue
        title = f"{s.rel}: predicted {pred.top_k[0].label} ({100 * pred.top_k[0].prob:.0f} %)"
        path = plot_explanation(
            img,
            pred.explanation,
            out_dir / f"{s.class_name}.png",
            title=title,
            caption=pred.caption,
        )
        if path is not None:
            out.append(path)
    return out
