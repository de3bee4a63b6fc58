"""`reidbench data ...`: list, info, verify, download, prepare."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from reidbench import paths
from reidbench.cli.app import app, data_root_of

data_app = typer.Typer(help="Datasets: list, info, verify, download, prepare, synth.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data", help="Datasets: list, info, verify, download, prepare, synth.")

ROOT_HELP = "Data root holding the dataset's top folder, or that folder itself (default: configured)."


def resolve_root(ctx: typer.Context, root: Path | None) -> Path:
    if root is not None:
        return root.expanduser().absolute()
    return data_root_of(ctx)


def writable_root(ctx: typer.Context, root: Path | None) -> Path:
    """The data root a command installs into, refused up front when it is a file or read-only."""
    path = resolve_root(ctx, root)
    chosen_by = "--root" if root is not None else paths.data_root_chosen_by(path)
    return paths.check_folder(path, chosen_by, "data root")


@data_app.command("list")
def data_list(ctx: typer.Context, root: Path | None = typer.Option(None, "--root", help=ROOT_HELP),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Table of all datasets: missing / present / verified, location, counts."""
    from reidbench.data.registry import DATASETS
    from reidbench.data.verify import dataset_status

    base = resolve_root(ctx, root)
    rows = [dataset_status(name, base) for name in DATASETS]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title=f"datasets under {base}")
    for column in ("dataset", "status", "location", "train", "query", "gallery"):
        table.add_column(column)
    style = {"verified": "green", "present": "yellow", "missing": "dim", "broken": "red"}
    for row in rows:
        counts = row.get("counts", {})
        cells = ["{} img / {} ids".format(*counts[k][:2]) if k in counts else "-"
                 for k in ("train", "query", "gallery")]
        status = row["status"] + (" (synthetic)" if row.get("synthetic") else "")
        table.add_row(row["dataset"], f"[{style[row['status']]}]{status}", row["location"] or "-", *cells)
    Console().print(table)


