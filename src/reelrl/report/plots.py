"""Inline SVG charts (no plotting library at view time): line charts of step series and stacked bars."""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f"{v:.2e}"
    return f"{v:.4g}" if a < 1 else f"{v:.4g}"


def _ticks(lo: float, hi: float, n: int = 4, integer: bool = False) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]`` (whole numbers only with ``integer``)."""
    if hi <= lo:
        return [lo]
    raw = max((hi - lo) / n, 1.0) if integer else (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def smooth(ys: list[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` points (the first points average what there is)."""
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= window:
            acc -= ys[i - window]
        out.append(acc / min(i + 1, window))
    return out


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, *, width: int = 380, height: int = 230,
               xlabel: str = "step", smoothing: bool = True) -> str:
    """One SVG chart of named ``(x, y)`` series; long noisy series are drawn faint with a moving average on top.

    Series without points are left out; with none at all the chart says so.
    """
    series = {k: v for k, v in series.items() if v}
    ml, mr, mt, mb = 52, 10, 24, 34
    legend_h = 14 * len(series) if len(series) > 1 else 0
    h = height + legend_h
    pw, ph = width - ml - mr, height - mt - mb
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
             f'viewBox="0 0 {width} {h}" role="img" aria-label="{escape(title)}">',
             f'<text x="{width / 2}" y="15" text-anchor="middle" class="title">{escape(title)}</text>']
    if not series:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="empty">no data</text></svg>')
        return "".join(parts)
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 == y0:
        pad = abs(y0) * 0.1 or 0.5
        y0, y1 = y0 - pad, y1 + pad
    else:
        pad = (y1 - y0) * 0.05
        y0, y1 = y0 - pad, y1 + pad

    def px(x: float) -> float:
        return ml + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return mt + ph - (y - y0) / (y1 - y0) * ph

    parts.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" class="frame"/>')
    for t in _ticks(y0, y1):
        parts.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" class="grid"/>'
                     f'<text x="{ml - 4}" y="{py(t) + 3:.1f}" text-anchor="end" class="tick">{_fmt(t)}</text>')
    for t in _ticks(x0, x1, integer=all(float(x).is_integer() for x in xs)):
        parts.append(f'<text x="{px(t):.1f}" y="{mt + ph + 13}" text-anchor="middle" class="tick">{_fmt(t)}</text>')
    parts.append(f'<text x="{ml + pw / 2}" y="{mt + ph + 27}" text-anchor="middle" class="axis">{escape(xlabel)}'
                 '</text>')
    for i, (name, pts) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        coords = [(px(x), py(y)) for x, y in pts]
        window = max(1, len(pts) // 25) if smoothing else 1
        if len(pts) == 1:
            parts.append(f'<circle cx="{coords[0][0]:.1f}" cy="{coords[0][1]:.1f}" r="3" fill="{color}"/>')
        elif window > 1:
            parts.append(_polyline(coords, color, 1.0, 0.25))
            sm = smooth([y for _, y in pts], window)
            parts.append(_polyline([(px(x), py(y)) for (x, _), y in zip(pts, sm)], color, 1.8, 1.0))
        else:
            parts.append(_polyline(coords, color, 1.6, 1.0))
        if legend_h:
            ly = height + 14 * i + 4
            parts.append(f'<rect x="{ml}" y="{ly}" width="10" height="3" fill="{color}"/>'
                         f'<text x="{ml + 14}" y="{ly + 5}" class="legend">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _polyline(coords: list[tuple[float, float]], color: str, width: float, opacity: float) -> str:
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    return (f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{width}" '
            f'stroke-opacity="{opacity}"/>')


def stacked_bars(bars: dict[str, dict[str, float]], title: str, *, width: int = 380, unit: str = "s") -> str:
    """Horizontal stacked bars: one bar per name, its parts (phase -> seconds) in one colour per phase."""
    bars = {k: v for k, v in bars.items() if v and sum(v.values()) > 0}
    phases = list(dict.fromkeys(p for parts in bars.values() for p in parts))
    ml, mr, bar_h, gap = 90, 10, 18, 8
    height = 24 + len(bars) * (bar_h + gap) + 16 * math.ceil(len(phases) / 3) + 8
    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           f'<text x="{width / 2}" y="15" text-anchor="middle" class="title">{escape(title)}</text>']
    if not bars:
        out.append(f'<text x="{width / 2}" y="40" text-anchor="middle" class="empty">no data</text></svg>')
        return "".join(out)
    color = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(phases)}
    pw = width - ml - mr
    for j, (name, parts) in enumerate(bars.items()):
        total, y, x = sum(parts.values()), 24 + j * (bar_h + gap), float(ml)
        out.append(f'<text x="{ml - 4}" y="{y + 13}" text-anchor="end" class="tick">{escape(name)}</text>')
        for p, v in parts.items():
            w = v / total * pw
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color[p]}">'
                       f'<title>{escape(p)}: {v:.1f} {unit} ({100 * v / total:.0f}%)</title></rect>')
            x += w
        out.append(f'<text x="{width - mr}" y="{y + bar_h + 7}" text-anchor="end" class="tick">'
                   f'{total:.1f} {unit}</text>')
    ly = 24 + len(bars) * (bar_h + gap) + 4
    for i, p in enumerate(phases):
        lx, lyy = ml + (i % 3) * (pw / 3), ly + 16 * (i // 3)
        out.append(f'<rect x="{lx:.1f}" y="{lyy}" width="10" height="10" fill="{color[p]}"/>'
                   f'<text x="{lx + 14:.1f}" y="{lyy + 9}" class="legend">{escape(p)}</text>')
    out.append("</svg>")
    return "".join(out)
