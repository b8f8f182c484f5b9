"""The paper's figures as PNG bytes, drawn with matplotlib's Agg backend (no display needed).

    figures = benchmark_figures(results, "pref-acl")   # {"fig1_rm_vs_policy": FigurePNG, ...}
    Path("fig1.png").write_bytes(figures["fig1_rm_vs_policy"].png)

- ``fig1_rm_vs_policy``: RM accuracy against policy accuracy, one panel per scale, with the
  least-squares line and Pearson r / Spearman ρ / Kendall τ in the legend (the paper's Fig. 1);
  its points are the correlation units (``report.correlation_units``: reward methods, (method,
  seed) or (method, user); see correlation_tables), named in the caption;
- ``fig2_generation_vs_scale``: ROUGE-1, ROUGE-L and BERTScore-F1 against the policy scale
  (x = scale_params on a log axis, labelled by scale) for every reward method, zero-shot and the
  ICL / ICL-RAG baselines at their largest shot count (Fig. 2);
- ``fig3_icl_shots``: ROUGE-1 against the number of shots for ICL and ICL-RAG, one colour per
  scale, zero-shot at 0 shots (Fig. 3).

Error bars are the std over seeds. A figure with nothing to plot is left out (and logged).
Output is deterministic: the default style, a fixed size and dpi, and no PNG metadata, so the
same results give the same bytes.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass

import matplotlib
import matplotlib.style
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, NullLocator

from persalign.report.correlation_tables import (
    UNITS,
    correlate,
    correlation_points,
    correlation_units,
)
from persalign.report.formatting import LABELS
from persalign.report.results import Row, RunResults

log = logging.getLogger(__name__)

DPI = 100
# tab10 first, then tab20's lighter shades: 20 distinct colours in a fixed order.
_TAB20 = matplotlib.colormaps["tab20"].colors
PALETTE = [matplotlib.colors.to_hex(c) for c in (*_TAB20[0::2], *_TAB20[1::2])]


@dataclass(frozen=True)
class FigurePNG:
    key: str
    caption: str
    png: bytes


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _colors(results: RunResults, benchmark: str) -> dict[str, str]:
    """One colour per row, the same in every figure of a benchmark."""
    return {row.label: PALETTE[i % len(PALETTE)] for i, row in enumerate(results.rows(benchmark))}


def panel_grid(n: int, max_cols: int, size: tuple[float, float]) -> tuple[Figure, list]:
    """A figure of ``n`` panels (``size`` inches each), rows of at most ``max_cols``; the n axes
    (the grid's unused ones hidden)."""
    ncols = min(n, max_cols)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def label_panel(ax: object, title: str, xlabel: str, ylabel: str) -> None:
    """A scale's panel: its title, the axis labels and a light grid."""
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _r(result: dict | None, statistic: str) -> float | None:
    value = ((result or {}).get(statistic) or {}).get("r")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _method(label: str, units: str) -> str:
    """The reward method a point's label names ("lore s1" -> "lore")."""
    return label if units == "methods" else label.split(" ", 1)[0]  # labels have no spaces


def rm_vs_policy(results: RunResults, benchmark: str, units: str | None = None) -> FigurePNG | None:
    """Fig. 1: one scatter per scale, units as points, the fitted line, r in the legend."""
    units = correlation_units(results, units)
    columns = results.policies(benchmark)
    panels = [
        (
            c,
            *correlation_points(
                results, benchmark, c.policy, "rm_accuracy", "policy_accuracy", units
            ),
        )
        for c in columns
    ]
    if not any(names for _, names, _, _ in panels):
        return None
    colors = _colors(results, benchmark)
    fig, axes = panel_grid(len(panels), 4, (4.2, 3.8))
    for ax, (column, names, xs, ys) in zip(axes, panels, strict=True):
        x, y = np.asarray(xs) * 100, np.asarray(ys) * 100
        for name, xi, yi in zip(names, x, y, strict=True):
            ax.scatter([xi], [yi], color=colors[_method(name, units)], s=28, zorder=3)
            if units != "users":  # (method, user) points are too many to name
                ax.annotate(name, (xi, yi), xytext=(3, 3), textcoords="offset points", fontsize=7)
        if len(x) >= 2 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            grid = np.array([x.min(), x.max()])
            result = correlate(xs, ys)
            stats = [
                f"{sym} = {value:.2f}"
                for sym, stat in (("r", "pearson"), ("ρ", "spearman"), ("τ", "kendall"))
                if (value := _r(result, stat)) is not None
            ]
            label = "least-squares fit" + (f": {', '.join(stats)}" if stats else "")
            ax.plot(grid, slope * grid + intercept, "--", color="0.3", label=label)
            ax.legend(loc="best", fontsize=7)
        ax.margins(0.15)
        label_panel(ax, column.label, "RM accuracy (%)", "Policy accuracy (%)")
    fig.suptitle(f"RM accuracy vs policy accuracy: {benchmark}")
    return FigurePNG(
        "fig1_rm_vs_policy",
        f"{benchmark}: RM accuracy against policy accuracy per scale, with the least-squares "
        f"line and the correlations (cf. Fig. 1). Units ({units}): {UNITS[units]}; reward "
        "methods without RGD (PAL) or without RM accuracy (P-DPO) have no point.",
        _png(fig),
    )


def _figure2_rows(results: RunResults, benchmark: str) -> list[Row]:
    rows = results.rows(benchmark)
    largest: dict[str, int] = {}
    for row in rows:
        if row.kind == "baseline" and row.shots is not None:
            largest[row.method] = max(largest.get(row.method, row.shots), row.shots)
    return [
        r for r in rows if r.kind == "method" or r.shots is None or r.shots == largest.get(r.method)
    ]


def generation_vs_scale(results: RunResults, benchmark: str) -> FigurePNG | None:
    """Fig. 2: ROUGE-1, ROUGE-L, BERTScore-F1 against scale, one line per method/baseline."""
    columns = results.policies(benchmark)
    params = [c.scale_params for c in columns]
    log_axis = all(p is not None and p > 0 for p in params)
    positions = (
        [float(p) for p in params] if log_axis else [float(i + 1) for i in range(len(params))]
    )
    rows = _figure2_rows(results, benchmark)
    colors = _colors(results, benchmark)
    metrics = ("rouge1", "rougeL", "bertscore_f1")
    fig = Figure(figsize=(14, 4.4), layout="constrained")
    axes = fig.subplots(1, len(metrics))
    handles: dict[str, object] = {}
    for ax, metric in zip(axes, metrics, strict=True):
        for row in rows:
            points = [
                (pos, stat)
                for pos, column in zip(positions, columns, strict=True)
                if (stat := results.stat(benchmark, column.policy, row.label, metric)) is not None
            ]
            if not points:
                continue
            handle = ax.errorbar(
                [p for p, _ in points],
                [s.mean * 100 for _, s in points],
                yerr=[s.std * 100 for _, s in points],
                marker="o" if row.kind == "method" else "s",
                markersize=4,
                capsize=2,
                linestyle="-" if row.kind == "method" else "--",
                color=colors[row.label],
                label=row.label,
            )
            handles.setdefault(row.label, handle)
        if log_axis:
            ax.set_xscale("log")
        ax.set_xticks(positions, [c.label for c in columns])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("policy scale")
        ax.set_ylabel(f"{LABELS[metric]} (%)")
        ax.grid(alpha=0.3)
    if not handles:
        return None
    ordered = [r.label for r in rows if r.label in handles]
    fig.legend([handles[k] for k in ordered], ordered, loc="outside right upper", fontsize=8)
    fig.suptitle(f"Generation quality against policy scale: {benchmark}")
    return FigurePNG(
        "fig2_generation_vs_scale",
        f"{benchmark}: ROUGE-1, ROUGE-L and BERTScore-F1 against policy scale for every reward "
        "method (RGD) and baseline (ICL / ICL-RAG at their largest shot count) (cf. Fig. 2).",
        _png(fig),
    )


def icl_shots(results: RunResults, benchmark: str) -> FigurePNG | None:
    """Fig. 3: ROUGE-1 against shots for ICL (dashed) and ICL-RAG (solid), per scale."""
    rows = [
        r
        for r in results.rows(benchmark, "baseline")
        if r.method in ("icl", "icl-rag") and r.shots is not None
    ]
    if not rows:
        return None
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.subplots()
    ticks: set[int] = set()
    for i, column in enumerate(results.policies(benchmark)):
        color = PALETTE[i % len(PALETTE)]
        for method, style in (("icl", "--"), ("icl-rag", "-")):
            points = sorted(
                (r.shots, stat)
                for r in rows
                if r.method == method
                and (stat := results.stat(benchmark, column.policy, r.label, "rouge1")) is not None
            )
            if points:
                ticks.update(s for s, _ in points)
                ax.errorbar(
                    [s for s, _ in points],
                    [st.mean * 100 for _, st in points],
                    yerr=[st.std * 100 for _, st in points],
                    marker="o",
                    markersize=4,
                    capsize=2,
                    linestyle=style,
                    color=color,
                    label=f"{method.upper()} {column.label}",
                )
        zero = results.stat(benchmark, column.policy, "zero-shot", "rouge1")
        if zero is not None and ticks:
            ticks.add(0)
            ax.errorbar(
                [0], [zero.mean * 100], yerr=[zero.std * 100], marker="x", capsize=2,
                linestyle="none", color=color, label=f"zero-shot {column.label}",
            )  # fmt: skip
    if not ticks:
        return None
    ax.set_xticks(sorted(ticks))
    ax.set_xlabel("in-context examples (shots)")
    ax.set_ylabel("ROUGE-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"ROUGE-1 against the number of shots: {benchmark}")
    return FigurePNG(
        "fig3_icl_shots",
        f"{benchmark}: ROUGE-1 against the number of in-context examples for ICL (dashed) and "
        "ICL-RAG (solid) per policy scale; zero-shot at 0 shots (cf. Fig. 3).",
        _png(fig),
    )


def benchmark_figures(results: RunResults, benchmark: str) -> dict[str, FigurePNG]:
    """Every figure that has data, by key; missing ones are logged."""
    out = {}
    with matplotlib.style.context("default"):
        for draw in (rm_vs_policy, generation_vs_scale, icl_shots):
            figure = draw(results, benchmark)
            if figure is None:
                log.warning("%s: %s has no data to plot; left out", benchmark, draw.__name__)
            else:
                out[figure.key] = figure
    return out
