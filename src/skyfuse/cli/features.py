"""`skyfuse features`: fill the feature cache for a scene folder and its captions.

The command parses options into a `FeatureJob` (skyfuse.encoders.features) and prints what
`run_feature_job` encoded and reused.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from skyfuse.cli.common import console, err_console, friendly_errors, set_quiet
from skyfuse.cli.options import (
    CacheDirOpt,
    CaptionsOpt,
    ImageEncoderOpt,
    QuietOpt,
    ScenePathArg,
    TextEncoderOpt,
)

if TYPE_CHECKING:
    from skyfuse.encoders.features import FeatureJobResult

FeatureBatchOpt = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Images or captions per batch.")
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="cpu, cuda, cuda:1 ... or auto (single-device run).")
]
DevicesOpt = Annotated[
    str | None,
    typer.Option(
        "--devices",
        help="Spread the work over N devices (or 'auto') with Lightning's predict loop; each rank"
        " writes its own cache shards.",
    ),
]
WorkersOpt = Annotated[
    int, typer.Option("--workers", min=0, help="Decoding threads (processes with --devices).")
]
MaxLengthOpt = Annotated[
    int | None,
    typer.Option(
        "--max-length",
        help="Text tokens kept per caption (default 128, 77 for CLIP); longer captions are truncated.",
    ),
]


def _is_rank_zero() -> bool:
    return all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "NODE_RANK"))


@friendly_errors
def features(
    path: ScenePathArg,
    captions: CaptionsOpt = None,
    image_encoder: ImageEncoderOpt = "efficientnet-lite0",
    text_encoder: TextEncoderOpt = "minilm",
    cache_dir: CacheDirOpt = None,
    batch_size: FeatureBatchOpt = 32,
    device: DeviceOpt = "auto",
    devices: DevicesOpt = None,
    workers: WorkersOpt = 2,
    max_length: MaxLengthOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Encode every image and caption once and store the frozen tokens in the feature cache.

    Images are keyed by the sha256 of their bytes and captions by the sha256 of their text, in a folder per encoder id (weights hash + preprocessing), so train / bench reuse them and only what changed is recomputed. Corrupt images and images without a caption are skipped and listed.

    Image encoders: efficientnet-lite0 (bundled), hf:<hub id or folder> (ViT family, CLIP), openclip:<arch>@<checkpoint>. Text encoders: minilm (bundled), hf:<hub id or folder> (BERT family, CLIP text tower), openclip:<arch>@<checkpoint>.

    Example: skyfuse features data/aid --captions captions.jsonl --batch-size 64
    """
    set_quiet(quiet)
    from skyfuse.encoders.features import FeatureJob, run_feature_job

    job = FeatureJob(
        path=path,
        captions=captions,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        cache_dir=cache_dir,
        batch_size=batch_size,
        device=device,
        devices=devices,
        workers=workers,
        max_length=max_length,
    )
    result = run_feature_job(job)
    if _is_rank_zero():  # every rank of a --devices run gets the same result
        _print_summary(result)


def _print_summary(result: FeatureJobResult) -> None:
    """Computed vs reused counts, token shapes and the cache on stdout; skipped images on stderr."""
    fs, st = result.features, result.features.stats
    console.print(
        f"{len(fs)} of {result.images} images encoded:"
        f" images {st.get('image_computed', 0)} computed / {st.get('image_cached', 0)} reused,"
        f" captions {st.get('text_computed', 0)} computed / {st.get('text_cached', 0)} reused",
        soft_wrap=True,
    )
    console.print(
        f"image tokens {tuple(fs.image_tokens.shape[1:])} from {fs.image_encoder_id}\n"
        f"text tokens up to {tuple(fs.text_tokens.shape[1:])} from {fs.text_encoder_id}\n"
        f"cache: {result.cache_dir}",
        highlight=False,
        soft_wrap=True,
    )
    if st.get("text_truncated"):
        console.print(
            f"{st['text_truncated']} caption(s) longer than {result.text_max_length} tokens were"
            " truncated (raise --max-length if the encoder allows it)",
            soft_wrap=True,
        )
    if fs.skipped:
        err_console.print(f"[yellow]{len(fs.skipped)} image(s) skipped[/yellow]")
        for rel, why in list(fs.skipped.items())[:10]:
            err_console.print(f"  {rel}: {why}", highlight=False, soft_wrap=True)
        if len(fs.skipped) > 10:
            err_console.print(f"  ... and {len(fs.skipped) - 10} more")


def register(app: typer.Typer) -> None:
    """Add `features` to the main application."""
    app.command("features")(features)
