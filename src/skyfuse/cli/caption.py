"""`skyfuse caption` and the `skyfuse captions` group (merge, audit, prompts, stub-server).

The commands parse options into a `CaptionJob` (skyfuse.captioning.job) and print what it did; the
backend choice and the audit live in the library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from skyfuse.cli.common import console, err_console, friendly_errors, set_quiet
from skyfuse.cli.options import QuietOpt

if TYPE_CHECKING:
    from skyfuse.captioning.job import AuditRun

BACKEND_HELP = (
    "openai (any OpenAI-compatible server: vLLM, Ollama, LM Studio, llama.cpp, OpenAI), "
    "transformers (local VLM folder or hub id), files (import existing captions, needs --source), "
    "attributes (offline pixel statistics, not a VLM). Default: files with --source, transformers "
    "when --model is a local folder, openai when --model/--base-url/OPENAI_BASE_URL is set, "
    "otherwise attributes."
)
_SOURCE_HELP = (
    "files backend: captions to import (JSONL, CSV, text/ tree, *_caps.txt folder, dataset.json)."
)

# --- caption ------------------------------------------------------------------------------------

FolderArg = Annotated[Path, typer.Argument(help="Scene folder (<class>/<image> or paper layout).")]
StoreOutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Caption store (JSONL); an existing one is resumed.")
]
BackendOpt = Annotated[str | None, typer.Option("--backend", "-b", help=BACKEND_HELP)]
VlmOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="VLM name on the server, or hub id / local folder."),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option("--base-url", help="OpenAI-compatible endpoint, e.g. http://host:8000/v1."),
]
PromptOpt = Annotated[
    str,
    typer.Option("--prompt", "-p", help="Prompt id (ground, paper) or a text file with your own."),
]
ConcurrencyOpt = Annotated[
    int,
    typer.Option("--concurrency", "-c", help="Requests in flight (openai) / worker threads."),
]
ShardOpt = Annotated[
    str | None,
    typer.Option("--shard", help="i/n: caption only shard i of n (zero-based), e.g. 0/4."),
]
LimitOpt = Annotated[
    int | None, typer.Option("--limit", help="Caption at most N images (of this shard).")
]
SourceOpt = Annotated[Path | None, typer.Option("--source", help=_SOURCE_HELP)]
ApiKeyEnvOpt = Annotated[
    str | None,
    typer.Option("--api-key-env", help="Env var holding the API key (default OPENAI_API_KEY)."),
]
MaxTokensOpt = Annotated[
    int | None, typer.Option("--max-tokens", help="Longest caption, in tokens.")
]
TemperatureOpt = Annotated[
    float | None, typer.Option("--temperature", help="Sampling temperature.")
]
SamplingSeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Sampling seed, where the backend has one.")
]
MaxSideOpt = Annotated[
    int | None,
    typer.Option("--max-side", help="Downscale images so the longer side is at most N px."),
]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", help="openai: read timeout (s).")]
RetriesOpt = Annotated[int | None, typer.Option("--retries", help="openai: retries per image.")]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="transformers: cpu, cuda, cuda:1, mps.")
]
DtypeOpt = Annotated[
    str | None, typer.Option("--dtype", help="transformers: float32, bfloat16, float16.")
]
VlmBatchOpt = Annotated[
    int | None, typer.Option("--batch-size", help="transformers: images per batch.")
]

# --- captions merge / audit / status / stub-server ----------------------------------------------

StoresArg = Annotated[list[Path], typer.Argument(help="Stores to combine (e.g. one per shard).")]
MergedOutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Merged store to write (atomically).")
]
AuditSourceArg = Annotated[
    Path, typer.Argument(help="Captions: store JSONL, JSONL/CSV, text/ tree, ...")
]
AuditDatasetOpt = Annotated[
    Path | None,
    typer.Option("--dataset", "-d", help="Scene folder giving each image's class."),
]
MaskOpt = Annotated[
    Path | None,
    typer.Option(
        "--mask", help="Write a JSONL copy with class words masked and verdict sentences removed."
    ),
]
JsonOutOpt = Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON.")]
TokenOpt = Annotated[str, typer.Option("--token", help="Replacement for class words in --mask.")]
StoreArg = Annotated[Path, typer.Argument(help="Caption store (JSONL).")]
StatusDatasetOpt = Annotated[
    Path | None,
    typer.Option("--dataset", "-d", help="Scene folder: also count its images without a caption."),
]
PortOpt = Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")]
LatencyOpt = Annotated[float, typer.Option("--latency", help="Seconds per request.")]

captions_app = typer.Typer(
    name="captions",
    help="Work with caption stores: status, merge shards, audit class-name leakage, list prompts.",
    no_args_is_help=True,
)


@friendly_errors
def caption(
    path: FolderArg,
    out: StoreOutOpt = Path("captions.jsonl"),
    backend: BackendOpt = None,
    model: VlmOpt = None,
    base_url: BaseUrlOpt = None,
    prompt: PromptOpt = "ground",
    concurrency: ConcurrencyOpt = 8,
    shard: ShardOpt = None,
    limit: LimitOpt = None,
    source: SourceOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
    seed: SamplingSeedOpt = None,
    max_side: MaxSideOpt = None,
    timeout: TimeoutOpt = None,
    retries: RetriesOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    batch_size: VlmBatchOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Caption every image of a scene folder into a resumable JSONL store.

    Re-running the same command skips what is done and retries failures. The exit status is 0 only when every image (of the shard) has a caption.
    """
    set_quiet(quiet)
    fields = dict(locals())  # the parameters are CaptionJob's fields, name for name (bar --quiet)
    del fields["quiet"]
    from skyfuse.captioning.job import CaptionJob, run_caption_job

    job = CaptionJob(**fields)
    captioner = job.build_captioner()
    if job.falls_back:
        err_console.print(
            "no VLM configured (--model/--base-url): using the offline attribute"
            " captioner (pixel statistics, not a VLM)"
        )
    summary = run_caption_job(job, captioner, progress=True)
    console.print(
        f"{summary.out}: {summary.captioned} captioned, {summary.skipped} already done,"
        f" {summary.failed} failed of {summary.total} ({job.backend_name},"
        f" {summary.elapsed_s:.1f} s, {summary.rate:.2f} images/s)"
    )
    for rel, reason in (summary.failures + summary.unreadable)[:10]:
        err_console.print(f"  failed {rel}: {reason}", highlight=False)
    if not summary.complete:
        err_console.print("not every image has a caption; run the same command again to retry")
        raise typer.Exit(1)


