"""`skyfuse features`: fill the feature cache for a scene folder and its captions."""

from __future__ import annotations

import os

import typer

from skyfuse.cli.common import console, err_console, friendly_errors
from skyfuse.cli.options import (
    CacheDirOpt,
    CaptionsOpt,
    ImageEncoderOpt,
    ScenePathArg,
    TextEncoderOpt,
)


def _is_rank_zero() -> bool:
    return all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "NODE_RANK"))


@friendly_errors
def features(
    path: ScenePathArg,
    captions: CaptionsOpt = None,
    image_encoder: ImageEncoderOpt = "efficientnet-lite0",
    text_encoder: TextEncoderOpt = "minilm",
    cache_dir: CacheDirOpt = None,
    batch_size: int = typer.Option(
        32, "--batch-size", "-b", min=1, help="Images or captions per batch."
    ),
    device: str = typer.Option(
        "auto", "--device", help="cpu, cuda, cuda:1 ... or auto (single-device run)."
    ),
    devices: str | None = typer.Option(
        None,
        "--devices",
        help="Spread the work over N devices (or 'auto') with Lightning's predict loop; each rank"
        " writes its own cache shards.",
    ),
    workers: int = typer.Option(
        2, "--workers", min=0, help="Decoding threads (processes with --devices)."
    ),
    max_length: int | None = typer.Option(
        None,
        "--max-length",
        help="Text tokens kept per caption (default 128, 77 for CLIP); longer captions are truncated.",
    ),
) -> None:
    """Encode every image and caption once and store the frozen tokens in the feature cache.

    Images are keyed by the sha256 of their bytes and captions by the sha256 of their text, in a folder per encoder id (weights hash + preprocessing), so train / bench reuse them and only what changed is recomputed. Corrupt images and images without a caption are skipped and listed.

    Image encoders: efficientnet-lite0 (bundled), hf:<hub id or folder> (ViT family, CLIP), openclip:<arch>@<checkpoint>. Text encoders: minilm (bundled), hf:<hub id or folder> (BERT family, CLIP text tower), openclip:<arch>@<checkpoint>.

    Example: skyfuse features data/aid --captions captions.jsonl --batch-size 64
    """
    import torch

    from skyfuse.captioning import load_captions
    from skyfuse.data.folder import SceneFolder
    from skyfuse.encoders import create_image_encoder, create_text_encoder
    from skyfuse.encoders.cache import default_cache_dir
    from skyfuse.errors import BadInputError

    folder = SceneFolder(path)
    if captions is None:
        if folder.layout != "paper" or folder.text_root is None:
            raise BadInputError(
                f"{path}: no captions given and no text/ folder; pass --captions FILE"
                " (e.g. the store written by `skyfuse caption`)"
            )
        captions = folder.text_root
    caps = load_captions(captions, folder.root)
    root = cache_dir if cache_dir is not None else default_cache_dir()
    if devices is None:
        from skyfuse.devices import check_device

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        device = str(check_device(device))  # before any weights load
    ie = create_image_encoder(image_encoder)
    te_kw = {"max_length": max_length} if max_length is not None else {}
    te = create_text_encoder(text_encoder, **te_kw)
    if devices is not None:
        from skyfuse.encoders.distributed import extract_features_distributed

        n: int | str = int(devices) if devices.isdigit() else devices
        fs = extract_features_distributed(
            folder.samples,
            caps,
            ie,
            te,
            cache_dir=root,
            batch_size=batch_size,
            devices=n,
            num_workers=workers,
        )
    else:
        from skyfuse.encoders.features import extract_features

        fs = extract_features(
            folder.samples,
            caps,
            ie,
            te,
            cache_dir=root,
            batch_size=batch_size,
            device=device,
            workers=workers,
        )
    if not _is_rank_zero():
        return
    st = fs.stats
    console.print(
        f"{len(fs)} of {len(folder)} images encoded:"
        f" images {st.get('image_computed', 0)} computed / {st.get('image_cached', 0)} reused,"
        f" captions {st.get('text_computed', 0)} computed / {st.get('text_cached', 0)} reused",
        soft_wrap=True,
    )
    console.print(
        f"image tokens {tuple(fs.image_tokens.shape[1:])} from {fs.image_encoder_id}\n"
        f"text tokens up to {tuple(fs.text_tokens.shape[1:])} from {fs.text_encoder_id}\n"
        f"cache: {root}",
        highlight=False,
        soft_wrap=True,
    )
    if st.get("text_truncated"):
        console.print(
            f"{st['text_truncated']} caption(s) longer than {te.max_length} tokens were truncated"
            " (raise --max-length if the encoder allows it)",
            soft_wrap=True,
        )
    if fs.skipped:
        err_console.print(f"[yellow]{len(fs.skipped)} image(s) skipped[/yellow]")
        for rel, why in list(fs.skipped.items())[:10]:
            err_console.print(f"  {rel}: {why}", highlight=False, soft_wrap=True)
        if len(fs.skipped) > 10:
            err_console.print(f"  ... and {len(fs.skipped) - 10} more")


def register(app: typer.Typer) -> None:
    app.command("features")(features)
