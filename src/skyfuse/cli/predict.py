"""Verbs that use a trained bundle: `skyfuse predict`, `skyfuse explain`, `skyfuse export`.

The commands parse options into a `PredictJob` / `ExplainJob` (skyfuse.inference.job) or an
`ExportJob` (skyfuse.export.job) and print what it did; the caption and encoder choices and the
checks live in the library.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from skyfuse.cli.common import console, err_console, friendly_errors, progress, set_quiet
from skyfuse.cli.options import QuietOpt

if TYPE_CHECKING:
    from skyfuse.inference.batch import PredictSummary
    from skyfuse.inference.job import PreparedExplain, PreparedPredict

MODEL_DIR_HELP = (
    "Model bundle folder (DIR/model written by `skyfuse train` or `skyfuse zeroshot`), or that run"
    " folder DIR."
)
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
_VIEWS_HELP = (
    "Dihedral views averaged per image: 1, 2, 4 or 8 (default: the bundle's, what its test accuracy"
    " was measured with; 1 is the fastest)."
)

# --- shared by predict, explain and serve -------------------------------------------------------

ModelDirArg = Annotated[Path, typer.Argument(help=MODEL_DIR_HELP)]
CaptionerOpt = Annotated[str | None, typer.Option("--captioner", "--backend", help=_BACKEND_HELP)]
VlmModelOpt = Annotated[str | None, typer.Option("--vlm-model", help=_VLM_HELP)]
VlmBaseUrlOpt = Annotated[str | None, typer.Option("--base-url", help=_BASE_URL_HELP)]
CaptionPromptOpt = Annotated[str | None, typer.Option("--prompt", help=_PROMPT_HELP)]
MismatchOpt = Annotated[bool, typer.Option("--allow-caption-mismatch", help=_MISMATCH_HELP)]
PredictViewsOpt = Annotated[int | None, typer.Option("--views", help=_VIEWS_HELP)]
ForwardBatchOpt = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")
]

# --- predict ------------------------------------------------------------------------------------

InputsArg = Annotated[
    list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")
]
PredictOutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Output file: .jsonl or .csv (appended to; resumes).")
]
GivenCaptionsOpt = Annotated[
    Path | None,
    typer.Option(
        "--captions",
        help="Captions to use (caption store JSONL, JSONL/CSV of path,caption, text/ tree).",
    ),
]
TopKOpt = Annotated[int, typer.Option("--top-k", "-k", min=1, help="Labels per image.")]
PredictClassesOpt = Annotated[
    str | None,
    typer.Option(
        "--classes",
        help="Zero-shot bundles: comma-separated class names to score, e.g. 'port,golf course'.",
    ),
]
PredictDeviceOpt = Annotated[str, typer.Option("--device", help="torch device: cpu, cuda, cuda:1.")]
BundleImageEncoderOpt = Annotated[
    str | None,
    typer.Option("--image-encoder", help="Override the bundle's image encoder name/folder."),
]
BundleTextEncoderOpt = Annotated[
    str | None,
    typer.Option("--text-encoder", help="Override the bundle's text encoder name/folder."),
]

# --- explain and export -------------------------------------------------------------------------

ExplainPathArg = Annotated[
    Path,
    typer.Argument(help="An image, a folder of images, or a scene folder (class sub-folders)."),
]
ExplainOutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Folder for the PNGs and explain.json.")
]
ExplainCaptionsOpt = Annotated[
    Path | None, typer.Option("--captions", help="Captions to use (as for predict).")
]
SampleLimitOpt = Annotated[
    int,
    typer.Option(
        "--limit",
        min=1,
        help="Images sampled (round-robin over classes) for t-SNE and confusion.",
    ),
]
ExamplesOpt = Annotated[
    int, typer.Option("--examples", min=0, help="Images that get an attention figure.")
]
ExplainSeedOpt = Annotated[int, typer.Option("--seed", help="Sampling and t-SNE seed.")]
TorchDeviceOpt = Annotated[str, typer.Option("--device", help="torch device.")]
ImageEncoderOverrideOpt = Annotated[
    str | None, typer.Option("--image-encoder", help="Override the bundle's image encoder.")
]
TextEncoderOverrideOpt = Annotated[
    str | None, typer.Option("--text-encoder", help="Override the bundle's text encoder.")
]
ExportOutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Fusion model file (*.onnx); encoders and metadata go beside it.",
    ),
]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="Export format (onnx).")]
EncodersOpt = Annotated[
    bool,
    typer.Option("--encoders/--no-encoders", help="Also export the image and text encoders."),
]
OpsetOpt = Annotated[int, typer.Option("--opset", help="ONNX opset version.")]


def _predict_with_bar(prepared: PreparedPredict) -> PredictSummary:
    """Run under a progress bar that starts at what the output file already holds."""
    with progress() as bar:
        tasks: list[Any] = []

        def start(total: int, done: int) -> None:
            tasks.append(bar.add_task("predict", total=total, completed=done))

        def tick(n: int, s: PredictSummary) -> None:
            bar.update(tasks[0], advance=n, extra=f"{len(s.failed)} failed" if s.failed else "")

        return prepared.run(on_start=start, on_progress=tick)


def _print_predict_summary(summary: PredictSummary, out: Path) -> None:
    """Skipped files and failed captions on stderr (20 of each at most), the counts on stdout."""
    for key, reason in summary.failed[:20]:
        err_console.print(
            f"[yellow]skipped[/yellow] {key}: {reason}", highlight=False, soft_wrap=True
        )
    if len(summary.failed) > 20:
        err_console.print(f"... and {len(summary.failed) - 20} more skipped files")
    for key, reason in summary.caption_failed[:20]:
        err_console.print(f"[red]no caption[/red] {key}: {reason}", highlight=False, soft_wrap=True)
    console.print(
        f"{summary.predicted} predicted, {summary.already_done} already in {out},"
        f" {len(summary.failed)} skipped (unreadable), {summary.captioned} captioned on the fly,"
        f" {summary.image_only} image-only, {summary.mismatched} with caption_mismatch,"
        f" {len(summary.caption_failed)} failed captions (error records; rerun to retry)",
        highlight=False,
        soft_wrap=True,
    )


def _print_explain_summary(prepared: PreparedExplain, summary: Any) -> None:
    """Skipped files and a missing-attention note on stderr, the files written on stdout."""
    for key, reason in summary.failed[:10]:
        err_console.print(
            f"[yellow]skipped[/yellow] {key}: {reason}", highlight=False, soft_wrap=True
        )
    if prepared.lacks_attention(summary):
        err_console.print(
            f"no attention figures: the {prepared.model_kind} model has no cross-attention to show"
            " (dual, t2i and i2t have)",
            highlight=False,
            soft_wrap=True,
        )
    oa = f", OA on the sample {100 * summary.oa:.1f} %" if summary.oa is not None else ""
    console.print(f"{summary.images} images explained{oa}; wrote:", highlight=False, soft_wrap=True)
    for f in summary.files:
        console.print(f"  {f}", highlight=False, soft_wrap=True)


@friendly_errors
def predict_cmd(
    model_dir: ModelDirArg,
    inputs: InputsArg,
    out: PredictOutOpt,
    captions: GivenCaptionsOpt = None,
    backend: CaptionerOpt = None,
    vlm_model: VlmModelOpt = None,
    base_url: VlmBaseUrlOpt = None,
    prompt: CaptionPromptOpt = None,
    allow_mismatch: MismatchOpt = False,
    top_k: TopKOpt = 5,
    batch_size: ForwardBatchOpt = 16,
    classes: PredictClassesOpt = None,
    device: PredictDeviceOpt = "cpu",
    views: PredictViewsOpt = None,
    image_encoder: BundleImageEncoderOpt = None,
    text_encoder: BundleTextEncoderOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Predict the scene class of images into a JSONL or CSV file.

    Each record has `path` (relative to a given folder), `top_k` ([{label, prob}], best first),
    `caption`, `caption_source` ("given" from --captions, the captioner's id, or "none" for an
    image-only prediction) and `caption_mismatch` (the caption is of another kind than the
    model's training captions). Missing captions come from the model's training caption source;
    a caption that fails is a record with `error`, retried by the next run. Corrupt files are
    reported and skipped; re-running the same command resumes.
    """
    set_quiet(quiet)
    from skyfuse.inference.job import CaptionChoice, PredictJob, prepare_predict

    choice = CaptionChoice(captions, backend, vlm_model, base_url, prompt, allow_mismatch)
    job = PredictJob(
        model_dir=model_dir,
        inputs=inputs,
        out=out,
        caption=choice,
        top_k=top_k,
        batch_size=batch_size,
        classes=classes,
        device=device,
        views=views,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
    )
    prepared = prepare_predict(job)
    if prepared.plan.note:
        err_console.print(prepared.plan.note, highlight=False, soft_wrap=True)
    summary = _predict_with_bar(prepared)
    _print_predict_summary(summary, out)
    if summary.caption_failed:
        raise typer.Exit(1)


