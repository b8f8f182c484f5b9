"""A report table and its four renderings: Markdown, LaTeX (booktabs), CSV and HTML.

    table = Table("ranking", "RM and policy accuracy", "Mean ± std over seeds.",
                  ["Group", "Method", "RM Acc"], [["Reward models", "lore", "82.56 ± 1.12"]])
    print(to_markdown(table))
    to_latex(table), to_csv(table), to_html(table)

Cells are already formatted strings, so every rendering of the same table shows the same numbers
and the output is byte-for-byte reproducible. The first column is the row group ("Baselines");
Markdown, LaTeX and HTML show it on the first row of each group only, CSV on every row.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Table:
    """key: file stem; title and caption: what it shows; notes: footnotes under the table."""

    key: str
    title: str
    caption: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    label: str = ""  # the LaTeX label (default: tab:<key>)


def _grouped(table: Table) -> list[list[str]]:
    """Rows with the group cell blanked where it repeats the previous row's."""
    out, previous = [], None
    for row in table.rows:
        out.append(["" if row[0] == previous else row[0], *row[1:]])
        previous = row[0]
    return out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(table: Table) -> str:
    lines = [f"**{table.title}.** {table.caption}", ""]
    lines.append("| " + " | ".join(_md_cell(c) for c in table.columns) + " |")
    aligns = [":--" if i < 2 else "--:" for i in range(len(table.columns))]
    lines.append("| " + " | ".join(aligns) + " |")
    for row in _grouped(table):
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    if table.notes:
        lines.append("")
        lines.extend(f"- {note}" for note in table.notes)
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "ρ": r"$\rho$",
    "τ": r"$\tau$",
    "λ": r"$\lambda$",
    "†": r"$^\dagger$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "−": "-",
    "<": r"$<$",
    ">": r"$>$",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); group changes get a \\midrule."""
    spec = "ll" + "r" * (len(table.columns) - 2)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    previous = None
    for raw, row in zip(table.rows, _grouped(table), strict=True):
        if previous is not None and raw[0] != previous:
            lines.append(r"\midrule")
        previous = raw[0]
        lines.append(" & ".join(latex_escape(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    for note in table.notes:
        lines.append(rf"\par\smallskip{{\footnotesize {latex_escape(note)}}}")
    lines += [
        rf"\caption{{\textbf{{{latex_escape(table.title)}.}} {latex_escape(table.caption)}}}",
        rf"\label{{{table.label or 'tab:' + table.key}}}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Header and rows only (the caption lives in the Markdown, LaTeX and HTML versions)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows(table.rows)
    return buffer.getvalue()


def to_html(table: Table, anchor: str = "") -> str:
    """A <table> with caption and notes, no styling of its own (the page has one style sheet)."""
    ident = f' id="{html.escape(anchor)}"' if anchor else ""
    out = [f'<table class="results"{ident}>']
    out.append(
        f"<caption><b>{html.escape(table.title)}.</b> {html.escape(table.caption)}</caption>"
    )
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in table.columns))
    out.append("</tr></thead><tbody>")
    previous = None
    for raw, row in zip(table.rows, _grouped(table), strict=True):
        css = ' class="group-start"' if previous is not None and raw[0] != previous else ""
        previous = raw[0]
        cells = "".join(f"<td>{html.escape(c)}</td>" for c in row)
        out.append(f"<tr{css}>{cells}</tr>")
    out.append("</tbody></table>")
    if table.notes:
        out.append(
            '<ul class="notes">'
            + "".join(f"<li>{html.escape(n)}</li>" for n in table.notes)
            + "</ul>"
        )
    return "\n".join(out) + "\n"
