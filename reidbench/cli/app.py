"""The `reidbench` Typer application and the one place where user errors are printed."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import typer
from rich.console import Console

from reidbench import __version__, paths
from reidbench.errors import USER_ERROR_EXIT_CODE, ReidbenchError

app = typer.Typer(
    name="reidbench",
    help="Reproduce and benchmark person and vehicle re-identification papers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class Settings:
    """Global options, handed to commands through the Typer context."""

    def __init__(self, data_root: Path | None, verbose: bool) -> None:
        self.data_root = data_root
        self.verbose = verbose


def data_root_of(ctx: typer.Context) -> Path:
    """The data root chosen by --data-root, else $REIDBENCH_DATA, else the user cache (see ``paths``)."""
    settings = ctx.find_root().obj
    return paths.data_root(settings.data_root if settings else None)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"reidbench {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Data root (default: $REIDBENCH_DATA, else the user cache)."
    ),
    recipes_dirs: list[Path] = typer.Option(
        [], "--recipes-dir", metavar="DIR",
        help="A folder of your own recipes and papers, searched before $REIDBENCH_RECIPES and the shipped "
             "recipes (repeatable).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    for folder in recipes_dirs:
        if not folder.is_dir():
            raise ReidbenchError(f"--recipes-dir {folder}: not a folder", hint="give a folder of recipe YAML files")
    paths.add_user_recipe_dirs(recipes_dirs)
    ctx.obj = Settings(data_root=data_root, verbose=verbose)


def _register_commands() -> None:
    # Imported for their side effect of adding commands to `app`.
    from reidbench.cli import (  # noqa: F401
        bench,
        data,
        env,
        evaluate,
        launch,
        profile,
        regress,
        reproduce,
        search,
        train,
        visual,
        weights,
    )


def report_error(error: ReidbenchError, console: Console | None = None) -> None:
    """Print a user error as one red line (message, then the hint after an em dash)."""
    console = console or Console(stderr=True, highlight=False, soft_wrap=True)
    text = f"error: {error.message}"
    if error.hint:
        text += f" — {error.hint}"
    console.print(text, style="bold red", markup=False)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the app and turns user errors into exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in args or "-v" in args
    # fvcore traces models with torch.jit, which recent torch marks as deprecated: not the user's concern
    warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
    _register_commands()
    try:
        app(args=args, prog_name="reidbench", standalone_mode=True)
    except ReidbenchError as error:
        _exit_with(error, verbose)
    except OSError as error:
        # the file system refused a path the user chose (permissions, a full or read-only disk, a file where a
        # folder belongs) somewhere no check anticipated: one line naming the path; anything else is a bug
        if error.filename is None or error.errno is None:
            raise
        _exit_with(ReidbenchError(f"{error.filename}: {error.strerror or error}",
                                  hint=None if verbose else "--verbose shows where"), verbose)


def _exit_with(error: ReidbenchError, verbose: bool) -> None:
    if verbose:
        import traceback

        traceback.print_exc()
    report_error(error)
    sys.exit(USER_ERROR_EXIT_CODE)