@friendly_errors
def explain_cmd(
    model_dir: ModelDirArg,
    path: ExplainPathArg,
    out: ExplainOutOpt,
    captions: ExplainCaptionsOpt = None,
    backend: CaptionerOpt = None,
    vlm_model: VlmModelOpt = None,
    base_url: VlmBaseUrlOpt = None,
    prompt: CaptionPromptOpt = None,
    allow_mismatch: MismatchOpt = False,
    limit: SampleLimitOpt = 300,
    examples: ExamplesOpt = 6,
    seed: ExplainSeedOpt = 0,
    batch_size: ForwardBatchOpt = 16,
    device: TorchDeviceOpt = "cpu",
    image_encoder: ImageEncoderOverrideOpt = None,
    text_encoder: TextEncoderOverrideOpt = None,
) -> None:
    """Show why the model decides: attention overlays, a t-SNE map and a confusion matrix.

    Writes OUT/attention/*.png (which image regions the caption's words attend to, and which
    words the regions attend to), OUT/tsne.png (fused features coloured by class), and for a
    scene folder whose classes the model knows OUT/confusion.png + confusion.json; per-image
    predictions go to OUT/explain.json.
    """
    from skyfuse.inference.job import CaptionChoice, ExplainJob, prepare_explain

    choice = CaptionChoice(captions, backend, vlm_model, base_url, prompt, allow_mismatch)
    job = ExplainJob(
        model_dir=model_dir,
        path=path,
        out=out,
        caption=choice,
        limit=limit,
        examples=examples,
        seed=seed,
        batch_size=batch_size,
        device=device,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
    )
    prepared = prepare_explain(job)
    with progress() as bar:
        task = bar.add_task("explain", total=None)
        summary = prepared.run(on_progress=lambda n: bar.update(task, advance=n))
    _print_explain_summary(prepared, summary)