@friendly_errors
def merge(stores: StoresArg, out: MergedOutOpt) -> None:
    """Combine caption stores; report duplicates and conflicts (the newest record wins)."""
    from skyfuse.captioning import merge_stores

    r = merge_stores(stores, out)
    console.print(
        f"{out}: {r.records_out} records from {r.records_in} in {len(r.inputs)} stores;"
        f" {r.duplicates} duplicates, {len(r.conflicts)} conflicts,"
        f" {r.failures_kept} images still failed"
    )
    for c in r.conflicts[:10]:
        console.print(
            f"  conflict {c.path} ({c.model}, {c.prompt_id}): {c.reason}; kept the newest",
            highlight=False,
        )


def _print_audit(run: AuditRun, source: Path) -> None:
    """The per-class leakage table, the totals line and the most shared captions."""
    from rich.table import Table

    report = run.report
    table = Table(title=f"class-name leakage in {source.name}")
    for col in ("class", "captions", "name own class", "verdict sentence", "other classes named"):
        table.add_column(col)
    for name, c in report.per_class.items():
        if not c.n:
            continue
        others = ", ".join(f"{k} {v}" for k, v in c.other_classes.most_common(3))
        table.add_row(
            name,
            str(c.n),
            f"{c.self_named} ({c.self_rate:.0%})",
            f"{c.verdicts} ({c.verdicts / c.n:.0%})",
            others or "-",
        )
    console.print(table)
    n = max(report.n, 1)
    console.print(
        f"{report.self_named}/{report.n} captions ({report.self_named / n:.0%}) name their own"
        f" class; {report.verdicts} hold a verdict sentence; {report.shared_images} images"
        f" ({report.shared_images / n:.0%}) share a caption word for word with another image"
        f" ({len(report.duplicate_groups)} groups, {report.cross_class_groups} across classes)"
    )
    for cap, rels in report.duplicate_groups[:3]:
        console.print(f"  x{len(rels)}: {cap[:90]!r}", highlight=False)


@friendly_errors
def audit(
    source: AuditSourceArg,
    dataset: AuditDatasetOpt = None,
    mask: MaskOpt = None,
    json_out: JsonOutOpt = None,
    token: TokenOpt = "[MASK]",
) -> None:
    """Class-name leakage: per class, how many captions name their own class, hold a verdict sentence ("... can be classified as ...") or name other classes; and captions shared word for word by several images."""
    from skyfuse.captioning.job import audit_source, write_masked

    run = audit_source(source, dataset)
    if run.widened:
        console.print(
            f"other-class mentions checked against all {len(run.class_names)} classes of"
            f" {run.registry}"
        )
    _print_audit(run, source)
    if json_out is not None:
        json_out.write_text(json.dumps(run.report.to_dict(), indent=2), encoding="utf-8")
    if mask is not None:
        n = write_masked(run.captions, run.class_names, mask, token=token)
        console.print(f"{mask}: {n} masked captions")


@friendly_errors
def status(store: StoreArg, dataset: StatusDatasetOpt = None) -> None:
    """What a store holds: captions per backend / model / prompt, failures still to retry, and (with --dataset) images with no caption yet. Exit status 1 when something is missing."""
    from skyfuse.captioning.job import store_status

    st = store_status(store)
    for (backend, model, prompt), n in st.per_source.most_common():
        console.print(f"{n} captions: {backend} / {model} / prompt {prompt}", highlight=False)
    console.print(
        f"{len(st.captioned)} images captioned, {len(st.failed)} failed (retried by the next run)"
    )
    for rel, reason in list(st.failed.items())[:10]:
        console.print(f"  failed {rel}: {reason}", highlight=False)
    missing = 0
    if dataset is not None:
        missing, total = st.missing_in(dataset)
        console.print(f"{dataset}: {total - missing} of {total} images have a caption")
    if st.failed or missing:
        raise typer.Exit(1)


def prompts() -> None:
    """List the built-in prompts (use --prompt ID, or --prompt FILE for your own)."""
    from skyfuse.captioning import builtin_prompts

    for pid, p in builtin_prompts().items():
        console.print(f"[bold]{pid}[/bold] ({p.hash}): {p.text}", highlight=False)


def stub_server(port: PortOpt = 8000, latency: LatencyOpt = 0.2) -> None:
    """Run a fake OpenAI-compatible VLM (deterministic captions) to dry-run a captioning job."""
    from skyfuse.captioning.stub import main

    main(["--port", str(port), "--latency", str(latency)])


captions_app.command("merge")(merge)
captions_app.command("audit")(audit)
captions_app.command("status")(status)
captions_app.command("prompts")(prompts)
captions_app.command("stub-server")(stub_server)


def register(app: typer.Typer) -> None:
    """Add `caption` and the `captions` group to the main application."""
    app.add_typer(captions_app, name="captions")
    app.command("caption")(caption)


__all__ = ["BACKEND_HELP", "caption", "register"]