@data_app.command("info")
def data_info(name: str = typer.Argument(..., help="Dataset name or alias."),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Statistics, sources, how to obtain it, protocol."""
    from dataclasses import asdict

    from reidbench.data.registry import get_dataset

    spec = get_dataset(name)
    if as_json:
        typer.echo(json.dumps(asdict(spec)))
        return
    console = Console()
    console.print(f"[bold]{spec.title}[/bold] ({spec.name}; aliases: {', '.join(spec.aliases)})")
    console.print(f"kind: {spec.kind}, input {spec.input_size[0]}x{spec.input_size[1]}, "
                  f"protocol: {spec.protocol}, folder: {' or '.join(spec.top_folders)}")
    table = Table(title="statistics (images / ids / cameras)"
                  + ("" if spec.stats_verified else " - as widely quoted, not verified"))
    for column in ("variant", "train", "query", "gallery"):
        table.add_column(column)
    for v in spec.variants:
        table.add_row(v.name, *[f"{s.images} / {s.ids} / {s.cams or '?'}" if s else "-"
                                for s in (v.train, v.query, v.gallery)])
    console.print(table)
    for archive in spec.archives:
        checksum = (f"sha256 {archive.sha256}" if archive.sha256 else
                    f"md5 {archive.md5}" if archive.md5 else "no published checksum")
        console.print(f"archive {archive.name} ({checksum}) {archive.note}")
        for source in archive.sources:
            console.print(f"  - {source.kind}: {source.value}", markup=False)
    console.print(f"access: {spec.access}")
    for note in spec.notes:
        console.print(f"note: {note}")


@data_app.command("verify")
def data_verify(ctx: typer.Context, name: str = typer.Argument(..., help="Dataset name or alias."),
                root: Path | None = typer.Option(None, "--root", help=ROOT_HELP),
                archive: Path | None = typer.Option(
                    None, "--archive", help="Also check this archive's checksum."),
                variant: str | None = typer.Option(
                    None, "--variant", help="e.g. detected / labeled (CUHK03)."),
                deep: bool = typer.Option(False, "--deep", help="Decode every image (slow; a progress bar), "
                                          "not only a sample; every file's size and markers are always checked."),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Check layout, per-split counts, every file (size, format markers), a decode sample, the checksum."""
    from reidbench.data.verify import verify_dataset

    report = verify_dataset(name, resolve_root(ctx, root), variant=variant, archive=archive, deep=deep,
                            progress=not as_json)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        table = Table(title=f"verify {report.dataset}"
                      + (f"/{report.variant}" if report.variant else "")
                      + (" (synthetic, checked against its manifest)" if report.synthetic else ""))
        for column in ("check", "ok", "expected", "found", "detail"):
            table.add_column(column, overflow="fold")
        for check in report.checks:
            table.add_row(check.name, "[green]yes" if check.ok else "[red]NO",
                          "" if check.expected is None else str(check.expected),
                          "" if check.found is None else str(check.found), check.detail)
        console = Console(soft_wrap=True)  # file names whole, never cut to the terminal's width
        console.print(table)
        for check in report.checks:
            if check.files and not check.ok:
                console.print(f"{check.name}: {len(check.files)} file(s)", style="red", markup=False)
                for line in check.files:
                    console.print(f"  {line}", markup=False, highlight=False)
    raise typer.Exit(0 if report.ok else 1)


@data_app.command("download")
def data_download(ctx: typer.Context, name: str = typer.Argument(..., help="Dataset name or alias."),
                  root: Path | None = typer.Option(None, "--root", help=ROOT_HELP),
                  url: str | None = typer.Option(
                      None, "--url", help="Use this URL instead of the registry's source."),
                  force: bool = typer.Option(False, "--force", help="Replace an installed copy.")) -> None:
    """Download, check and install a dataset (or say how to obtain a by-request one)."""
    from reidbench.data.install import download_dataset

    result = download_dataset(name, writable_root(ctx, root), url=url, force=force)
    Console().print(result.message, markup=False)
    if result.folder is None:
        raise typer.Exit(1)


@data_app.command("prepare")
def data_prepare(ctx: typer.Context, name: str = typer.Argument(..., help="Dataset name or alias."),
                 source: Path = typer.Option(..., "--from", help="Archive or folder obtained by hand."),
                 root: Path | None = typer.Option(None, "--root", help=ROOT_HELP),
                 force: bool = typer.Option(False, "--force", help="Replace an installed copy.")) -> None:
    """Install a dataset from an archive or folder (builds Occluded-Duke, extracts CUHK03)."""
    from reidbench.data.install import prepare_dataset

    folder = prepare_dataset(name, source, writable_root(ctx, root), force=force)
    Console().print(f"installed at {folder}; next: reidbench data verify {name} --root {folder.parent}",
                    markup=False)


@data_app.command("synth")
def data_synth(name: str = typer.Argument(..., help="Dataset name or alias (any registered)."),
               out: Path = typer.Option(..., "--out", help="Data root to write the miniature into."),
               ids: int = typer.Option(24, "--ids", help="Identities (half train, half test)."),
               images_per_id: int = typer.Option(8, "--images-per-id", help="Images per identity."),
               seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
               cuhk03_layout: str = typer.Option("np", "--cuhk03-layout",
                                                 help="cuhk03 only: np (CUHK03-NP) or release.")) -> None:
    """Write a synthetic miniature of NAME in its official layout (marked synthetic)."""
    from reidbench.data.synth import synthesize

    target = paths.check_folder(out.expanduser().absolute(), "--out", "output folder")
    result = synthesize(name, target, ids=ids, images_per_id=images_per_id,
                        seed=seed, cuhk03_layout=cuhk03_layout)
    rate = result.images / result.seconds if result.seconds else float("inf")
    Console().print(f"wrote {result.images} synthetic images of {result.dataset} to {result.folder} "
                    f"in {result.seconds:.2f} s ({rate:.0f} images/s)", markup=False)
    for variant, splits in result.splits.items():
        counts = ", ".join(f"{k} {v[0]} img / {v[1]} ids" for k, v in splits.items() if v)
        Console().print(f"  {variant}: {counts}", markup=False)
