"""Writing a report: render the gathered records as HTML or Markdown and write the page atomically, beside
the run directory (never inside it: ``blockcert verify`` rejects unexpected files there)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from blockcert.errors import UserError
from blockcert.report.gather import FORMATS, collect
from blockcert.report.views import RunView


def default_output(out: str | Path, fmt: str) -> Path:
    """``<OUT_DIR>.report.html`` (or ``.md``): beside the run directory, never inside it."""
    root = Path(out).resolve()
    return root.with_name(f"{root.name}.report.{fmt}")


def render(view: RunView, fmt: str = "html") -> str:
    if fmt == "html":
        from blockcert.report.html import render_html

        return render_html(view)
    if fmt == "md":
        from blockcert.report.markdown import render_md

        return render_md(view)
    raise UserError(f"unknown --format {fmt!r}", f"choose one of {', '.join(FORMATS)}")


def write_report(out: str | Path, output: str | Path | None = None, *, fmt: str = "html", compare: Sequence[str | Path] = (),
                 edit_sweep: str | Path | None = None, tokenizer: str | None = None, token_blocks: str = "auto",
                 minimize: str | Path | None = None, direction_sweep: str | Path | None = None) -> tuple[Path, RunView]:
    """Build the report of the run in ``out`` and write it atomically to ``output`` (default
    :func:`default_output`); refuses a path inside the run directory, which would break ``blockcert verify``."""
    from blockcert.artifacts.fsutil import atomic_write_text

    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}", f"choose one of {', '.join(FORMATS)}")
    target = Path(output) if output is not None else default_output(out, fmt)
    root = Path(out).resolve()
    if target.resolve() == root or root in target.resolve().parents:
        raise UserError(f"{target} is inside the run directory {out}; `blockcert verify` rejects files it does not expect there",
                        f"write it beside the run, e.g. --output {default_output(out, fmt)}")
    view = collect(out, compare=compare, edit_sweep=edit_sweep, tokenizer=tokenizer, token_blocks=token_blocks, minimize=minimize,
                   direction_sweep=direction_sweep)
    atomic_write_text(target, render(view, fmt))
    return target, view
