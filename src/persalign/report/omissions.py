"""What a table leaves out, said under it: "n/a" and "no pairs" cells and the metrics' own counts.

    value(results, "pref-acl", "smol-135m", "pal", "policy_accuracy", 3)   # 'n/a (no ARGS)'
    row_name(row)                                   # 'pal (no ARGS)' for a method without RGD
    left_out_note(table)       # "Left out: 4 value(s) not applicable (n/a ...), 0 ..., 1 missing"
    counted_notes(results, "pref-acl", None, "win_rate.")   # unpaired and empty win-rate pairs

A cell without a number says why (``RunResults.status``: not applicable to the method, computed
on no pairs) and each table counts those cells; the counts a metric block keeps of what it could
not score (reading.LEFT_OUT_COUNTS) are summed over the table's cells.
"""

from __future__ import annotations

from persalign.report.cell_parsing import LEFT_OUT_COUNTS, NO_RGD, TRAITS
from persalign.report.formatting import NA, fmt_stat
from persalign.report.results import Row, RunResults
from persalign.report.tabular import Table


def row_name(row: Row) -> str:
    """The Method column: "pal (no ARGS)" for a method without RGD under an ARGS group."""
    return f"{row.label} ({TRAITS[NO_RGD]})" if NO_RGD in row.traits else row.label


def value(
    results: RunResults, benchmark: str, policy: str, row: str, metric: str, expected: int
) -> str:
    """A table cell: "mean ± std", else why there is none ("n/a (no ARGS)", "no pairs", --)."""
    stat = results.stat(benchmark, policy, row, metric)
    if stat is None:
        return results.status(benchmark, policy, row, metric) or NA
    return fmt_stat(stat, expected)


def left_out_note(table: Table) -> Table:
    """Under the table: how many cells show n/a or "no pairs" (not a number, on purpose)."""
    shown = [cell for r in table.rows for cell in r[2:]]
    na = sum(cell.startswith("n/a") for cell in shown)
    empty = sum(cell == "no pairs" for cell in shown)
    missing = sum(cell == NA for cell in shown)
    table.notes.append(
        f"Left out: {na} value(s) not applicable (n/a: the method has no ARGS or no RM "
        f"accuracy, as in the paper), {empty} computed on no pairs (no pairs), {missing} "
        "shown as -- (no such value for the row, e.g. a baseline's RM accuracy, or missing: "
        "missing values are listed under Data notes)."
    )
    return table


def counted_notes(
    results: RunResults, benchmark: str, policy: str | None, prefix: str
) -> list[str]:
    """ "Left out by the metric: 3 references without a generation" (summed over cells)."""
    counts = results.left_out(benchmark, policy, prefix)
    what = ", ".join(f"{n} {LEFT_OUT_COUNTS[k][0]}" for k, n in counts.items()) or "nothing"
    return [
        f"Left out by the metric ({prefix.rstrip('.') or 'every metric'}, over all cells): {what}."
    ]


def win_pairs_notes(results: RunResults, benchmark: str) -> list[str]:
    return counted_notes(results, benchmark, None, "win_rate.")


def generation_notes(results: RunResults, benchmark: str, policy: str) -> list[str]:
    return counted_notes(results, benchmark, policy, "generation.")
