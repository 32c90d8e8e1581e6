"""Verbs that use a trained bundle: `skyfuse predict`, `skyfuse explain`, `skyfuse export`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from skyfuse.cli.common import console, err_console, friendly_errors, progress

MODEL_DIR_HELP = (
    "Model bundle folder (DIR/model written by `skyfuse train` or `skyfuse zeroshot`), or that run"
    " folder DIR."
)


def _caption_source(
    captions: Path | None,
    backend: str | None,
    vlm_model: str | None,
    base_url: str | None,
    dataset_root: Path | None,
) -> tuple[dict[str, str] | None, str | None, dict[str, Any]]:
    """(captions from a file or None, the captioner the user forced or None, backend options).

    Without --captioner the bundle's training caption source is used; --vlm-model / --base-url
    then say where its VLM is."""
    from skyfuse.cli.caption import backend_options
    from skyfuse.errors import BadInputError

    loaded = None
    if captions is not None:
        from skyfuse.captioning import load_captions

        try:
            loaded = load_captions(captions, dataset_root)
        except BadInputError:
            if dataset_root is None:
                raise
            # not a scene folder (e.g. a plain folder of images): keep the source's own names,
            # inputs find their captions by name matching
            loaded = load_captions(captions)
    if backend is not None:
        check_live_backend(backend, vlm_model)
        return loaded, backend, backend_options(backend, model=vlm_model, base_url=base_url)
    opts = {k: v for k, v in (("model", vlm_model), ("base_url", base_url)) if v}
    return loaded, None, opts


def _opset_range() -> tuple[int, int]:
    """Opsets `skyfuse export` can write: 14 (scaled-dot-product attention) up to torch's newest."""
    try:
        from torch.onnx import _constants

        high = int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):  # pragma: no cover - private module moved
        high = 20
    return 14, high


def check_live_backend(name: str, vlm_model: str | None) -> None:
    """Refuse a captioner that cannot work before anything is loaded or written (captioners are only
    built when the first image needs a caption, which would be after the output file exists)."""
    from skyfuse.captioning import list_captioners
    from skyfuse.errors import ConfigError

    if name == "files":
        raise ConfigError(
            "--captioner files imports a caption file; pass it as --captions FILE instead"
        )
    if name not in list_captioners():
        raise ConfigError(
            f"--captioner {name}: unknown captioner; use one of attributes, openai, transformers"
        )
    if name in {"openai", "transformers"} and not vlm_model:
        what = "the model name the server knows" if name == "openai" else "a local folder or hub id"
        raise ConfigError(f"--captioner {name} needs --vlm-model ({what})")


def _encoder_kw(image_encoder: str | None, text_encoder: str | None) -> dict[str, Any]:
    from skyfuse.encoders import create_image_encoder, create_text_encoder

    kw: dict[str, Any] = {}
    if image_encoder:
        kw["image_encoder"] = create_image_encoder(image_encoder)
    if text_encoder:
        kw["text_encoder"] = create_text_encoder(text_encoder)
    return kw


_BACKEND_HELP = (
    "Force a captioner for images without a caption (attributes, openai, transformers). Default:"
    " the source the model's training captions came from; another kind needs"
    " --allow-caption-mismatch."
)
_VLM_HELP = (
    "Captioning model: for a model trained on VLM captions, where that VLM is (transformers: its"
    " folder or hub id); with --captioner, the model to use (openai: served name)."
)
_BASE_URL_HELP = (
    "OpenAI-compatible server that serves the captioning VLM, e.g. http://127.0.0.1:8001/v1."
)
_PROMPT_HELP = "Prompt id or file, for a model trained on VLM captions whose prompt text it lacks."
_MISMATCH_HELP = (
    "Accept captions of another kind than the model was trained on (records say caption_mismatch)."
)


def captioner_option() -> Any:
    return typer.Option(None, "--captioner", "--backend", help=_BACKEND_HELP)


