"""Quality vs cost: what each method and baseline costs on the machine the run used.

    table = cost_table(results, "pref-acl")             # key "cost": one row per policy and row
    figure = quality_cost_figure(results, "pref-acl")   # "fig4_quality_cost" (or None)

Reads each cell's ``cost`` block (results.COST_KEYS: training seconds, adaptation seconds per
user, decoding seconds per generated token, policy and reward forward passes per token, tokens
generated, peak RSS and peak GPU memory in MiB, the share of the cell's time spent starting:
loads and imports; null where it does not apply, e.g. baselines have no training) next to
ROUGE-1. Values are the mean ± std over seeds, three significant digits; "--" where no seed
has the value. The figure: ROUGE-1 against decoding seconds per token, one point per method
and baseline with error bars (std over seeds) on both axes, one panel per policy scale. These
are wall-clock measurements: unlike the other tables they change from run to run, and only
compare rows measured on the same hardware.
"""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import NullFormatter

from persalign.report.figures import FigurePNG, _colors, _png, label_panel, panel_grid
from persalign.report.formatting import NA, fmt_stat
from persalign.report.results import RunResults, Stat
from persalign.report.tabular import Table

COST_LABELS = {  # every one of results.COST_KEYS, in the order the table shows them
    "decode_seconds_per_token": "s / token",
    "policy_forwards_per_token": "Policy fwd / token",
    "reward_forwards_per_token": "Reward fwd / token",
    "tokens_generated": "Tokens",
    "train_seconds": "Train s",
    "adapt_seconds_per_user": "Adapt s / user",
    "peak_rss_mib": "Peak RSS (MiB)",
    "peak_gpu_mib": "Peak GPU (MiB)",
    "start_share": "Start share",
}


def significant(value: float) -> str:
    """Three significant digits; whole numbers from 1000 on ("0.0123", "12.3", "4096")."""
    if value != 0 and abs(value) < 1000:
        return f"{value:.3g}"
    return f"{value:.0f}"


def fmt_cost(stat: Stat | None) -> str:
    return NA if stat is None else f"{significant(stat.mean)} ± {significant(stat.std)}"


def cost_table(results: RunResults, benchmark: str) -> Table:
    """ROUGE-1 and every cost of each (policy, row): one row per cell group of the run."""
    rows = []
    for column in results.policies(benchmark):
        for row in results.rows(benchmark):
            rouge = results.stat(benchmark, column.policy, row.label, "rouge1")
            costs = [
                fmt_cost(results.cost_stat(benchmark, column.policy, row.label, key))
                for key in COST_LABELS
            ]
            rows.append([column.label, row.label, fmt_stat(rouge), *costs])
    return Table(
        key="cost",
        title=f"Quality vs cost on {benchmark}",
        caption=(
            "ROUGE-1 (%) and what each method and baseline cost on this run's hardware: decoding "
            "seconds and forward passes per generated token, tokens generated, training and "
            "per-user adaptation seconds of the reward model, peak memory, and the share of "
            "each cell's time spent starting (model loads, benchmark verification)."
        ),
        columns=["Policy", "Method", "ROUGE-1 (%)", *COST_LABELS.values()],
        rows=rows,
        notes=[
            "Mean ± std over seeds (ROUGE-1 in %, costs to three significant digits); -- = not "
            "recorded or not applicable (baselines train nothing). Wall-clock values vary "
            "between runs and machines: compare rows of one run."
        ],
    )


def quality_cost_figure(results: RunResults, benchmark: str) -> FigurePNG | None:
    """ROUGE-1 against decoding seconds per token, one panel per scale (call inside
    matplotlib.style.context("default"), as figures.benchmark_figures does)."""
    colors = _colors(results, benchmark)
    panels = []
    for column in results.policies(benchmark):
        points = []
        for row in results.rows(benchmark):
            x = results.cost_stat(benchmark, column.policy, row.label, "decode_seconds_per_token")
            y = results.stat(benchmark, column.policy, row.label, "rouge1")
            if x is not None and y is not None:
                points.append((row, x, y))
        if points:
            panels.append((column, points))
    if not panels:
        return None
    fig, axes = panel_grid(len(panels), 3, (5.2, 4.2))
    for ax, (column, points) in zip(axes, panels, strict=True):
        for row, x, y in points:
            ax.errorbar(
                [x.mean], [y.mean * 100], xerr=[x.std], yerr=[y.std * 100],
                marker="o" if row.kind == "method" else "s", markersize=5, capsize=2,
                linestyle="none", color=colors[row.label],
            )  # fmt: skip
            ax.annotate(
                row.label, (x.mean, y.mean * 100), xytext=(4, 3), textcoords="offset points",
                fontsize=7,
            )  # fmt: skip
        xs = np.array([x.mean for _, x, _ in points])
        if np.all(xs > 0) and xs.max() > 10 * xs.min():  # a log axis for spreads over 10x
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        label_panel(ax, column.label, "decoding seconds per generated token", "ROUGE-1 (%)")
    fig.suptitle(f"Quality vs cost: {benchmark}")
    return FigurePNG(
        "fig4_quality_cost",
        f"{benchmark}: ROUGE-1 against decoding seconds per generated token, one point per "
        "reward method (circles) and baseline (squares), error bars: std over seeds; on this "
        "run's hardware.",
        _png(fig),
    )
