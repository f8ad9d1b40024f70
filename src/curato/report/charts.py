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
