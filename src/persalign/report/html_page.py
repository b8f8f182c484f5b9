"""report.html: one self-contained page (inline CSS, PNGs as base64 data URIs, no scripts).

    page = render_page(results, [benchmark_report(results, "pref-acl")])   # report.content
    Path("report.html").write_text(page, encoding="utf-8")

The page opens offline in any browser. It opens with the findings and the meta-evaluation of
every benchmark, then per benchmark every table and figure, the notes on missing data, and ends
with the run's manifest (name, config hash, git commit, package versions, hardware, the resolved
config).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence

from persalign.report.content import BenchmarkReport, Section, lead_sections, run_facts
from persalign.report.figures import FigurePNG
from persalign.report.formatting import slug
from persalign.report.results import RunResults
from persalign.report.tabular import to_html

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ccc; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: 1rem 0 0.3rem; font-size: 0.85rem; }
th, td { padding: 0.2rem 0.6rem; border-bottom: 1px solid #e4e4e4; text-align: right; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
thead th { border-bottom: 2px solid #555; }
tr.group-start td { border-top: 2px solid #999; }
caption { caption-side: top; text-align: left; padding-bottom: 0.3rem; }
table.kv td, table.kv th { text-align: left; vertical-align: top; }
ul.notes { font-size: 0.8rem; color: #555; margin-top: 0; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85rem; color: #444; }
pre { background: #f6f6f6; padding: 0.8rem; overflow-x: auto; font-size: 0.8rem; }
nav a { margin-right: 1rem; }
table[id$="findings"] td, table[id$="findings"] th { text-align: left; vertical-align: top; }
table[id$="findings"] td:nth-child(5), table[id$="findings"] td:nth-child(6) { text-align: right;
       white-space: nowrap; }
table[id$="meta_evaluation"] td:nth-child(3), table[id$="meta_evaluation"] th:nth-child(3) {
       text-align: left; }
"""


def _kv_rows(facts: list[tuple[str, str]]) -> list[str]:
    return [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts]


def manifest_section(results: RunResults) -> str:
    parts = ["<section id='run'><h2>Run</h2>", '<table class="kv">', *_kv_rows(run_facts(results))]
    parts.append("</table>")
    config = (results.manifest or {}).get("config")
    if config is not None:
        dumped = json.dumps(config, ensure_ascii=False, sort_keys=True, indent=2)
        parts.append(
            f"<details><summary>Resolved config</summary><pre>{html.escape(dumped)}</pre></details>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def figure_html(figure: FigurePNG) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (
        f'<figure id="{html.escape(figure.key)}">'
        f'<img alt="{html.escape(figure.caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
    )


def _lead_section(section: Section) -> str:
    body = [
        f"<section id='{section.anchor}'><h2>{html.escape(section.title)}</h2>"
        f"<p>{html.escape(section.intro)}</p>"
    ]
    body += [to_html(t, slug(t.label or t.key)) for t in section.tables]
    return "\n".join([*body, "</section>"])


def render_page(results: RunResults, parts: Sequence[BenchmarkReport]) -> str:
    """The whole page as a string (UTF-8, deterministic for the same inputs)."""
    name = (results.manifest or {}).get("name") or results.run_dir.name
    title = f"persalign report: {name}"
    body = [f"<h1>{html.escape(title)}</h1>"]
    nav = "".join(
        f'<a href="#bench-{html.escape(slug(p.benchmark))}">{html.escape(p.benchmark)}</a>'
        for p in parts
    )
    sections = lead_sections(parts)
    lead = "".join(f'<a href="#{s.anchor}">{html.escape(s.nav)}</a>' for s in sections)
    body.append(f'<nav>{lead}{nav}<a href="#notes">Data notes</a><a href="#run">Run</a></nav>')
    body += [_lead_section(s) for s in sections]
    for part in parts:
        anchor = f"bench-{slug(part.benchmark)}"
        body.append(f'<section id="{html.escape(anchor)}"><h2>{html.escape(part.benchmark)}</h2>')
        body += [to_html(t, f"{anchor}-{t.key}") for t in part.tables]
        body += [figure_html(f) for f in part.figures.values()]
        body.append("</section>")
    notes = "".join(f"<li>{html.escape(issue)}</li>" for issue in results.issues)
    body.append(
        "<section id='notes'><h2>Data notes</h2>"
        + (f"<ul>{notes}</ul>" if notes else "<p>Every finished cell has every metric.</p>")
        + "</section>"
    )
    body.append(manifest_section(results))
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
