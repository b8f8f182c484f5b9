"""report.html: one self-contained page (inline CSS, PNGs as base64 data URIs, no scripts).

    page = render_page(results, {"pref-acl": tables}, {"pref-acl": figures})
    Path("report.html").write_text(page, encoding="utf-8")

The page opens offline in any browser: the run's manifest (name, config hash, git commit,
package versions, hardware, the resolved config), notes on missing data, then per benchmark
every table and figure.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from typing import Any

from persalign.report.figures import FigurePNG
from persalign.report.formatting import slug
from persalign.report.results import RunResults
from persalign.report.tabular import Table, to_html

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
"""


def _text(value: Any) -> str:
    if value is None:
        return "--"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _kv_rows(items: Mapping[str, Any], prefix: str = "", ordered: bool = True) -> list[str]:
    rows = []
    for key in sorted(items) if ordered else items:
        value = items[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows += _kv_rows(value, f"{name}.")
        else:
            rows.append(
                f"<tr><th>{html.escape(name)}</th><td>{html.escape(_text(value))}</td></tr>"
            )
    return rows


def manifest_section(results: RunResults) -> str:
    manifest = results.manifest or {}
    summary = {key: manifest.get(key) for key in ("name", "config_hash", "git_commit", "created")}
    summary["run folder"] = results.run_dir.name
    summary["finished cells"] = len(results.cells)
    parts = ["<section id='run'><h2>Run</h2>", '<table class="kv">']
    parts += _kv_rows(summary, ordered=False)
    for block in ("versions", "hardware"):
        value = manifest.get(block)
        if isinstance(value, Mapping):
            parts += _kv_rows(value, f"{block}.")
        else:
            parts.append(f"<tr><th>{block}</th><td>{html.escape(_text(value))}</td></tr>")
    parts.append("</table>")
    if manifest.get("config") is not None:
        config = json.dumps(manifest["config"], ensure_ascii=False, sort_keys=True, indent=2)
        parts.append(
            f"<details><summary>Resolved config</summary><pre>{html.escape(config)}</pre></details>"
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


def render_page(
    results: RunResults,
    tables: Mapping[str, list[Table]],
    figures: Mapping[str, Mapping[str, FigurePNG]],
) -> str:
    """The whole page as a string (UTF-8, deterministic for the same inputs)."""
    name = (results.manifest or {}).get("name") or results.run_dir.name
    title = f"persalign report: {name}"
    body = [f"<h1>{html.escape(title)}</h1>"]
    nav = "".join(f'<a href="#bench-{html.escape(slug(b))}">{html.escape(b)}</a>' for b in tables)
    body.append(f'<nav><a href="#run">Run</a><a href="#notes">Data notes</a>{nav}</nav>')
    body.append(manifest_section(results))
    notes = "".join(f"<li>{html.escape(issue)}</li>" for issue in results.issues)
    body.append(
        "<section id='notes'><h2>Data notes</h2>"
        + (f"<ul>{notes}</ul>" if notes else "<p>Every finished cell has every metric.</p>")
        + "</section>"
    )
    for benchmark, bench_tables in tables.items():
        anchor = f"bench-{slug(benchmark)}"
        body.append(f'<section id="{html.escape(anchor)}"><h2>{html.escape(benchmark)}</h2>')
        body += [to_html(t, f"{anchor}-{t.key}") for t in bench_tables]
        body += [figure_html(f) for f in figures.get(benchmark, {}).values()]
        body.append("</section>")
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
