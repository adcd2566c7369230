"""Hand-written SVG charts and a tiny PNG encoder for ``blockcert report`` (no plotting library).

Every function returns a self-contained ``<svg>`` string (or PNG bytes) that embeds no script, no font
and no external reference, so the report stays one file that prints and works from a ``file://`` URL.
Any text that reaches the SVG goes through :func:`esc`. Charts scale with their container (``viewBox``).
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from html import escape

import attrs

GOOD, BAD, NEUTRAL, INK, GRID, MUTED = "#2b8a3e", "#c92a2a", "#1c7ed6", "#212529", "#dee2e6", "#868e96"


def esc(value: object) -> str:
    """Escape any value for HTML/SVG text and attributes (quotes included)."""
    return escape(str(value), quote=True)


def fmt(x: float | None, digits: int = 3) -> str:
    """A number in 3 significant digits: plain between 1e-3 and 1e4, scientific outside."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return "∞" if x > 0 else "−∞"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.{digits}g}"
    return f"{x:.{digits - 1}e}"


# ---------------------------------------------------------------------------------------------------
# Axes
# ---------------------------------------------------------------------------------------------------


@attrs.frozen
class Axis:
    """A value axis mapped onto pixels ``[lo_px, hi_px]`` (``hi_px`` may be below ``lo_px``: SVG y grows down)."""

    lo: float
    hi: float
    lo_px: float
    hi_px: float
    log: bool = False
    integer: bool = False  # ticks on whole numbers only (layers, blocks)

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(v) if v > 0 else self.lo
        t = (v - self.lo) / (self.hi - self.lo) if self.hi > self.lo else 0.0
        t = min(max(t, 0.0), 1.0)
        return self.lo_px + t * (self.hi_px - self.lo_px)

    def ticks(self) -> list[tuple[float, str]]:
        """(position in value units, label): decades on a log axis, 4–6 round numbers on a linear one."""
        if self.log:
            step = max(1, math.ceil((self.hi - self.lo) / 8))
            return [(10.0**k, _decade(k)) for k in range(math.ceil(self.lo), math.floor(self.hi) + 1, step)]
        span = self.hi - self.lo or 1.0
        raw = span / 5
        mag = 10 ** math.floor(math.log10(raw))
        step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
        if self.integer:
            step = max(1.0, math.ceil(step))
        first = math.ceil(self.lo / step) * step
        n = int(math.floor((self.hi - first) / step + 1e-9)) + 1
        return [(first + i * step, f"{first + i * step:g}") for i in range(n)]


def _decade(k: int) -> str:
    return {0: "1", 1: "10", -1: "0.1"}.get(k, f"1e{k}")


def log_axis(values: Sequence[float], lo_px: float, hi_px: float, extra: Sequence[float] = ()) -> Axis:
    """A decade-aligned log axis covering the positive ``values`` and ``extra`` (thresholds)."""
    pos = [v for v in [*values, *extra] if v is not None and v > 0 and math.isfinite(v)]
    if not pos:
        return Axis(-1.0, 0.0, lo_px, hi_px, log=True)
    lo, hi = math.floor(math.log10(min(pos))), math.ceil(math.log10(max(pos)))
    if hi == lo:
        hi += 1
    return Axis(float(lo), float(hi), lo_px, hi_px, log=True)


def _frame(width: int, height: int, label: str, cls: str = "chart") -> list[str]:
    size = f' width="{width}" height="{height}"' if cls != "chart" else ""
    return [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}"{size} class="{cls}" role="img" '
            f'aria-label="{esc(label)}" font-family="system-ui, sans-serif" font-size="11">',
            f"<title>{esc(label)}</title>"]


