"""The report's ceilings table on a sim benchmark: what any reward could reach with exact
attributes (``persalign.data.sim_ceilings``), beside what the run's learned rewards reached.

    table = ceilings_table(results, "sim")     # key "reward_ceilings"; None: not a sim run

A null result reads differently when even an ideal learner could not beat chance: the global
rows say whether the simulated users share any taste one reward can learn, the support rows
whether the support pairs can tell users apart. The benchmark folder is the one the run's
manifest names; where it cannot be read (moved, changed), the table is left out with a warning
that says why, and the rest of the report is unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

from persalign.data.benchmark_folder import load_benchmark
from persalign.data.sim_ceilings import sim_ceilings
from persalign.errors import PersalignError
from persalign.report.formatting import fixed
from persalign.report.results import ORACLE_ROW, RunResults
from persalign.report.tabular import Table

log = logging.getLogger(__name__)
LEARNED = "true_rm_accuracy"


def benchmark_path(results: RunResults, benchmark: str) -> Path | None:
    """The benchmark folder the run's manifest names (``benchmarks.<label>.path``)."""
    config = (results.manifest or {}).get("config") or {}
    path = ((config.get("benchmarks") or {}).get(benchmark) or {}).get("path")
    return Path(path) if path else None


def _percent(value: float | None) -> str:
    return "--" if value is None else fixed(100 * value, 1)


def learned_range(results: RunResults, benchmark: str) -> tuple[float, float, int] | None:
    """(lowest, highest, methods): each reward method's true RM accuracy, mean over its
    seeds (the oracle aside); None where no cell has one."""
    by_method: dict[str, list[float]] = {}
    for cell in results.cells:
        method = cell.kind == "method" and cell.method != ORACLE_ROW
        if cell.benchmark == benchmark and method and LEARNED in cell.values:
            by_method.setdefault(cell.method, []).append(cell.values[LEARNED])
    if not by_method:
        return None
    means = [sum(v) / len(v) for v in by_method.values()]
    return min(means), max(means), len(means)


def ceilings_table(results: RunResults, benchmark: str, n_boot: int = 1000) -> Table | None:
    """The ceilings of ``benchmark`` and the run's learned rewards; None for a benchmark without
    true RM accuracy in its cells, or whose folder cannot be read (a warning says why)."""
    if not any(c.benchmark == benchmark and LEARNED in c.values for c in results.cells):
        return None
    path = benchmark_path(results, benchmark)
    if path is None:
        log.warning("%s: the manifest names no benchmark folder; no ceilings table", benchmark)
        return None
    verify = bool(((results.manifest or {}).get("config") or {}).get("verify", True))
    try:
        ceilings = sim_ceilings(load_benchmark(path, verify=verify), n_boot=n_boot)
    except (PersalignError, OSError) as err:
        log.warning("%s: no ceilings table, %s cannot be read: %s", benchmark, path, err)
        return None
    rows = []
    for name, row in ceilings["rows"].items():
        ci = row["ci95"]
        span = "--" if ci is None else f"[{_percent(ci[0])}, {_percent(ci[1])}]"
        rows.append([name, row["what"], _percent(row["mean"]), span])
    learned = learned_range(results, benchmark)
    if learned is not None:
        low, high, methods = learned
        rows.append(
            ["this run", f"the learned rewards of {methods} methods (means over seeds)",
             f"{_percent(low)} to {_percent(high)}", "--"]
        )  # fmt: skip
    return Table(
        key="reward_ceilings",
        title=f"What any reward could reach on {benchmark}: true RM accuracy with exact attributes",
        caption=(
            f"Rewards linear in each text's exact attributes, scored as true RM accuracy on "
            f"{ceilings['query_pairs']} query pairs of {ceilings['users']} users (per user, mean, "
            f"95% bootstrap CI over users): one reward for all (the train users' mean weights, "
            f"a fit to the {ceilings['train_pairs']} train pairs), the user's group centre, the "
            f"centre or a per-user fit from its {ceilings['support_pairs_per_user']:g} support "
            f"pairs. A method cannot beat its family's row by learning better features; if the "
            f"rows are close, no selection metric can rank the methods (persalign data ceilings)."
        ),
        columns=["Reward", "What it is", "True RM Acc (%)", "95% CI"],
        rows=rows,
    )
