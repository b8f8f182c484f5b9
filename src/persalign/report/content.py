"""The report's content, assembled once for every rendering (report.html, report.md, the files).

    parts = benchmark_report(results, "pref-acl", n_boot=1000)
    parts.findings_table, parts.meta_table    # what the report opens with
    parts.tables, parts.figures               # the paper's tables, the cost table; the figures
    run_facts(results)                        # [("name", "demo"), ("versions.torch", ...), ...]

Order of the report: the findings of every benchmark, the meta-evaluation ("Which metric
predicts generation quality?") of every benchmark, then per benchmark its tables (the paper's,
then "Quality vs cost") and figures, the notes on missing data, and the run's metadata last.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import matplotlib.style

from persalign.report.ceilings import ceilings_table
from persalign.report.cost_tables import cost_table, quality_cost_figure
from persalign.report.figures import FigurePNG, benchmark_figures
from persalign.report.findings import Finding, benchmark_findings
from persalign.report.findings_table import findings_table
from persalign.report.formatting import slug
from persalign.report.meta_evaluation import meta_evaluation, meta_evaluation_table
from persalign.report.results import RunResults
from persalign.report.sim_findings import sim_findings, spread_table
from persalign.report.sizing import sizing_table
from persalign.report.tables import benchmark_tables
from persalign.report.tabular import Table

log = logging.getLogger(__name__)

FINDINGS_TITLE = "Findings"
FINDINGS_INTRO = (
    "The paper's conclusions, tested on this run's users. Each is stated as holds, does not "
    "hold or inconclusive from a 95% bootstrap CI over users; an inconclusive one says how many "
    "users would halve its CI. The decision rules are in docs/findings.md."
)
META_TITLE = "Which metric predicts generation quality?"
META_INTRO = (
    "Every selection metric against ROUGE-1, ROUGE-L and BERTScore-F1 across (reward method, "
    "seed) units, with 95% bootstrap CIs over users; the best predictor first."
)


@dataclass(frozen=True)
class BenchmarkReport:
    benchmark: str
    findings: list[Finding]
    findings_table: Table
    meta_table: Table
    tables: list[Table]  # the paper's tables, then the cost table
    figures: dict[str, FigurePNG]

    @property
    def all_tables(self) -> list[Table]:
        return [self.findings_table, self.meta_table, *self.tables]


@dataclass(frozen=True)
class Section:
    """A section the report opens with: every benchmark's table of one kind."""

    anchor: str
    nav: str  # its link in the page's navigation
    title: str
    intro: str
    tables: list[Table]


def lead_sections(parts: Sequence[BenchmarkReport]) -> list[Section]:
    """The findings and the meta-evaluation of every benchmark, in the order the report shows."""
    return [
        Section("findings", "Findings", FINDINGS_TITLE, FINDINGS_INTRO,
                [p.findings_table for p in parts]),
        Section("meta-evaluation", "Meta-evaluation", META_TITLE, META_INTRO,
                [p.meta_table for p in parts]),
    ]  # fmt: skip


def benchmark_report(results: RunResults, benchmark: str, n_boot: int = 1000) -> BenchmarkReport:
    """Everything the report shows for one benchmark."""

    def labelled(table: Table) -> Table:
        return replace(table, label=f"tab:{slug(benchmark)}:{table.key}")

    findings = sim_findings(results, benchmark, n_boot) + benchmark_findings(
        results, benchmark, n_boot
    )
    evaluation = meta_evaluation(results, benchmark, n_boot)
    tables = benchmark_tables(results, benchmark, n_boot)
    tables.append(labelled(cost_table(results, benchmark)))
    spread = spread_table(results, benchmark)  # sim benchmarks: collapsed users
    tables += [labelled(spread)] if spread is not None else []
    ceilings = ceilings_table(results, benchmark, n_boot)  # sim: what any reward could reach
    tables += [labelled(ceilings)] if ceilings is not None else []
    cell_seconds = sum(c.seconds or 0.0 for c in results.cells if c.benchmark == benchmark)
    sizing = sizing_table(findings, benchmark, n_boot, cell_seconds or None)  # users to decide
    tables += [labelled(sizing)] if sizing is not None else []
    figures = benchmark_figures(results, benchmark)
    with matplotlib.style.context("default"):
        figure = quality_cost_figure(results, benchmark)
    if figure is None:
        log.warning("%s: quality_cost_figure has no data to plot; left out", benchmark)
    else:
        figures[figure.key] = figure
    return BenchmarkReport(
        benchmark,
        findings,
        labelled(findings_table(findings, benchmark, n_boot)),
        labelled(meta_evaluation_table(results, benchmark, evaluation)),
        tables,
        figures,
    )


def text(value: Any) -> str:
    if value is None:
        return "--"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def flatten(
    items: Mapping[str, Any], prefix: str = "", ordered: bool = True
) -> list[tuple[str, str]]:
    """Nested mappings as ("a.b", "value") pairs (sorted keys unless ``ordered`` is false)."""
    out = []
    for key in sorted(items) if ordered else items:
        value, name = items[key], f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += flatten(value, f"{name}.")
        else:
            out.append((name, text(value)))
    return out


def run_facts(results: RunResults) -> list[tuple[str, str]]:
    """The run's metadata as (field, value): name, hash, commit, cells, versions, hardware."""
    manifest = results.manifest or {}
    summary = {key: manifest.get(key) for key in ("name", "config_hash", "git_commit", "created")}
    summary["run folder"] = results.run_dir.name
    summary["finished cells"] = len(results.cells)
    facts = flatten(summary, ordered=False)
    for block in ("versions", "hardware"):
        value = manifest.get(block)
        if isinstance(value, Mapping):
            facts += flatten(value, f"{block}.")
        else:
            facts.append((block, text(value)))
    return facts
