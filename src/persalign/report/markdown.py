"""report.md: the whole report as one Markdown page, in the order of report.html.

    text = render_markdown(results, [benchmark_report(results, "pref-acl")])   # report.content
    Path("report/report.md").write_text(text, encoding="utf-8")

Findings and the meta-evaluation first, then per benchmark every table and its figures (linked
as the PNG files next to it, ``<benchmark>/<figure>.png``), the notes on missing data, and the
run's metadata last. Deterministic for the same results.
"""

from __future__ import annotations

from collections.abc import Sequence

from persalign.report.content import BenchmarkReport, lead_sections, run_facts
from persalign.report.formatting import slug
from persalign.report.results import RunResults
from persalign.report.tabular import to_markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(results: RunResults, parts: Sequence[BenchmarkReport]) -> str:
    name = (results.manifest or {}).get("name") or results.run_dir.name
    out = [f"# persalign report: {name}", ""]
    for section in lead_sections(parts):
        out += [f"## {section.title}", "", section.intro, ""]
        out += [to_markdown(t) for t in section.tables]
    for part in parts:
        out += [f"## {part.benchmark}", ""]
        out += [to_markdown(t) for t in part.tables]
        for figure in part.figures.values():
            out += [f"![{figure.caption}]({slug(part.benchmark)}/{figure.key}.png)", ""]
            out += [f"*{figure.caption}*", ""]
    out += ["## Data notes", ""]
    out += [f"- {issue}" for issue in results.issues] or ["Every finished cell has every metric."]
    out += ["", "## Run", "", "| field | value |", "| :-- | :-- |"]
    out += [f"| {_cell(k)} | {_cell(v)} |" for k, v in run_facts(results)]
    return "\n".join(out) + "\n"
