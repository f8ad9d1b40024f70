"""The report's charts, drawn by matplotlib as SVG strings to inline in the page (no external files).

Text stays text (``svg.fonttype = none``: small, sharp, searchable); the page shrinks each SVG to fit its width.
Ticks come from matplotlib's locators (round numbers; several per decade on a log axis); a curve and its band
are clipped to the metric's range (``y_bounds``), so a fitted curve is never drawn above accuracy 1.0; legends
sit below the plot, where they have the whole width and are never cut off.
"""

from __future__ import annotations

import io
import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

PALETTE = ("#3b6ea8", "#e07b39", "#5a9e5a", "#b84a62", "#8a6bb8", "#7a7a7a", "#c9a227", "#3aa6a6")
_WIDTH_INCHES = 7.2
_MAX_HEIGHT_INCHES = 14.0
_ids = itertools.count()


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    figure.patch.set_alpha(0.0)
    return figure


def _svg(figure: Any, title: str, kind: str) -> str:
    """The figure as an inline SVG element that scales with the page (ids unique within the page)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"curato-{next(_ids)}",
                                "font.family": "sans-serif", "font.size": 9}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", pad_inches=0.05, metadata={"Date": None})
    text = buffer.getvalue()
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text[text.index("<svg"):], count=1, flags=re.S)
    escaped = title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return text.replace("<svg ", f'<svg class="chart {kind}" role="img" aria-label="{escaped}" ', 1)


def _style(axes: Any) -> None:
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    axes.grid(True, color="#e3e6ea", linewidth=0.6)
    axes.set_axisbelow(True)


def _legend_below(axes: Any, entries: int) -> None:
    if entries:
        axes.figure.legend(loc="outside lower center", ncol=min(3, entries), frameon=False, fontsize=8.5)


def _number(value: float, _position: Any = None) -> str:
    """A tick label: 1,000 rather than 1e3; decimals only where the value has them."""
    if value == 0:
        return "0"
    if abs(value) >= 1 and float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3g}"


def grouped_bars(categories: Sequence[str], series: dict[str, Sequence[float]], *, title: str = "") -> str:
    """Horizontal grouped bar chart: one group per category, one bar per series, each bar's value at its end while
    the bars are as tall as the values' font (a chart squeezed to its height limit shows none: they would overlap,
    and laying out hundreds of labels is most of the chart's cost)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    names = list(series)
    if not categories or not names:
        return ""
    wanted = 0.9 + 0.22 * len(categories) * max(1, len(names)) + 0.3
    height = min(_MAX_HEIGHT_INCHES, wanted)
    figure = _figure(_WIDTH_INCHES, height)
    axes = figure.add_subplot()
    _style(axes)
    axes.grid(axis="y", visible=False)
    group = 0.8
    bar = group / len(names)
    for s, name in enumerate(names):
        positions = [c - group / 2 + bar * (s + 0.5) for c in range(len(categories))]
        bars = axes.barh(positions, [float(v) for v in series[name]], height=bar * 0.92,
                         color=PALETTE[s % len(PALETTE)], label=str(name))
        if wanted <= _MAX_HEIGHT_INCHES:
            axes.bar_label(bars, labels=[_number(float(v)) for v in series[name]], padding=2, fontsize=7.5)
    axes.set_yticks(range(len(categories)), [str(c) for c in categories])
    axes.invert_yaxis()
    axes.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 5, 10], integer=True))
    axes.xaxis.set_major_formatter(FuncFormatter(_number))
    axes.margins(x=0.08)
    axes.set_xlabel("samples")
    if title:
        axes.set_title(title, loc="left", fontsize=10, fontweight="bold")
    _legend_below(axes, len(names) if len(names) > 1 else 0)
    return _svg(figure, title, "bars")


def heatmap(matrix: Sequence[Sequence[float]], row_labels: Sequence[str], column_labels: Sequence[str], *,
            title: str = "", row_title: str = "", column_title: str = "", spread: bool = False) -> str:
    """A matrix as coloured cells with values (e.g. a noise matrix); darker = larger; missing cells blank.

    ``spread``: shade from the smallest to the largest value (for accuracies that all lie near each other)
    instead of from 0 to the largest."""
    import numpy as np

    values = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=np.float64)
    if values.size == 0:
        return ""
    rows, columns = values.shape
    side = min(9.0, max(3.2, 0.42 * max(rows, columns) + 1.6))
    figure = _figure(side + 0.6, side)
    axes = figure.add_subplot()
    finite = values[np.isfinite(values)]
    floor = float(finite.min()) if spread and finite.size else 0.0
    peak = float(finite.max()) - floor if finite.size and finite.max() - floor > 0 else 1.0
    import matplotlib

    colours = matplotlib.colormaps["Blues"].with_extremes(bad="#f2f4f7")
    shade = np.clip(values - floor, 0, None) / peak
    axes.imshow(shade if spread else np.sqrt(shade), cmap=colours, vmin=0.0, vmax=1.0, aspect="equal")
    font = 8 if max(rows, columns) <= 10 else 6.5
    for i in range(rows):
        for j in range(columns):
            if math.isfinite(values[i, j]):
                dark = (values[i, j] - floor) / peak > (0.6 if spread else 0.36)
                axes.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=font,
                          color="#ffffff" if dark else "#1d232b")
    axes.set_xticks(range(columns), [str(c) for c in column_labels], rotation=45, ha="right",
                    rotation_mode="anchor")
    axes.set_yticks(range(rows), [str(r) for r in row_labels])
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.set_xlabel(column_title)
    axes.set_ylabel(row_title)
    if title:
        axes.set_title(title, loc="left", fontsize=10, fontweight="bold")
    return _svg(figure, title, "heatmap")


