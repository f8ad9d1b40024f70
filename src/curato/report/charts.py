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