def _y_grid(parts: list[str], ax: Axis, x0: float, x1: float) -> None:
    for v, text in ax.ticks():
        y = ax(v)
        parts.append(f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{x0 - 4:.1f}" y="{y + 3.5:.1f}" text-anchor="end" fill="{MUTED}">{esc(text)}</text>')


# ---------------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------------


def bar_chart(labels: Sequence[str], values: Sequence[float], *, title: str, log: bool = False,
              threshold: float | None = None, threshold_label: str = "", passes: Callable[[float], bool] | None = None,
              markers: Sequence[float] | None = None, marker_label: str = "", ylim: tuple[float, float] | None = None,
              tooltips: Sequence[str] | None = None, width: int = 900, height: int = 190) -> str:
    """One bar per label; bars that fail ``passes`` are red, others green (grey-blue without ``passes``);
    an optional dashed threshold line and one marker dot per bar (e.g. the MAE beside ε)."""
    left, right, top, bottom = 52, 12, 24, 30
    n = max(len(values), 1)
    slot = (width - left - right) / n
    if log:
        ax = log_axis([*values, *(markers or [])], height - bottom, top, extra=[threshold] if threshold else [])
    else:
        lo, hi = ylim or (0.0, max([*values, threshold or 0.0, 1e-12]))
        ax = Axis(lo, hi, height - bottom, top)
    parts = _frame(width, height, title)
    parts.append(f'<text x="{left}" y="14" font-weight="600" fill="{INK}">{esc(title)}</text>')
    _y_grid(parts, ax, left, width - right)
    base = ax(10.0**ax.lo) if log else ax(max(ax.lo, 0.0))
    for k, (label, v) in enumerate(zip(labels, values)):
        x = left + k * slot + slot * 0.15
        w = max(slot * 0.7, 1.0)
        color = NEUTRAL if passes is None else (GOOD if passes(v) else BAD)
        y = ax(v) if v is not None and (v > 0 or not log) else base
        y = min(y, base - 2.0)  # a stub even for 0, so that a zero (a total failure) stays visible
        tip = tooltips[k] if tooltips else f"{label}: {fmt(v)}"
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{base - y:.1f}" '
                     f'fill="{color}"><title>{esc(tip)}</title></rect>')
        if markers is not None and markers[k] is not None and (markers[k] > 0 or not log):
            parts.append(f'<circle cx="{x + w / 2:.1f}" cy="{ax(markers[k]):.1f}" r="2.6" fill="{INK}">'
                         f"<title>{esc(f'{label}: {marker_label} {fmt(markers[k])}')}</title></circle>")
        if n <= 40 or k % max(1, n // 20) == 0:
            parts.append(f'<text x="{x + w / 2:.1f}" y="{height - bottom + 13}" text-anchor="middle" fill="{MUTED}">{esc(label)}</text>')
    if threshold is not None:
        y = ax(threshold)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{INK}" stroke-dasharray="5 3"/>')
        parts.append(f'<line x1="{width - right - 150}" x2="{width - right - 128}" y1="10" y2="10" stroke="{INK}" stroke-dasharray="5 3"/>')
        parts.append(f'<text x="{width - right - 124}" y="14" fill="{INK}">{esc(threshold_label)}</text>')
    legend = "block" + (f"; dots: {marker_label}" if markers else "")
    parts.append(f'<text x="{left}" y="{height - 4}" fill="{MUTED}">{esc(legend)}</text>')
    parts.append("</svg>")
    return "".join(parts)


@attrs.frozen
class Series:
    name: str
    xs: tuple[float, ...]
    ys: tuple[float | None, ...]
    color: str
    dashed: bool = False


def line_chart(series: Sequence[Series], *, title: str, xlabel: str, ylog: bool = False, ylim: tuple[float, float] | None = None,
               ylabels: Callable[[float], str] | None = None, xint: bool = False, yint: bool = False, width: int = 900,
               height: int = 230) -> str:
    """Lines with points over a shared linear x axis; ``ylog`` for a decade axis; ``ylabels`` relabels a
    linear axis (e.g. values that are already log10 shown as powers of ten)."""
    left, right, top, bottom = 56, 12, 24, 34
    xs = [x for s in series for x in s.xs] or [0.0, 1.0]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    xa = Axis(x_lo, x_hi, left + 6, width - right - 6, integer=xint)
    ys = [y for s in series for y in s.ys if y is not None]
    if ylog:
        ya = log_axis(ys, height - bottom, top)
    else:
        lo, hi = ylim or (min(ys, default=0.0), max(ys, default=1.0))
        if hi == lo:
            lo, hi = lo - 1, hi + 1
        ya = Axis(lo, hi, height - bottom, top, integer=yint)
    parts = _frame(width, height, title)
    parts.append(f'<text x="{left}" y="14" font-weight="600" fill="{INK}">{esc(title)}</text>')
    for v, text in ya.ticks():
        y = ya(v)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        label = ylabels(v) if ylabels else text
        parts.append(f'<text x="{left - 4}" y="{y + 3.5:.1f}" text-anchor="end" fill="{MUTED}">{esc(label)}</text>')
    for v, text in xa.ticks():
        parts.append(f'<text x="{xa(v):.1f}" y="{height - bottom + 14}" text-anchor="middle" fill="{MUTED}">{esc(text)}</text>')
    parts.append(f'<text x="{width - right}" y="{height - 4}" text-anchor="end" fill="{MUTED}">{esc(xlabel)}</text>')
    lx = left
    for s in series:
        pts = [(xa(x), ya(y), x, y) for x, y in zip(s.xs, s.ys) if y is not None and (y > 0 or not ylog)]
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        if len(pts) > 1:
            d = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in pts)
            parts.append(f'<polyline points="{d}" fill="none" stroke="{s.color}" stroke-width="1.8"{dash}/>')
        for px, py, x, y in pts:
            tip = f"{s.name}: {fmt(x)} → {ylabels(y) if ylabels else fmt(y)}"
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.4" fill="{s.color}"><title>{esc(tip)}</title></circle>')
        parts.append(f'<line x1="{lx}" x2="{lx + 16}" y1="{height - 8}" y2="{height - 8}" stroke="{s.color}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{lx + 20}" y="{height - 4}" fill="{INK}">{esc(s.name)}</text>')
        lx += 28 + 6.5 * len(s.name)
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------
# Per-token colour scale and the overview image
# ---------------------------------------------------------------------------------------------------

