"""`skyfuse caption` and the `skyfuse captions` group (merge, audit, prompts, stub-server)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from skyfuse.cli.common import console, err_console, friendly_errors

BACKEND_HELP = (
    "openai (any OpenAI-compatible server: vLLM, Ollama, LM Studio, llama.cpp, OpenAI), "
    "transformers (local VLM folder or hub id), files (import existing captions, needs --source), "
    "attributes (offline pixel statistics, not a VLM). Default: files with --source, transformers "
    "when --model is a local folder, openai when --model/--base-url/OPENAI_BASE_URL is set, "
    "otherwise attributes."
)


def pick_backend(
    backend: str | None, model: str | None, base_url: str | None, source: Path | None
) -> str:
    """The default backend: a VLM when one is configured, the attribute captioner otherwise."""
    if backend:
        return backend
    if source is not None:
        return "files"
    if model and Path(model).expanduser().is_dir():
        return "transformers"
    if model or base_url or os.environ.get("OPENAI_BASE_URL"):
        return "openai"
    return "attributes"


def backend_options(backend: str, **o: Any) -> dict[str, Any]:
    """CLI options -> keyword arguments of the chosen backend (unset ones keep its defaults)."""
    keep = {
        "openai": (
            "model",
            "base_url",
            "api_key_env",
            "max_tokens",
            "temperature",
            "seed",
            "read_timeout",
            "max_retries",
            "max_side",
        ),
        "transformers": (
            "model",
            "device",
            "dtype",
            "batch_size",
            "max_tokens",
            "temperature",
            "seed",
            "max_side",
        ),
        "files": ("source",),
        "attributes": (),
    }.get(backend.lower(), tuple(o))
    return {k: v for k, v in o.items() if k in keep and v is not None}


def register(app: typer.Typer) -> None:
    captions = typer.Typer(
        name="captions",
        help="Work with caption stores: status, merge shards, audit class-name leakage, list prompts.",
        no_args_is_help=True,
    )
    app.add_typer(captions, name="captions")

    @app.command("caption")
    @friendly_errors
    def caption(
        path: Path = typer.Argument(..., help="Scene folder (<class>/<image> or paper layout)."),
        out: Path = typer.Option(
            Path("captions.jsonl"),
            "--out",
            "-o",
            help="Caption store (JSONL); an existing one is resumed.",
        ),
        backend: str | None = typer.Option(None, "--backend", "-b", help=BACKEND_HELP),
        model: str | None = typer.Option(
            None, "--model", "-m", help="VLM name on the server, or hub id / local folder."
        ),
        base_url: str | None = typer.Option(
            None, "--base-url", help="OpenAI-compatible endpoint, e.g. http://host:8000/v1."
        ),
        prompt: str = typer.Option(
            "ground",
            "--prompt",
            "-p",
            help="Prompt id (ground, paper) or a text file with your own.",
        ),
        concurrency: int = typer.Option(
            8, "--concurrency", "-c", help="Requests in flight (openai) / worker threads."
        ),
        shard: str | None = typer.Option(
            None, "--shard", help="i/n: caption only shard i of n (zero-based), e.g. 0/4."
        ),
        limit: int | None = typer.Option(
            None, "--limit", help="Caption at most N images (of this shard)."
        ),
        source: Path | None = typer.Option(
            None,
            "--source",
            help="files backend: captions to import (JSONL, CSV, text/ "
            "tree, *_caps.txt folder, dataset.json).",
        ),
        api_key_env: str | None = typer.Option(
            None, "--api-key-env", help="Env var holding the API key (default OPENAI_API_KEY)."
        ),
        max_tokens: int | None = typer.Option(
            None, "--max-tokens", help="Longest caption, in tokens."
        ),
        temperature: float | None = typer.Option(
            None, "--temperature", help="Sampling temperature."
        ),
        seed: int | None = typer.Option(
            None, "--seed", help="Sampling seed, where the backend has one."
        ),
        max_side: int | None = typer.Option(
            None, "--max-side", help="Downscale images so the longer side is at most N px."
        ),
        timeout: float | None = typer.Option(None, "--timeout", help="openai: read timeout (s)."),
        retries: int | None = typer.Option(None, "--retries", help="openai: retries per image."),
        device: str | None = typer.Option(
            None, "--device", help="transformers: cpu, cuda, cuda:1, mps."
        ),
        dtype: str | None = typer.Option(
            None, "--dtype", help="transformers: float32, bfloat16, float16."
        ),
        batch_size: int | None = typer.Option(
            None, "--batch-size", help="transformers: images per batch."
        ),
    ) -> None:
        """Caption every image of a scene folder into a resumable JSONL store.

        Re-running the same command skips what is done and retries failures. The exit status is 0 only when every image (of the shard) has a caption.
        """
        from skyfuse.captioning import caption_folder, create_captioner, parse_shard

        name = pick_backend(backend, model, base_url, source)
        opts = backend_options(
            name,
            model=model,
            base_url=base_url,
            api_key_env=api_key_env,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            read_timeout=timeout,
            max_retries=retries,
            max_side=max_side,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            source=source,
        )
        captioner = create_captioner(name, **opts)
        if name == "attributes" and backend is None:
            err_console.print(
                "no VLM configured (--model/--base-url): using the offline attribute"
                " captioner (pixel statistics, not a VLM)"
            )
        summary = caption_folder(
            path,
            captioner,
            out,
            prompt=prompt,
            concurrency=concurrency,
            shard=parse_shard(shard) if shard else None,
            limit=limit,
            progress=True,
        )
        console.print(
            f"{summary.out}: {summary.captioned} captioned, {summary.skipped} already done,"
            f" {summary.failed} failed of {summary.total} ({name}, {summary.elapsed_s:.1f} s,"
            f" {summary.rate:.2f} images/s)"
        )
        for rel, reason in (summary.failures + summary.unreadable)[:10]:
            err_console.print(f"  failed {rel}: {reason}", highlight=False)
        if not summary.complete:
            err_console.print("not every image has a caption; run the same command again to retry")
            raise typer.Exit(1)

    @captions.command("merge")
    @friendly_errors
    def merge(
        stores: list[Path] = typer.Argument(..., help="Stores to combine (e.g. one per shard)."),
        out: Path = typer.Option(..., "--out", "-o", help="Merged store to write (atomically)."),
    ) -> None:
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

    @captions.command("audit")
    @friendly_errors
    def audit(
        source: Path = typer.Argument(
            ..., help="Captions: store JSONL, JSONL/CSV, text/ tree, ..."
        ),
        dataset: Path | None = typer.Option(
            None, "--dataset", "-d", help="Scene folder giving each image's class."
        ),
        mask: Path | None = typer.Option(
            None,
            "--mask",
            help="Write a JSONL copy with class words masked and verdict sentences removed.",
        ),
        json_out: Path | None = typer.Option(None, "--json", help="Write the full report as JSON."),
        token: str = typer.Option(
            "[MASK]", "--token", help="Replacement for class words in --mask."
        ),
    ) -> None:
        """Class-name leakage: per class, how many captions name their own class, hold a verdict sentence ("... can be classified as ...") or name other classes; and captions shared word for word by several images."""
        from rich.table import Table

        from skyfuse.captioning import audit_captions, load_captions, mask_captions

        caps = load_captions(source, dataset)
        if not caps:
            from skyfuse.errors import BadInputError

            raise BadInputError(
                f"{source}: no captions matched; check --dataset and the file names"
            )
        from skyfuse.captioning.audit import with_registry_classes

        class_of = None
        folder_classes = sorted({rel.split("/")[0] for rel in caps})
        if dataset is not None:
            from skyfuse.data.folder import SceneFolder

            folder = SceneFolder(dataset)
            class_of = {s.rel: s.class_name for s in folder.samples}
            folder_classes = folder.classes
        class_names, registry = with_registry_classes(folder_classes)
        if registry is not None and len(class_names) > len(folder_classes):
            console.print(
                f"other-class mentions checked against all {len(class_names)} classes of {registry}"
            )
        report = audit_captions(caps, class_of, class_names)
        table = Table(title=f"class-name leakage in {source.name}")
        for col in (
            "class",
            "captions",
            "name own class",
            "verdict sentence",
            "other classes named",
        ):
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
        if json_out is not None:
            json_out.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
        if mask is not None:
            masked = mask_captions(caps, class_names, token=token)
            with open(mask, "w", encoding="utf-8") as f:
                for rel, text in masked.items():
                    f.write(json.dumps({"path": rel, "caption": text, "masked": True}) + "\n")
            console.print(f"{mask}: {len(masked)} masked captions")

    @captions.command("status")
    @friendly_errors
    def status(
        store: Path = typer.Argument(..., help="Caption store (JSONL)."),
        dataset: Path | None = typer.Option(
            None, "--dataset", "-d", help="Scene folder: also count its images without a caption."
        ),
    ) -> None:
        """What a store holds: captions per backend / model / prompt, failures still to retry, and (with --dataset) images with no caption yet. Exit status 1 when something is missing."""
        from collections import Counter

        from skyfuse.captioning.store import is_store_record, latest_captions, read_records
        from skyfuse.errors import BadInputError

        recs = read_records(store)
        if not all(is_store_record(r) for r in recs):
            raise BadInputError(
                f"{store}: not a caption store (records need path, sha256, backend); give the JSONL"
                " written by `skyfuse caption`"
            )
        ok = Counter(
            (r["backend"], r["model"], r.get("prompt_id"))
            for r in recs
            if r.get("status", "ok") == "ok" and r.get("caption") is not None
        )
        done_paths = set(latest_captions(recs))
        failed = {
            str(r["path"]): str(r.get("error", "?"))
            for r in recs
            if r.get("status") == "error" and r["path"] not in done_paths
        }
        for (backend, model, prompt), n in ok.most_common():
            console.print(f"{n} captions: {backend} / {model} / prompt {prompt}", highlight=False)
        console.print(
            f"{len(done_paths)} images captioned, {len(failed)} failed (retried by the next run)"
        )
        for rel, reason in list(failed.items())[:10]:
            console.print(f"  failed {rel}: {reason}", highlight=False)
        missing = 0
        if dataset is not None:
            from skyfuse.data.folder import SceneFolder

            rels = [s.rel for s in SceneFolder(dataset).samples]
            missing = sum(1 for r in rels if r not in done_paths)
            console.print(f"{dataset}: {len(rels) - missing} of {len(rels)} images have a caption")
        if failed or missing:
            raise typer.Exit(1)

    @captions.command("prompts")
    def prompts() -> None:
        """List the built-in prompts (use --prompt ID, or --prompt FILE for your own)."""
        from skyfuse.captioning import builtin_prompts

        for pid, p in builtin_prompts().items():
            console.print(f"[bold]{pid}[/bold] ({p.hash}): {p.text}", highlight=False)

    @captions.command("stub-server")
    def stub_server(
        port: int = typer.Option(8000, "--port", help="Port on 127.0.0.1."),
        latency: float = typer.Option(0.2, "--latency", help="Seconds per request."),
    ) -> None:
        """Run a fake OpenAI-compatible VLM (deterministic captions) to dry-run a captioning job."""
        from skyfuse.captioning.stub import main

        main(["--port", str(port), "--latency", str(latency)])
