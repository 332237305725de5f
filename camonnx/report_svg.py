"""Inline SVG line charts for the report: per-layer curves, bands, best points; no library.

One chart is one ``<svg>`` (viewBox 720×300, scaled by CSS to the page width) holding, per
series, an optional band (a closed path from ``lo`` up to ``hi`` over x), the line, one focusable
point per layer and a ring on the series' best point. Each point carries ``data-layer`` (the
layer name) and ``data-method`` (the series' method), which the page's script reads to move the
layer slider there; its ``<title>`` and ``aria-label`` say series, layer and value. Axes map
linearly: X(x) = left + (x − x₀)/(x₁ − x₀)·width (x₀, x₁: the x range padded by 3 %), Y(y) = top + (y₁ − y)/(y₁ − y₀)·height, with
y₀, y₁ padded out to "nice" ticks (1, 2, 2.5 or 5 × 10ᵏ steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Sequence

WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 14, 46
#: Colour-blind-safe palette (Okabe–Ito), one colour per series in order.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


@dataclass
class Series:
    """One curve: ``x`` (numbers, e.g. model layer indices), ``y``; ``layers`` names each point;
    ``lo``/``hi`` an optional band; ``best`` the index of the point to ring (None: none)."""

    name: str
    x: Sequence[float]
    y: Sequence[float]
    layers: Sequence[str]
    method: str = ""
    lo: Sequence[float] | None = None
    hi: Sequence[float] | None = None
    best: int | None = None
    colour: str = field(default="")
    #: Whether a point is a layer the page can show (False: e.g. a randomisation step).
    clickable: bool = True


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [lo, hi] (step 1, 2, 2.5 or 5 × 10ᵏ)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks = [start]
    while ticks[-1] < hi - step * 1e-9:
        ticks.append(start + len(ticks) * step)
    return [round(t, 12) for t in ticks]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def line_chart(series: Sequence[Series], title: str, x_label: str, y_label: str,
               x_names: dict[float, str] | None = None, zero_line: bool = True) -> str:
    """The SVG of ``series`` (see the module docstring). ``x_names``: tick labels by x value
    (default: the x values themselves); ticks are thinned to at most 12."""
    finite = lambda values: [v for v in values if v is not None and math.isfinite(v)]  # noqa: E731
    xs = finite([x for s in series for x in s.x])
    ys = finite([y for s in series for y in [*s.y, *(s.lo or []), *(s.hi or [])]])
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = 0.03 * (x1 - x0)  # end points clear of the frame
    x0, x1 = x0 - pad, x1 + pad
    ticks = nice_ticks(min(ys, default=0.0), max(ys, default=1.0))
    y0, y1 = ticks[0], ticks[-1]
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    X = lambda x: LEFT + (x - x0) / (x1 - x0) * w  # noqa: E731
    Y = lambda y: TOP + (y1 - y) / (y1 - y0) * h  # noqa: E731
    out = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="group" '
           f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
           f'<title>{escape(title)}</title>',
           f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{w}" height="{h}"/>']
    for t in ticks:
        out.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + w}" y1="{Y(t):.1f}" y2="{Y(t):.1f}"/>'
                   f'<text class="tick" x="{LEFT - 6}" y="{Y(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    if zero_line and y0 < 0 < y1:
        out.append(f'<line class="zero" x1="{LEFT}" x2="{LEFT + w}" y1="{Y(0):.1f}" y2="{Y(0):.1f}"/>')
    unique = sorted(set(xs))
    step = max(1, math.ceil(len(unique) / 12))
    for x in unique[::step]:
        label = (x_names or {}).get(x, _fmt(x))
        room = 3.5 * len(label)  # about half the label's width: keep it inside the chart
        anchor = ("start" if X(x) - room < 0 else "end" if X(x) + room > WIDTH else "middle")
        out.append(f'<text class="tick" x="{X(x):.1f}" y="{TOP + h + 16}" text-anchor="{anchor}">'
                   f'{escape(label)}</text>')
    out.append(f'<text class="axis" x="{LEFT + w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
               f'{escape(x_label)}</text>'
               f'<text class="axis" transform="translate(14 {TOP + h / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    for k, s in enumerate(series):
        colour = s.colour or PALETTE[k % len(PALETTE)]
        pts = [(X(x), Y(y)) for x, y in zip(s.x, s.y) if y is not None and math.isfinite(y)]
        out.append(f'<g class="series" data-method="{escape(s.method)}" style="--c:{colour}">')
        if s.lo is not None and s.hi is not None:
            kept = [(x, a, b) for x, a, b in zip(s.x, s.lo, s.hi)
                    if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
            upper = [(X(x), Y(b)) for x, _, b in kept]
            lower = [(X(x), Y(a)) for x, a, _ in kept][::-1]
            band = " ".join(f"{a:.1f},{b:.1f}" for a, b in upper + lower)
            out.append(f'<polygon class="band" points="{band}"/>')
        if pts:
            out.append('<polyline class="line" points="'
                       + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        for i, (x, y, layer) in enumerate(zip(s.x, s.y, s.layers)):
            if y is None or not math.isfinite(y):
                continue
            where = (x_names or {}).get(x, _fmt(x))
            text = f"{s.name} at {where}{f' ({layer})' if layer and layer != where else ''}: {_fmt(y)}"
            if i == s.best:
                out.append(f'<circle class="best" cx="{X(x):.1f}" cy="{Y(y):.1f}" r="9"/>')
                text += " (best)"
            if not s.clickable:
                out.append(f'<circle class="pt still" cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3.5">'
                           f'<title>{escape(text)}</title></circle>')
                continue
            out.append(f'<circle class="pt" cx="{X(x):.1f}" cy="{Y(y):.1f}" r="4.5" tabindex="0" '
                       f'role="button" data-layer="{escape(layer)}" data-method="{escape(s.method)}" '
                       f'data-x="{_fmt(x)}" aria-label="{escape(text)}; show this layer">'
                       f'<title>{escape(text)}</title></circle>')
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def legend(series: Sequence[Series]) -> str:
    """An HTML list naming each series in its colour (the chart's key)."""
    items = []
    for k, s in enumerate(series):
        colour = s.colour or PALETTE[k % len(PALETTE)]
        items.append(f'<li><span class="swatch" style="background:{colour}"></span>{escape(s.name)}</li>')
    return f'<ul class="legend">{"".join(items)}</ul>'
