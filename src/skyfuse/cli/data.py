"""Dataset verbs: `skyfuse datasets list|info|check|synth|fetch` and `skyfuse split`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from skyfuse.cli.common import console, friendly_errors, progress

if TYPE_CHECKING:
    from skyfuse.data.check import CheckReport

datasets_app = typer.Typer(
    name="datasets",
    help="Known datasets, folder checks and synthetic scenes.",
    no_args_is_help=True,
)


@datasets_app.command("list")
@friendly_errors
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON."),
) -> None:
    """List the datasets skyfuse knows: classes, images, image size, protocols, download."""
    from rich.table import Table

    from skyfuse.data.catalog import get_dataset, list_datasets

    infos = [get_dataset(n) for n in list_datasets()]
    if as_json:
        rows = [
            {
                "name": i.name,
                "title": i.title,
                "classes": len(i.classes),
                "images": i.total,
                "image_size": list(i.image_size),
                "protocols": list(i.protocols),
                "url": i.url,
                "homepage": i.homepage,
            }
            for i in infos
        ]
        typer.echo(json.dumps(rows, indent=1))
        return
    table = Table(title="known datasets (skyfuse datasets info NAME for details)")
    for col in ("name", "title", "classes", "images", "size", "protocols", "download"):
        table.add_column(col)
    for i in infos:
        table.add_row(
            i.name,
            i.title,
            str(len(i.classes)),
            f"{i.total:,}",
            f"{i.image_size[0]}x{i.image_size[1]}",
            ", ".join(i.protocols),
            "direct" if i.url else "manual",
        )
    console.print(table)


@datasets_app.command("info")
@friendly_errors
def info_cmd(
    name: str = typer.Argument(..., help="Dataset name, e.g. aid, nwpu, whu-rs19."),
) -> None:
    """Show one dataset: classes with expected counts and spellings, source, citation, licence."""
    from skyfuse.data.catalog import get_dataset

    info = get_dataset(name)
    console.print(f"[bold]{info.title}[/bold] ({info.name})", highlight=False)
    console.print(
        f"{len(info.classes)} classes, {info.total:,} images,"
        f" {info.image_size[0]}x{info.image_size[1]} px; protocols: {', '.join(info.protocols)}",
        highlight=False,
    )
    for c in info.classes:
        alias = ", ".join(a for a in c.aliases if " " in a)[:80]
        console.print(f"  {c.name:<28} {c.count!s:>5}  {alias}", highlight=False)
    console.print(f"homepage: {info.homepage}", highlight=False)
    checksum = (
        f"sha256 {info.sha256}"
        if info.sha256
        else f"md5 {info.md5}"
        if info.md5
        else "none published"
    )
    console.print(f"download: {info.url or 'manual (see homepage)'}; checksum: {checksum}")
    console.print(f"citation: {info.citation}", highlight=False)
    console.print(f"licence: {info.licence}", highlight=False)
    if info.notes:
        console.print(f"notes: {info.notes}", highlight=False)


def _print_report(report: CheckReport) -> None:
    from rich.table import Table

    tag = " [magenta](SYNTHETIC scenes)[/magenta]" if report.synthetic else ""
    console.print(
        f"[bold]{report.image_root}[/bold] ({report.layout} layout){tag}", highlight=False
    )
    table = Table(show_header=True)
    table.add_column("class")
    table.add_column("images", justify="right")
    cmp = report.dataset
    if cmp is not None:
        table.add_column(f"expected ({cmp.dataset})", justify="right")
    for name, n in report.classes.items():
        row = [name, str(n)]
        if cmp is not None:
            from skyfuse.data.catalog import get_dataset

            cls = get_dataset(cmp.dataset).find_class(name)
            expected = "" if cls is None or cls.count is None else str(cls.count)
            differs = cmp.exact and expected and expected != str(n)
            mark = " [yellow]≠[/yellow]" if differs else ""
            row.append(expected + mark)
        table.add_row(*row)
    console.print(table)
    console.print(
        f"{report.total} usable images in {sum(1 for v in report.classes.values() if v)} classes;"
        f" {len(report.corrupt)} corrupt or unreadable; {len(report.duplicates)} duplicate group(s);"
        f" checked in {report.seconds:.1f} s ({report.workers} {report.executor} workers)",
        highlight=False,
    )
    if report.sizes:
        s = report.sizes
        common = ", ".join(f"{k} ({v})" for k, v in s["most_common"][:3])
        console.print(
            f"sizes: {s['distinct']} distinct, min {s['min'][0]}x{s['min'][1]},"
            f" max {s['max'][0]}x{s['max'][1]}; most common {common}",
            highlight=False,
        )
    if report.captions is not None:
        console.print(f"captions: {report.captions} of {report.total + len(report.corrupt)}")
    if cmp is not None:
        if cmp.complete:
            console.print(
                f"[green]matches {cmp.title}: all classes and counts as published[/green]"
            )
        elif not cmp.exact:
            console.print(
                f"classes are a subset of {cmp.title} ({len(report.classes)} of"
                f" {len(report.classes) + len(cmp.missing_classes)})",
                highlight=False,
            )
        else:
            console.print(
                f"[yellow]{cmp.title}: {len(cmp.count_mismatches)} class count(s) differ from the"
                " published ones[/yellow]"
            )
    for w in report.warnings[:20]:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    if len(report.warnings) > 20:
        console.print(f"... and {len(report.warnings) - 20} more warnings (use --json for all)")


@datasets_app.command("check")
@friendly_errors
def check_cmd(
    path: Path = typer.Argument(
        ..., help="Scene folder: PATH/<class>/<image> or the paper layout."
    ),
    name: str | None = typer.Option(
        None, "--name", "-n", help="Compare with this registry dataset (default: match by classes)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object (classes, total, corrupt, ...) to stdout."
    ),
    workers: int | None = typer.Option(
        None, "--workers", "-w", min=1, help="Parallel decoders (default: CPU count, at most 8)."
    ),
    executor: str = typer.Option("thread", help="Pool kind: thread (default) or process."),
    max_pixels: int | None = typer.Option(
        None, help="Refuse images with more pixels than this (decompression bombs)."
    ),
) -> None:
    """Decode every image; report per-class counts, corrupt files, duplicates and image sizes.

    Exits 0 when the folder is usable for classification (at least two classes with readable images), even if some files were skipped; 1 when it is not.
    """
    from skyfuse.data.check import check_folder
    from skyfuse.data.images import DEFAULT_MAX_PIXELS

    with progress(transient=True) as bar:
        task = bar.add_task("decoding", total=None)

        def on_start(n: int) -> None:
            bar.update(task, total=n)

        bad = 0

        def on_result(res: object) -> None:
            nonlocal bad
            bad += 0 if getattr(res, "ok", True) else 1
            bar.update(task, advance=1, extra=f"{bad} bad" if bad else "")

        report = check_folder(
            path,
            name=name,
            workers=workers,
            executor=executor,
            max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
            on_start=on_start,
            on_result=on_result,
        )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=1, ensure_ascii=False))
    else:
        _print_report(report)
    if not report.usable:
        from skyfuse.cli.common import err_console

        err_console.print(
            f"[bold red]error:[/bold red] {report.image_root}: not usable for classification"
            " (needs at least two classes with readable images); fix the files listed above",
            highlight=False,
        )
        raise typer.Exit(1)


@datasets_app.command("synth")
@friendly_errors
def synth_cmd(
    out: Path = typer.Argument(..., help="Folder to write (created; existing files are replaced)."),
    per_class: int = typer.Option(40, "--per-class", min=1, help="Images per class."),
    size: int = typer.Option(128, min=16, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Random seed; the same seed writes the same images."),
    classes: str | None = typer.Option(
        None, help="Comma-separated subset of the synthetic classes (default: all)."
    ),
    image_format: str = typer.Option("jpg", "--format", help="jpg or png."),
) -> None:
    """Write procedurally drawn aerial-like scenes as a plain scene folder (marked SYNTHETIC.md).

    For the offline demo and tests only: results on these images say nothing about real data.
    """
    from skyfuse.data.synthetic import SYNTHETIC_CLASSES, make_synthetic_dataset

    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    root = make_synthetic_dataset(
        out, per_class=per_class, size=size, seed=seed, classes=names, image_format=image_format
    )
    n = len(names or SYNTHETIC_CLASSES)
    console.print(
        f"wrote {n * per_class} synthetic images ({n} classes x {per_class}, {size} px) to {root}",
        highlight=False,
    )


@datasets_app.command("fetch")
@friendly_errors
def fetch_cmd(
    name: str = typer.Argument(..., help="Registry dataset name (see `skyfuse datasets list`)."),
    root: Path = typer.Argument(..., help="Folder that holds (or will hold) the dataset."),
    download: bool = typer.Option(
        False,
        "--download",
        help="Download when absent and a public URL exists (checksum-verified).",
    ),
) -> None:
    """Locate a dataset under ROOT and check it is complete; optionally download it first."""
    from skyfuse.data.download import fetch_dataset

    with progress(transient=True) as bar:
        task = bar.add_task("download", total=None)

        def hook(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        images = fetch_dataset(name, root, download=download, on_progress=hook)
    console.print(f"complete: {images}", highlight=False)


def split_cmd(
    path: Path = typer.Argument(..., help="Scene folder to split."),
    protocol: str | None = typer.Option(
        None, "--protocol", "-p", help="Named ratio protocol: aid-20, ucm-80, nwpu-10, whu-60, ..."
    ),
    train: float | None = typer.Option(
        None, "--train", help="Training fraction per class instead of a protocol, e.g. 0.8."
    ),
    val: float = typer.Option(
        0.1, "--val", help="Fraction of each class's training part held out for validation."
    ),
    seed: int = typer.Option(0, "--seed", "-s", help="Random seed."),
    out: Path = typer.Option(Path("split.json"), "--out", "-o", help="Where to write the JSON."),
    verify: Path | None = typer.Option(
        None, "--verify", help="Instead of splitting, check that this split JSON still fits PATH."
    ),
) -> None:
    """Make a stratified, seeded train/val/test split (val carved from train) and save it as JSON.

    With --verify SPLIT.json, check instead that PATH is still the folder the split was made from.
    """
    from skyfuse.data.folder import SceneFolder
    from skyfuse.data.splits import Split, list_protocols, make_split

    if verify is not None:
        Split.load(verify).verify(SceneFolder(path))
        console.print(f"{verify}: matches {path}", highlight=False)
        return
    if protocol is None and train is None:
        from skyfuse.cli.common import fail

        fail(f"give --protocol ({', '.join(list_protocols())}) or --train FRACTION")
    folder = SceneFolder(path)
    split = make_split(folder, protocol=protocol, train=train, val=val, seed=seed)
    if protocol is not None:
        from skyfuse.cli.common import err_console
        from skyfuse.data.catalog import match_dataset
        from skyfuse.data.splits import get_protocol

        proto = get_protocol(protocol)
        matched = match_dataset(folder.classes)
        if matched is None or matched.name != proto.dataset:
            err_console.print(
                f"[yellow]warning:[/yellow] {proto.name} is the {proto.dataset} protocol but the"
                f" classes of {path} do not match {proto.dataset}; only its ratio"
                f" ({proto.train:g}) is used",
                highlight=False,
            )
    split.save(out)
    n = {p: len(split.part(p)) for p in ("train", "val", "test")}
    dup = split.extra.get("duplicates") or {}
    console.print(
        f"wrote {out}: {len(split.classes)} classes, train {n['train']}, val {n['val']},"
        f" test {n['test']} (protocol {split.protocol or f'train={split.train_ratio}'}, seed {seed})"
        + (
            f"; {dup['groups']} group(s) of byte-identical images kept in one part each,"
            f" {dup['moved_groups']} moved"
            if dup
            else ""
        ),
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add `datasets` (group) and `split` to the main application."""
    app.add_typer(datasets_app, name="datasets")
    app.command("split")(friendly_errors(split_cmd))