@friendly_errors
def export_cmd(
    model_dir: ModelDirArg,
    out: ExportOutOpt,
    fmt: FormatOpt = "onnx",
    encoders: EncodersOpt = True,
    opset: OpsetOpt = 17,
    image_encoder: ImageEncoderOverrideOpt = None,
    text_encoder: TextEncoderOverrideOpt = None,
) -> None:
    """Export a bundle for deployment without skyfuse (onnxruntime).

    OUT holds the fusion model over encoder tokens: inputs image_tokens (B,N,Di) float32,
    image_mask (B,N) bool, text_tokens (B,L,Dt) float32, text_mask (B,L) bool (True = real
    token); outputs logits and fused. With --encoders, OUT's stem gets .image_encoder.onnx
    (normalised pixels -> tokens, mask, pooled), .text_encoder.onnx (input_ids, attention_mask
    -> tokens, mask, pooled) and a .tokenizer folder; OUT.json records class names, input
    names and preprocessing. Every graph is compared with torch on random inputs (<= 1e-4).
    """
    from skyfuse.export.job import ExportJob, prepare_export

    job = ExportJob(
        model_dir=model_dir,
        out=out,
        fmt=fmt,
        encoders=encoders,
        opset=opset,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
    )
    prepared = prepare_export(job)
    with console.status("exporting and checking against torch..."):
        report = prepared.run()
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


def register(app: typer.Typer) -> None:
    """Add `predict`, `explain` and `export` to the main application."""
    app.command("predict")(predict_cmd)
    app.command("explain")(explain_cmd)
    app.command("export")(export_cmd)


__all__ = [
    "MODEL_DIR_HELP",
    "CaptionPromptOpt",
    "CaptionerOpt",
    "MismatchOpt",
    "ModelDirArg",
    "PredictViewsOpt",
    "VlmBaseUrlOpt",
    "VlmModelOpt",
    "explain_cmd",
    "export_cmd",
    "predict_cmd",
    "register",
]
