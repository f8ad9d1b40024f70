"""Plots as inline SVG strings: no plotting library, no external files."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

PALETTE = ("#3b6ea8", "#e07b39", "#5a9e5a", "#b84a62", "#8a6bb8", "#7a7a7a", "#c9a227", "#3aa6a6")


def grouped_bars(categories: Sequence[str], series: dict[str, Sequence[float]], *, width: int = 720,
                 bar_height: int = 14, title: str = "") -> str:
    """Horizontal grouped bar chart: one group per category, one bar per series."""
    names = list(series)
    peak = max((max(values) for values in series.values() if len(values)), default=1) or 1
    label_width, value_width = 150, 60
    plot_width = width - label_width - value_width
    group_height = bar_height * len(names) + 8
    height = group_height * len(categories) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
             f' aria-label="{escape(title)}" class="chart">']
    for s, name in enumerate(names):
        parts.append(f'<rect x="{label_width + s * 110}" y="4" width="10" height="10" fill="{PALETTE[s % 8]}"/>'
                     f'<text x="{label_width + s * 110 + 14}" y="13" font-size="11">{escape(str(name))}</text>')
    for c, category in enumerate(categories):
        top = 28 + c * group_height
        parts.append(f'<text x="{label_width - 6}" y="{top + group_height / 2}" font-size="11" '
                     f'text-anchor="end" dominant-baseline="middle">{escape(str(category))}</text>')
        for s, name in enumerate(names):
            value = float(series[name][c])
            length = plot_width * value / peak
            y = top + s * bar_height
            parts.append(f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar_height - 2}" '
                         f'fill="{PALETTE[s % 8]}"><title>{escape(str(category))} / {escape(str(name))}: '
                         f'{value:g}</title></rect>'
                         f'<text x="{label_width + length + 4:.1f}" y="{y + bar_height - 4}" font-size="10">'
                         f'{value:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def heatmap(matrix: Sequence[Sequence[float]], row_labels: Sequence[str], column_labels: Sequence[str], *,
            cell: int = 30, title: str = "", row_title: str = "", column_title: str = "") -> str:
    """A matrix as coloured cells with values (e.g. a noise matrix); darker = larger."""
    rows, columns = len(row_labels), len(column_labels)
    left, top = 120, 110
    width, height = left + columns * cell + 10, top + rows * cell + 10
    flat = [float(v) for row in matrix for v in row]
    peak = max(flat) if flat else 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}" class="chart heatmap">',
             f'<text x="{left}" y="12" font-size="11" font-weight="600">{escape(column_title)}</text>',
             f'<text x="4" y="{top - 6}" font-size="11" font-weight="600">{escape(row_title)}</text>']
    for j, name in enumerate(column_labels):
        x = left + j * cell + cell / 2
        parts.append(f'<text x="{x}" y="{top - 6}" font-size="10" transform="rotate(-55 {x} {top - 6})">'
                     f'{escape(str(name))}</text>')
    for i, name in enumerate(row_labels):
        y = top + i * cell
        parts.append(f'<text x="{left - 4}" y="{y + cell / 2 + 3}" font-size="10" text-anchor="end">'
                     f'{escape(str(name))}</text>')
        for j in range(columns):
            value = float(matrix[i][j])
            shade = 0.0 if peak <= 0 else min(1.0, value / peak) ** 0.5
            fill = f"rgb({int(255 - 196 * shade)},{int(255 - 145 * shade)},{int(255 - 87 * shade)})"
            text_colour = "#fff" if shade > 0.6 else "#1d232b"
            parts.append(f'<rect x="{left + j * cell}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="{fill}">'
                         f'<title>{escape(str(name))} / {escape(str(column_labels[j]))}: {value:.3f}</title></rect>'
                         f'<text x="{left + j * cell + cell / 2}" y="{y + cell / 2 + 3}" font-size="8" '
                         f'text-anchor="middle" fill="{text_colour}">{value:.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(series: dict[str, dict[str, Sequence[float]]], *, width: int = 720, height: int = 320,
               log_x: bool = False, title: str = "", x_title: str = "", y_title: str = "",
               hlines: dict[str, float] | None = None) -> str:
    """Lines (with optional bands and measured points) on shared axes, e.g. learning curves.

    ``series`` maps a name to ``{"x": [...], "y": [...]}`` plus optional ``"low"``/``"high"`` (a shaded
    band around the line, same length as ``x``) and ``"points": True`` (draw markers instead of a line,
    for measured values). ``hlines`` maps a label to a y value drawn as a dashed horizontal line (a target).
    Non-finite values are skipped. ``log_x`` puts x on a log10 axis (all x must then be > 0).
    """
    import math

    def finite(values: Sequence[float]) -> list[float]:
        return [float(v) for v in values if v is not None and math.isfinite(float(v))]

    xs = [v for s in series.values() for v in finite(s["x"]) if not log_x or v > 0]
    ys = [v for s in series.values() for key in ("y", "low", "high") for v in finite(s.get(key, []))]
    ys += list((hlines or {}).values())
    if not xs or not ys:
        return ""
    to_x = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    x_lo, x_hi = to_x(min(xs)), to_x(max(xs))
    y_lo, y_hi = min(ys), max(ys)
    pad = (y_hi - y_lo) * 0.05 or 0.05
    y_lo, y_hi = y_lo - pad, y_hi + pad
    x_hi = x_hi if x_hi > x_lo else x_lo + 1
    left, right, top, bottom = 60, 150, 24, 40
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(v: float) -> float:
        return left + plot_w * (to_x(v) - x_lo) / (x_hi - x_lo)

    def py(v: float) -> float:
        return top + plot_h * (1 - (v - y_lo) / (y_hi - y_lo))

    def usable(x: float | None, y: float | None) -> bool:
        return (x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))
                and (not log_x or float(x) > 0))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}" class="chart line-chart">',
             f'<text x="{left}" y="14" font-size="12" font-weight="600">{escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>']
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):  # y ticks
        value = y_lo + fraction * (y_hi - y_lo)
        parts.append(f'<text x="{left - 4}" y="{py(value) + 3:.1f}" font-size="10" text-anchor="end">'
                     f'{value:.3g}</text>')
    if log_x:
        ticks = [10.0 ** e for e in range(math.floor(x_lo), math.ceil(x_hi) + 1) if x_lo <= e <= x_hi]
    else:
        ticks = [min(xs) + fraction * (max(xs) - min(xs)) for fraction in (0.0, 0.25, 0.5, 0.75, 1.0)]
    for tick in ticks:
        parts.append(f'<text x="{px(tick):.1f}" y="{top + plot_h + 14}" font-size="10" text-anchor="middle">'
                     f'{tick:,.0f}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" font-size="11" text-anchor="middle">'
                 f'{escape(x_title)}{" (log scale)" if log_x else ""}</text>'
                 f'<text x="12" y="{top + plot_h / 2}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + plot_h / 2})">{escape(y_title)}</text>')
    for label, value in (hlines or {}).items():
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(value):.1f}" y2="{py(value):.1f}" '
                     f'stroke="#b84a62" stroke-dasharray="5,4"/><text x="{left + plot_w + 4}" y="{py(value) + 3:.1f}" '
                     f'font-size="10" fill="#b84a62">{escape(label)}</text>')
    for s, (name, data) in enumerate(series.items()):
        colour = PALETTE[s % len(PALETTE)]
        x_values = list(data["x"])
        if "low" in data and "high" in data:
            band = [(x, lo, hi) for x, lo, hi in zip(x_values, data["low"], data["high"], strict=True)
                    if usable(x, lo) and usable(x, hi)]
            if band:
                outline = [f"{px(x):.1f},{py(hi):.1f}" for x, _, hi in band]
                outline += [f"{px(x):.1f},{py(lo):.1f}" for x, lo, _ in reversed(band)]
                parts.append(f'<polygon points="{" ".join(outline)}" fill="{colour}" fill-opacity="0.15" '
                             f'stroke="none"/>')
        points = [(x, y) for x, y in zip(x_values, data["y"], strict=True) if usable(x, y)]
        if data.get("points"):
            parts.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"><title>{escape(name)}: '
                         f'{x:g}, {y:.4g}</title></circle>' for x, y in points)
        elif points:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        legend_y = top + 6 + s * 16
        parts.append(f'<rect x="{left + plot_w + 8}" y="{legend_y}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{left + plot_w + 22}" y="{legend_y + 9}" font-size="11">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