# e/τ_act in buckets: four shades of blue below the threshold (covered), four of red above it.
BUCKET_EDGES = (1e-3, 1e-2, 1e-1, 1.0, 3.0, 10.0, 100.0)
BUCKET_COLORS = ("#f1f3f5", "#d0ebff", "#a5d8ff", "#74c0fc", "#ffc9c9", "#ff8787", "#f03e3e", "#a61e1e")
BUCKET_LABELS = ("< 0.001", "0.001–0.01", "0.01–0.1", "0.1–1", "1–3", "3–10", "10–100", "≥ 100")


def bucket(ratio: float) -> int:
    """Colour bucket of e/τ_act: 0–3 covered (e ≤ τ_act), 4–7 not covered (NaN counts as the worst)."""
    if ratio <= 1.0:
        return next((k for k in range(3) if ratio < BUCKET_EDGES[k]), 3)
    return next((k for k in range(4, 7) if ratio < BUCKET_EDGES[k]), 7)


def _hex(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def png(rows: Sequence[Sequence[tuple[int, int, int]]]) -> bytes:
    """An RGB PNG of the given pixel rows (all the same length), written with zlib only."""
    height, width = len(rows), len(rows[0])
    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def heat_overview(row_labels: Sequence[str], rows: Sequence[Sequence[int]], groups: Sequence[tuple[str, int]], *,
                  title: str, cell_h: int = 12, gap: int = 3, target_width: int = 1000) -> str:
    """Blocks × tokens as one image: ``rows[r]`` holds a bucket per token, prompts laid end to end with a
    ``gap``-pixel white column between them (``groups``: (label, token count) per prompt). Each token is
    2–14 pixels wide, so that the image is about ``target_width`` wide where it can be."""
    n_tokens = sum(n for _, n in groups) or 1
    cell_w = min(14, max(2, (target_width - gap * len(groups)) // n_tokens))
    palette = [_hex(c) for c in BUCKET_COLORS]
    white = (255, 255, 255)
    pixel_rows = []
    for row in rows:
        line: list[tuple[int, int, int]] = []
        k = 0
        for g, (_, n) in enumerate(groups):
            if g:
                line.extend([white] * gap)
            for b in row[k:k + n]:
                line.extend([palette[b]] * cell_w)
            k += n
        pixel_rows.extend([line] * (cell_h - 1) + [[white] * len(line)])
    img_w, img_h = len(pixel_rows[0]), len(pixel_rows)
    left, top = 46, 16
    width, height = left + img_w + 8, top + img_h + 8
    data = base64.b64encode(png(pixel_rows)).decode("ascii")
    parts = _frame(width, height, title, cls="heat")
    parts.append(f'<image x="{left}" y="{top}" width="{img_w}" height="{img_h}" preserveAspectRatio="none" '
                 f'style="image-rendering:pixelated" href="data:image/png;base64,{data}"/>')
    for r, label in enumerate(row_labels):
        parts.append(f'<text x="{left - 4}" y="{top + r * cell_h + cell_h - 3}" text-anchor="end" fill="{MUTED}">{esc(label)}</text>')
    x = left
    for g, (label, n) in enumerate(groups):
        if g:
            x += gap
        parts.append(f'<text x="{x + 1}" y="{top - 4}" fill="{MUTED}">{esc(label)}</text>')
        x += n * cell_w
    parts.append("</svg>")
    return "".join(parts)


def legend_html() -> str:
    """The token colour scale as HTML (swatches and the e/τ_act ranges)."""
    items = "".join(f'<span class="sw e{k}">{esc(text)}</span>' for k, text in enumerate(BUCKET_LABELS))
    return f'<p class="legend">e(p,t) / τ_act: {items}</p>'
