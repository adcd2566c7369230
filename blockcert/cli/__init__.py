"""The ``blockcert`` command line: thin typer commands that parse, call the core, render."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from blockcert.errors import UserError

app = typer.Typer(
    name="blockcert",
    help="Certified blockwise extraction of transformer mechanisms: IR surrogates, coverage metrics, certificates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

err_console = Console(stderr=True)


def out_console() -> Console:
    """Console for results on stdout; when piped to a file, wide enough that tables are not truncated."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 140))
    return console


def _version(value: bool) -> None:
    if value:
        from blockcert import __version__

        typer.echo(f"blockcert {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Certified blockwise extraction of transformer mechanisms: IR surrogates, coverage metrics, certificates."""


def _register_commands() -> None:
    from blockcert.cli import (  # noqa: F401  (commands register themselves on `app`)
        bound_cmd,
        direction_cmd,
        edit_cmd,
        experiment_cmd,
        ir_check,
        minimize_cmd,
        plugins_cmd,
        report_cmd,
        run_cmd,
        sign_cmd,
        stitch_cmd,
        synth_cmd,
        verify_cmd,
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user mistakes exit 2 with a one-line message, never a traceback."""
    _register_commands()
    try:
        app(args=argv, prog_name="blockcert")  # click handles --help and usage errors (exit 2) itself
    except UserError as exc:
        err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        if exc.hint:
            err_console.print(f"  [dim]hint:[/] {exc.hint}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
