"""``blockcert plugins`` and ``blockcert models``: what is installed."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from blockcert.cli import app, out_console


@app.command("plugins")
def plugins(as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout.")) -> None:
    """List every plugin: name, version, the hooks it implements (built-ins marked)."""
    from blockcert.plugins import get_plugins

    infos = get_plugins().list()
    if as_json:
        rows = [{"name": i.name, "version": i.version, "builtin": i.builtin, "module": i.module, "hooks": list(i.hooks)} for i in infos]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="BlockCert plugins")
    for col in ("name", "version", "built-in", "hooks"):
        table.add_column(col)
    for i in infos:
        table.add_row(i.name, i.version, "yes" if i.builtin else "", "\n".join(i.hooks))
    out_console().print(table)


@app.command("models")
def models(as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout.")) -> None:
    """List models known by name (``--model NAME``) and whether each is installed here."""
    from blockcert.errors import UserError
    from blockcert.plugins import get_plugins

    seen = {}
    for entry in get_plugins().models().values():
        seen[entry.name] = entry
    from blockcert.model.paths import package_file

    rows = []
    for entry in seen.values():
        try:
            where, installed = str(entry.locate()), True
        except UserError as exc:
            where, installed = exc.hint or exc.message, False
        terms = package_file(*entry.terms) if entry.terms else None
        rows.append({"name": entry.name, "aliases": list(entry.aliases), "default": entry.default,
                     "installed": installed, "location": where, "description": entry.description,
                     "licence": entry.licence, "terms": str(terms) if terms else None})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="Registered models")
    for col in ("name", "default", "installed", "location / how to install", "description", "licence / terms"):
        table.add_column(col, overflow="fold")
    for r in rows:
        licence = r["licence"] + (f"\nterms: {r['terms']}" if r["terms"] else "")
        table.add_row(r["name"], "yes" if r["default"] else "", "yes" if r["installed"] else "[red]no[/]", r["location"], r["description"],
                      licence)
    out_console().print(table)
