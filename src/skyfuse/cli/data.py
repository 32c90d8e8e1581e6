"""Dataset verbs: `skyfuse datasets list|info|check|synth|fetch` and `skyfuse split`.

The commands parse options, call skyfuse.data (`check_folder`, `run_split`, ...) and print the
result; what a split needs and when a protocol does not fit the folder is decided there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from skyfuse.cli.common import console, friendly_errors, progress, set_quiet
from skyfuse.cli.options import QuietOpt

if TYPE_CHECKING:
    from rich.table import Table

    from skyfuse.data.check import CheckReport

JsonListOpt = Annotated[bool, typer.Option("--json", help="Print the registry as JSON.")]
DatasetNameArg = Annotated[str, typer.Argument(help="Dataset name, e.g. aid, nwpu, whu-rs19.")]
CheckPathArg = Annotated[
    Path, typer.Argument(help="Scene folder: PATH/<class>/<image> or the paper layout.")
]
CompareNameOpt = Annotated[
    str | None,
    typer.Option(
        "--name", "-n", help="Compare with this registry dataset (default: match by classes)."
    ),
]
JsonReportOpt = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON object (classes, total, corrupt, ...) to stdout."),
]
DecodeWorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers", "-w", min=1, help="Parallel decoders (default: CPU count, at most 8)."
    ),
]
ExecutorOpt = Annotated[str, typer.Option(help="Pool kind: thread (default) or process.")]
MaxPixelsOpt = Annotated[
    int | None, typer.Option(help="Refuse images with more pixels than this (decompression bombs).")
]
SynthOutArg = Annotated[
    Path, typer.Argument(help="Folder to write (created; existing files are replaced).")
]
PerClassOpt = Annotated[int, typer.Option("--per-class", min=1, help="Images per class.")]
SizeOpt = Annotated[int, typer.Option(min=16, help="Image side in pixels.")]
SynthSeedOpt = Annotated[
    int, typer.Option(help="Random seed; the same seed writes the same images.")
]
SynthClassesOpt = Annotated[
    str | None,
    typer.Option(help="Comma-separated subset of the synthetic classes (default: all)."),
]
ImageFormatOpt = Annotated[str, typer.Option("--format", help="jpg or png.")]
RegistryNameArg = Annotated[
    str, typer.Argument(help="Registry dataset name (see `skyfuse datasets list`).")
]
RootArg = Annotated[Path, typer.Argument(help="Folder that holds (or will hold) the dataset.")]
DownloadOpt = Annotated[
    bool,
    typer.Option(
        "--download",
        help="Download when absent and a public URL exists (checksum-verified).",
    ),
]
SplitPathArg = Annotated[Path, typer.Argument(help="Scene folder to split.")]
SplitProtocolOpt = Annotated[
    str | None,
    typer.Option(
        "--protocol",
        "-p",
        help="Named ratio protocol: aid-20, ucm-80, nwpu-10, whu-60, ...",
    ),
]
SplitTrainOpt = Annotated[
    float | None,
    typer.Option("--train", help="Training fraction per class instead of a protocol, e.g. 0.8."),
]
SplitValOpt = Annotated[
    float,
    typer.Option("--val", help="Fraction of each class's training part held out for validation."),
]
SplitSeedOpt = Annotated[int, typer.Option("--seed", "-s", help="Random seed.")]
SplitOutOpt = Annotated[Path, typer.Option("--out", "-o", help="Where to write the JSON.")]
VerifyOpt = Annotated[
    Path | None,
    typer.Option(
        "--verify", help="Instead of splitting, check that this split JSON still fits PATH."
    ),
]

datasets_app = typer.Typer(
    name="datasets",
    help="Known datasets, folder checks and synthetic scenes.",
    no_args_is_help=True,
)


@datasets_app.command("list")
@friendly_errors
def list_cmd(as_json: JsonListOpt = False) -> None:
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
def info_cmd(name: DatasetNameArg) -> None:
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
    """The class table, the totals, image sizes, the registry comparison and warnings."""
    tag = " [magenta](SYNTHETIC scenes)[/magenta]" if report.synthetic else ""
    console.print(
        f"[bold]{report.image_root}[/bold] ({report.layout} layout){tag}", highlight=False
    )
    console.print(_class_table(report))
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
    _print_comparison(report)
    for w in report.warnings[:20]:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    if len(report.warnings) > 20:
        console.print(f"... and {len(report.warnings) - 20} more warnings (use --json for all)")


def _class_table(report: CheckReport) -> Table:
    """Images per class, beside the published counts when the folder matched a registry dataset."""
    from rich.table import Table

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
    return table


def _print_comparison(report: CheckReport) -> None:
    """One line on how the folder compares with the registry dataset it matched, if any."""
    cmp = report.dataset
    if cmp is None:
        return
    if cmp.complete:
        console.print(f"[green]matches {cmp.title}: all classes and counts as published[/green]")
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


@datasets_app.command("check")
@friendly_errors
def check_cmd(
    path: CheckPathArg,
    name: CompareNameOpt = None,
    as_json: JsonReportOpt = False,
    workers: DecodeWorkersOpt = None,
    executor: ExecutorOpt = "thread",
    max_pixels: MaxPixelsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Decode every image; report per-class counts, corrupt files, duplicates and image sizes.

    Exits 0 when the folder is usable for classification (at least two classes with readable images), even if some files were skipped; 1 when it is not.
    """
    set_quiet(quiet)
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
    out: SynthOutArg,
    per_class: PerClassOpt = 40,
    size: SizeOpt = 128,
    seed: SynthSeedOpt = 0,
    classes: SynthClassesOpt = None,
    image_format: ImageFormatOpt = "jpg",
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
def fetch_cmd(name: RegistryNameArg, root: RootArg, download: DownloadOpt = False) -> None:
    """Locate a dataset under ROOT and check it is complete; optionally download it first."""
    from skyfuse.data.download import fetch_dataset

    with progress(transient=True) as bar:
        task = bar.add_task("download", total=None)

        def hook(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        images = fetch_dataset(name, root, download=download, on_progress=hook)
    console.print(f"complete: {images}", highlight=False)


def split_cmd(
    path: SplitPathArg,
    protocol: SplitProtocolOpt = None,
    train: SplitTrainOpt = None,
    val: SplitValOpt = 0.1,
    seed: SplitSeedOpt = 0,
    out: SplitOutOpt = Path("split.json"),
    verify: VerifyOpt = None,
) -> None:
    """Make a stratified, seeded train/val/test split (val carved from train) and save it as JSON.

    With --verify SPLIT.json, check instead that PATH is still the folder the split was made from.
    """
    from skyfuse.data.folder import SceneFolder
    from skyfuse.data.splits import Split, SplitJob, run_split

    if verify is not None:
        Split.load(verify).verify(SceneFolder(path))
        console.print(f"{verify}: matches {path}", highlight=False)
        return
    result = run_split(SplitJob(path, protocol=protocol, train=train, val=val, seed=seed))
    if result.warning:
        from skyfuse.cli.common import err_console

        err_console.print(f"[yellow]warning:[/yellow] {result.warning}", highlight=False)
    split = result.split
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