def vlm_model_option() -> Any:
    return typer.Option(None, "--vlm-model", help=_VLM_HELP)


def base_url_option() -> Any:
    return typer.Option(None, "--base-url", help=_BASE_URL_HELP)


def prompt_option() -> Any:
    return typer.Option(None, "--prompt", help=_PROMPT_HELP)


def mismatch_option() -> Any:
    return typer.Option(False, "--allow-caption-mismatch", help=_MISMATCH_HELP)


def register(app: typer.Typer) -> None:
    @app.command("predict")
    @friendly_errors
    def predict_cmd(
        model_dir: Path = typer.Argument(..., help=MODEL_DIR_HELP),
        inputs: list[Path] = typer.Argument(
            ..., help="Image files and/or folders (searched recursively)."
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Output file: .jsonl or .csv (appended to; resumes)."
        ),
        captions: Path | None = typer.Option(
            None,
            "--captions",
            help="Captions to use (caption store JSONL, JSONL/CSV of path,caption, text/ tree).",
        ),
        backend: str | None = captioner_option(),
        vlm_model: str | None = vlm_model_option(),
        base_url: str | None = base_url_option(),
        prompt: str | None = prompt_option(),
        allow_mismatch: bool = mismatch_option(),
        top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="Labels per image."),
        batch_size: int = typer.Option(
            16, "--batch-size", "-b", min=1, help="Images per forward pass."
        ),
        classes: str | None = typer.Option(
            None,
            "--classes",
            help="Zero-shot bundles: comma-separated class names to score, e.g. 'port,golf course'.",
        ),
        device: str = typer.Option("cpu", "--device", help="torch device: cpu, cuda, cuda:1."),
        views: int | None = typer.Option(
            None,
            "--views",
            help="Dihedral views averaged per image: 1, 2, 4 or 8 (default: the bundle's, what its"
            " test accuracy was measured with; 1 is the fastest).",
        ),
        image_encoder: str | None = typer.Option(
            None, "--image-encoder", help="Override the bundle's image encoder name/folder."
        ),
        text_encoder: str | None = typer.Option(
            None, "--text-encoder", help="Override the bundle's text encoder name/folder."
        ),
    ) -> None:
        """Predict the scene class of images into a JSONL or CSV file.

        Each record has `path` (relative to a given folder), `top_k` ([{label, prob}], best first),
        `caption`, `caption_source` ("given" from --captions, the captioner's id, or "none" for an
        image-only prediction) and `caption_mismatch` (the caption is of another kind than the
        model's training captions). Missing captions come from the model's training caption source;
        a caption that fails is a record with `error`, retried by the next run. Corrupt files are
        reported and skipped; re-running the same command resumes.
        """
        from skyfuse.inference import (
            PredictionWriter,
            collect_inputs,
            load_predictor,
            parse_classes,
            plan_captions,
            predict_files,
            resolve_model_dir,
        )

        model_dir = resolve_model_dir(model_dir)
        names = parse_classes(classes)
        items = collect_inputs(inputs)
        root = inputs[0] if len(inputs) == 1 and inputs[0].is_dir() else None
        caps, name, opts = _caption_source(captions, backend, vlm_model, base_url, root)
        predictor = load_predictor(
            model_dir,
            classes=names,
            captioner=name,
            captioner_options=opts,
            prompt=prompt,
            allow_caption_mismatch=allow_mismatch,
            batch_size=batch_size,
            device=device,
            views=views,
            **_encoder_kw(image_encoder, text_encoder),
        )
        plan = plan_captions(predictor, items, caps, captions, allow_mismatch=allow_mismatch)
        if plan.note:
            err_console.print(plan.note, highlight=False, soft_wrap=True)
        with PredictionWriter(out, top_k=top_k) as writer, progress() as bar:
            task = bar.add_task(
                "predict",
                total=len(items),
                completed=sum(1 for it in items if it.key in writer.done),
            )

            def tick(n: int, s: Any) -> None:
                bar.update(task, advance=n, extra=f"{len(s.failed)} failed" if s.failed else "")

            summary = predict_files(
                predictor,
                items,
                writer,
                captions=caps,
                top_k=top_k,
                batch_size=batch_size,
                given_mismatch=plan.given_mismatch,
                on_progress=tick,
            )
        for key, reason in summary.failed[:20]:
            err_console.print(
                f"[yellow]skipped[/yellow] {key}: {reason}", highlight=False, soft_wrap=True
            )
        if len(summary.failed) > 20:
            err_console.print(f"... and {len(summary.failed) - 20} more skipped files")
        for key, reason in summary.caption_failed[:20]:
            err_console.print(
                f"[red]no caption[/red] {key}: {reason}", highlight=False, soft_wrap=True
            )
        console.print(
            f"{summary.predicted} predicted, {summary.already_done} already in {out},"
            f" {len(summary.failed)} skipped (unreadable), {summary.captioned} captioned on the fly,"
            f" {summary.image_only} image-only, {summary.mismatched} with caption_mismatch,"
            f" {len(summary.caption_failed)} failed captions (error records; rerun to retry)",
            highlight=False,
            soft_wrap=True,
        )
        if summary.caption_failed:
            raise typer.Exit(1)

    @app.command("explain")
    @friendly_errors
    def explain_cmd(
        model_dir: Path = typer.Argument(..., help=MODEL_DIR_HELP),
        path: Path = typer.Argument(
            ..., help="An image, a folder of images, or a scene folder (class sub-folders)."
        ),
        out: Path = typer.Option(..., "--out", "-o", help="Folder for the PNGs and explain.json."),
        captions: Path | None = typer.Option(
            None, "--captions", help="Captions to use (as for predict)."
        ),
        backend: str | None = captioner_option(),
        vlm_model: str | None = vlm_model_option(),
        base_url: str | None = base_url_option(),
        prompt: str | None = prompt_option(),
        allow_mismatch: bool = mismatch_option(),
        limit: int = typer.Option(
            300,
            "--limit",
            min=1,
            help="Images sampled (round-robin over classes) for t-SNE and confusion.",
        ),
        examples: int = typer.Option(
            6, "--examples", min=0, help="Images that get an attention figure."
        ),
        seed: int = typer.Option(0, "--seed", help="Sampling and t-SNE seed."),
        batch_size: int = typer.Option(
            16, "--batch-size", "-b", min=1, help="Images per forward pass."
        ),
        device: str = typer.Option("cpu", "--device", help="torch device."),
        image_encoder: str | None = typer.Option(
            None, "--image-encoder", help="Override the bundle's image encoder."
        ),
        text_encoder: str | None = typer.Option(
            None, "--text-encoder", help="Override the bundle's text encoder."
        ),
    ) -> None:
        """Show why the model decides: attention overlays, a t-SNE map and a confusion matrix.

        Writes OUT/attention/*.png (which image regions the caption's words attend to, and which
        words the regions attend to), OUT/tsne.png (fused features coloured by class), and for a
        scene folder whose classes the model knows OUT/confusion.png + confusion.json; per-image
        predictions go to OUT/explain.json.
        """
        from skyfuse.inference import Predictor, resolve_model_dir
        from skyfuse.inference.explain import explain_path

        model_dir = resolve_model_dir(model_dir)
        root = path if path.is_dir() else None
        caps, name, opts = _caption_source(captions, backend, vlm_model, base_url, root)
        predictor = Predictor(
            model_dir,
            captioner=name,
            captioner_options=opts,
            prompt=prompt,
            allow_caption_mismatch=allow_mismatch,
            batch_size=batch_size,
            device=device,
            **_encoder_kw(image_encoder, text_encoder),
        )
        with progress() as bar:
            task = bar.add_task("explain", total=None)
            summary = explain_path(
                predictor,
                path,
                out,
                captions=caps,
                limit=limit,
                examples=examples,
                seed=seed,
                batch_size=batch_size,
                on_progress=lambda n: bar.update(task, advance=n),
            )
        for key, reason in summary.failed[:10]:
            err_console.print(
                f"[yellow]skipped[/yellow] {key}: {reason}", highlight=False, soft_wrap=True
            )
        if examples > 0 and not any(f.parent.name == "attention" for f in summary.files):
            kind = getattr(getattr(predictor.bundle, "config", None), "model", "this")
            err_console.print(
                f"no attention figures: the {kind} model has no cross-attention to show"
                " (dual, t2i and i2t have)",
                highlight=False,
                soft_wrap=True,
            )
        oa = f", OA on the sample {100 * summary.oa:.1f} %" if summary.oa is not None else ""
        console.print(
            f"{summary.images} images explained{oa}; wrote:", highlight=False, soft_wrap=True
        )
        for f in summary.files:
            console.print(f"  {f}", highlight=False, soft_wrap=True)

    @app.command("export")
    @friendly_errors
    def export_cmd(
        model_dir: Path = typer.Argument(..., help=MODEL_DIR_HELP),
        out: Path = typer.Option(
            ...,
            "--out",
            "-o",
            help="Fusion model file (*.onnx); encoders and metadata go beside it.",
        ),
        fmt: str = typer.Option("onnx", "--format", "-f", help="Export format (onnx)."),
        encoders: bool = typer.Option(
            True, "--encoders/--no-encoders", help="Also export the image and text encoders."
        ),
        opset: int = typer.Option(17, "--opset", help="ONNX opset version."),
        image_encoder: str | None = typer.Option(
            None, "--image-encoder", help="Override the bundle's image encoder."
        ),
        text_encoder: str | None = typer.Option(
            None, "--text-encoder", help="Override the bundle's text encoder."
        ),
    ) -> None:
        """Export a bundle for deployment without skyfuse (onnxruntime).

        OUT holds the fusion model over encoder tokens: inputs image_tokens (B,N,Di) float32,
        image_mask (B,N) bool, text_tokens (B,L,Dt) float32, text_mask (B,L) bool (True = real
        token); outputs logits and fused. With --encoders, OUT's stem gets .image_encoder.onnx
        (normalised pixels -> tokens, mask, pooled), .text_encoder.onnx (input_ids, attention_mask
        -> tokens, mask, pooled) and a .tokenizer folder; OUT.json records class names, input
        names and preprocessing. Every graph is compared with torch on random inputs (<= 1e-4).
        """
        from skyfuse.errors import ConfigError
        from skyfuse.export import export_bundle
        from skyfuse.inference import resolve_model_dir

        model_dir = resolve_model_dir(model_dir)
        if fmt.lower() != "onnx":
            raise ConfigError(f"unknown export format {fmt!r}; supported: onnx")
        low, high = _opset_range()
        if not low <= opset <= high:
            raise ConfigError(
                f"--opset {opset}: this torch exports opsets {low}..{high} of these models"
                " (attention needs 14); the default 17 suits onnxruntime >= 1.12"
            )
        kw = _encoder_kw(image_encoder, text_encoder) if encoders else {}
        with console.status("exporting and checking against torch..."):
            report = export_bundle(model_dir, out, encoders=encoders, opset=opset, **kw)
        for r in report.results:
            if r.error is None and r.path is not None:
                console.print(
                    f"[green]ok[/green] {r.name}: {r.path} (max |onnx - torch| = {r.max_abs_diff:.2e})",
                    highlight=False,
                    soft_wrap=True,
                )
            else:
                err_console.print(
                    f"[yellow]not exported[/yellow] {r.name}: {r.error}",
                    highlight=False,
                    soft_wrap=True,
                )
        console.print(f"metadata: {report.metadata}", highlight=False, soft_wrap=True)