def line_chart(series: dict[str, dict[str, Sequence[float]]], *, log_x: bool = False, title: str = "",
               x_title: str = "", y_title: str = "", hlines: dict[str, float] | None = None,
               y_bounds: tuple[float | None, float | None] = (None, None)) -> str:
    """Lines (with optional bands and measured points) on shared axes, e.g. learning curves.

    ``series`` maps a name to ``{"x": [...], "y": [...]}`` plus optional ``"low"``/``"high"`` (a shaded band,
    same length as ``x``) and ``"points": True`` (markers for measured values instead of a line). ``hlines``
    maps a label to a dashed horizontal line (a target). ``y_bounds``: the metric's range (e.g. ``(0, 1)`` for
    accuracy): values are clipped to it and the axis never extends past it. Non-finite values are skipped;
    ``log_x`` puts x on a log axis (x <= 0 skipped) with 1-2-5 ticks per decade.
    """
    import numpy as np
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    low_bound, high_bound = y_bounds

    def column(values: Sequence[float] | None, count: int) -> np.ndarray:
        if values is None:
            return np.full(count, np.nan)
        array = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        return np.clip(array, -np.inf if low_bound is None else low_bound, np.inf if high_bound is None else high_bound)

    figure = _figure(_WIDTH_INCHES, 3.6)
    axes = figure.add_subplot()
    _style(axes)
    drawn, seen = 0, []
    for s, (name, data) in enumerate(series.items()):
        colour = PALETTE[s % len(PALETTE)]
        x = np.array([np.nan if v is None else float(v) for v in data["x"]], dtype=np.float64)
        y = column(data["y"], len(x))
        usable = np.isfinite(x) & (x > 0 if log_x else True)
        if "low" in data and "high" in data:
            low, high = column(data["low"], len(x)), column(data["high"], len(x))
            band = usable & np.isfinite(low) & np.isfinite(high)
            if band.any():
                axes.fill_between(x[band], low[band], high[band], color=colour, alpha=0.15, linewidth=0)
                seen += [low[band], high[band]]
        keep = usable & np.isfinite(y)
        if not keep.any():
            continue
        seen.append(y[keep])
        if data.get("points"):
            axes.plot(x[keep], y[keep], "o", color=colour, markersize=4, label=name, zorder=4)
        else:
            axes.plot(x[keep], y[keep], "-", color=colour, linewidth=1.8, label=name)
        drawn += 1
    if not drawn:
        return ""
    for label, value in (hlines or {}).items():
        axes.axhline(value, color="#b84a62", linestyle=(0, (5, 4)), linewidth=1.2, label=label)
        seen.append(np.array([value]))
        drawn += 1
    values = np.concatenate(seen)
    lo, hi = float(values.min()), float(values.max())
    pad = (hi - lo) * 0.06 or 0.05
    lo, hi = lo - pad, hi + pad
    if low_bound is not None:
        lo = max(lo, low_bound)
    if high_bound is not None:
        hi = min(hi, high_bound + (hi - lo) * 0.01)  # room for the line's width at the bound, not beyond
    axes.set_ylim(lo, hi)
    axes.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    axes.yaxis.set_major_formatter(FuncFormatter(_number))
    if log_x:
        axes.set_xscale("log")
        xs = np.concatenate([np.asarray(line.get_xdata(), dtype=np.float64) for line in axes.get_lines()] or [[1.0]])
        xs = xs[np.isfinite(xs) & (xs > 0)]
        narrow = xs.size == 0 or xs.max() / xs.min() < 4  # less than a 1-2-5 step apart: tick every integer multiple
        axes.xaxis.set_major_locator(LogLocator(base=10, subs=tuple(range(1, 10)) if narrow else (1.0, 2.0, 5.0)))
        axes.xaxis.set_minor_formatter(NullFormatter())
    else:
        axes.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    axes.xaxis.set_major_formatter(FuncFormatter(_number))
    axes.set_xlabel(x_title + (" (log scale)" if log_x else ""))
    axes.set_ylabel(y_title)
    if title:
        axes.set_title(title, loc="left", fontsize=10, fontweight="bold")
    _legend_below(axes, drawn)
    return _svg(figure, title, "line-chart")
