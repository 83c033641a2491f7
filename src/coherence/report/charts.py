"""The report's charts: matplotlib figures as inline SVG (no JavaScript, nothing fetched).

Text stays text in the SVG (``svg.fonttype: none``), so the browser draws labels in its own fonts
(Hangul included). Each figure gets its own hash salt so that ids inside two SVGs never collide.
"""

from __future__ import annotations

import io
import re
from typing import Any

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _svg(fig: Any, name: str) -> str:
    plt = _plt()
    buf = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop the XML prolog and doctype: inline in HTML
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)  # the RDF creator block
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 class="chart" role="img" aria-label="'
                  + name + '" width="100%"', text, count=1)


def grouped_bars(categories: list[str], series: dict[str, list[float]], *, name: str, title: str,
                 ylabel: str = "", horizontal: bool = False, height: float = 3.2, percent: bool = False) -> str:
    """Bars per category, one colour per series."""
    plt = _plt()
    width = max(5.5, 0.55 * len(categories) * max(1, len(series)) ** 0.5 + 2)
    fig, ax = plt.subplots(figsize=(min(width, 11), height) if not horizontal
                           else (8, max(2.2, 0.35 * len(categories) * max(1, len(series)) ** 0.5 + 1)))
    n = max(1, len(series))
    step = 0.8 / n
    for i, (label, values) in enumerate(series.items()):
        pos = [k - 0.4 + step * (i + 0.5) for k in range(len(categories))]
        vals = [v if v is not None else 0 for v in values]
        if horizontal:
            ax.barh(pos, vals, height=step, label=label, color=PALETTE[i % len(PALETTE)])
        else:
            ax.bar(pos, vals, width=step, label=label, color=PALETTE[i % len(PALETTE)])
    if horizontal:
        ax.set_yticks(range(len(categories)), categories, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
    else:
        ax.set_xticks(range(len(categories)), categories, fontsize=8,
                      rotation=30 if max((len(c) for c in categories), default=0) > 8 else 0, ha="right"
                      if max((len(c) for c in categories), default=0) > 8 else "center")
        ax.set_ylabel(ylabel)
    if percent:
        (ax.xaxis if horizontal else ax.yaxis).set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)
    ax.set_axisbelow(True)
    if len(series) > 1:
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _svg(fig, name)


def heatmap(rows: list[str], cols: list[str], values: list[list[float | None]], labels: list[list[str]], *,
            name: str, title: str, xlabel: str = "", cmap: str = "Blues") -> str:
    """A grid of cells coloured by value, each labelled."""
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(cols) + 3), max(2.0, 0.45 * len(rows) + 1)))
    data = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0, vmax=max(1e-9, np.nanmax(data) if data.size and
                                                                        not np.isnan(data).all() else 1), aspect="auto")
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i, row in enumerate(labels):
        for j, text in enumerate(row):
            v = data[i, j]
            dark = not np.isnan(v) and v > 0.6 * (np.nanmax(data) or 1)
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    return _svg(fig, name)


def lines(panels: list[tuple[str, dict[str, list[tuple[float, float]]]]], *, name: str, title: str) -> str:
    """Small multiples of line series (x, y): one panel per (title, {label: points})."""
    plt = _plt()
    cols = min(2, len(panels)) or 1
    rows = (len(panels) + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 2.8 * rows), squeeze=False)
    for ax, (label, series) in zip(axes.flat, panels):
        for i, (key, pts) in enumerate(series.items()):
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, "o--" if key.startswith("held-out") else "-", markersize=3, label=key,
                        color=PALETTE[i % len(PALETTE)])
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, frameon=False, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _svg(fig, name)


def intervals(labels: list[str], values: list[float | None], cis: list[list[float] | None], *, name: str,
              title: str, xlabel: str = "") -> str:
    """Points with their confidence intervals, one row per label."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, max(1.8, 0.4 * len(labels) + 1)))
    for i, (v, ci) in enumerate(zip(values, cis)):
        if v is None:
            continue
        if ci:
            ax.plot([ci[0], ci[1]], [i, i], color=PALETTE[0], linewidth=2)
        ax.plot([v], [i], "o", color=PALETTE[3])
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig, name)
