"""A finished (or partly finished) run as the report sees it: cells indexed for aggregation.

    results = load_run("runs/demo")            # persalign.report.reading
    results.benchmarks()                        # ['pref-acl']
    [p.label for p in results.policies("pref-acl")]
    # ['135M', '360M']
    results.stat("pref-acl", "smol-135m", "lore", "policy_accuracy")
    # Stat(mean=0.72, std=0.02, n=2)

Every cell is one (benchmark, policy, row, seed); a *row* is a reward method ("lore") or a baseline
("zero-shot", "icl-4", "icl-rag-4": method and shot count). Aggregates over seeds are the mean and
the population standard deviation (ddof=0) of the per-seed values, so one seed gives std 0.
"""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persalign.metrics.base import Column

log = logging.getLogger(__name__)

BASELINE_ORDER = {"zero-shot": 0, "icl": 1, "icl-rag": 2}
ORACLE_ROW = "oracle"  # sim benchmarks' ceiling (reward method oracle): not a meta-evaluation unit
# the numbers of a cell's ``cost`` block (wall clock, forward passes, memory); read only by the
# cost table and figure (report.cost), never by the quality tables
COST_KEYS = (
    "train_seconds",
    "adapt_seconds_per_user",
    "decode_seconds_per_token",
    "policy_forwards_per_token",
    "reward_forwards_per_token",
    "tokens_generated",
    "peak_rss_mib",
    "peak_gpu_mib",
    "start_share",
)


@dataclass(frozen=True)
class Stat:
    """Mean and population std over seeds of per-seed values, and how many seeds had one."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        if not values:
            return None
        return cls(statistics.fmean(values), statistics.pstdev(values), len(values))


@dataclass(frozen=True)
class Cell:
    """One finished cell: its coordinates and the scalar (and per-user) value of each metric."""

    cell: str
    benchmark: str
    policy: str
    scale: str
    scale_params: float | None
    seed: int
    kind: str
    method: str
    shots: int | None
    values: dict[str, float]
    per_user: dict[str, dict[str, float]]
    bertscore_model: str | None
    personalized: bool | None = None  # a reward method's kind; None: not recorded (older runs)
    bertscore_rescaled: bool | None = None  # with a bertscore_model: baseline-rescaled or raw
    win_tie_weight: float | None = None  # what a tie counted as in the win rate (0.5: half)
    cost: dict[str, float] = field(default_factory=dict)  # COST_KEYS that are not null
    seconds: float | None = None  # the cell's wall time (metrics.json): report.sizing's cost
    # metric -> why it does not apply to this method ("no ARGS", "no RM accuracy"): from the
    # method class's supports_rgd / has_rm_accuracy (cell_parsing.method_traits)
    not_applicable: dict[str, str] = field(default_factory=dict)
    no_pairs: frozenset[str] = frozenset()  # metrics computed on no pairs ("no pairs", no number)
    traits: frozenset[str] = frozenset()  # reading.TRAITS of the method's class
    left_out: dict[str, int] = field(default_factory=dict)  # reading.LEFT_OUT_COUNTS, nonzero
    seed_free: bool = False  # a baseline planned once for every seed (decoding.seed_free)

    @property
    def unit(self) -> str:
        """The cell as a (row, seed) unit of the meta-evaluation: "lore s0"."""
        return f"{self.row} s{self.seed}"

    @property
    def row(self) -> str:
        """The table row: the method, or the baseline with its shot count ("icl-4")."""
        if self.kind == "baseline" and self.shots is not None and self.method != "zero-shot":
            return f"{self.method}-{self.shots}"
        return self.method

    @property
    def row_key(self) -> tuple[Any, ...]:
        """Sort order: personalized, global, then unrecorded reward methods by name; then
        zero-shot, ICL and ICL-RAG by shots (the paper's Tables 2-4)."""
        if self.kind == "method":
            return (0, {True: 0, False: 1}.get(self.personalized, 2), 0, self.method)
        return (1, BASELINE_ORDER.get(self.method, 3), self.shots or 0, self.method)


@dataclass(frozen=True)
class PolicyColumn:
    """A policy as a table column: labelled by its scale (or "scale (policy)" where ambiguous)."""

    policy: str
    label: str
    scale: str
    scale_params: float | None


@dataclass(frozen=True)
class Row:
    label: str
    kind: str
    method: str
    shots: int | None
    personalized: bool | None = None
    traits: frozenset[str] = frozenset()  # reading.TRAITS of the method's class


@dataclass
class RunResults:
    """Everything the report needs, indexed by (benchmark, policy, row)."""

    run_dir: Path
    manifest: dict[str, Any] | None
    cells: list[Cell]
    issues: list[str] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)  # what each cell's values were read for

    def __post_init__(self) -> None:
        self._index: dict[tuple[str, str, str], list[Cell]] = defaultdict(list)
        for cell in sorted(self.cells, key=lambda c: (c.benchmark, c.policy, c.row_key, c.seed)):
            self._index[(cell.benchmark, cell.policy, cell.row)].append(cell)

    def benchmarks(self) -> list[str]:
        return sorted({c.benchmark for c in self.cells})

    def policies(self, benchmark: str) -> list[PolicyColumn]:
        """The benchmark's policies, ordered by scale_params (then scale and name)."""
        first: dict[str, Cell] = {}
        for cell in sorted(self.cells, key=lambda c: c.cell):
            if cell.benchmark == benchmark:
                first.setdefault(cell.policy, cell)
        cells = sorted(
            first.values(),
            key=lambda c: (c.scale_params is None, c.scale_params or 0.0, c.scale, c.policy),
        )
        scales = [c.scale for c in cells]
        return [
            PolicyColumn(
                c.policy,
                c.scale if scales.count(c.scale) == 1 else f"{c.scale} ({c.policy})",
                c.scale,
                c.scale_params,
            )
            for c in cells
        ]

    def rows(self, benchmark: str, kind: str | None = None) -> list[Row]:
        """The benchmark's rows in table order, optionally only one kind."""
        found: dict[str, Cell] = {}
        for cell in self.cells:
            if cell.benchmark == benchmark and (kind is None or cell.kind == kind):
                found.setdefault(cell.row, cell)
        ordered = sorted(found.values(), key=lambda c: c.row_key)
        return [Row(c.row, c.kind, c.method, c.shots, c.personalized, c.traits) for c in ordered]

    def unit_rows(self, benchmark: str) -> list[Row]:
        """The reward-method rows that are correlation units: every method but the oracle (a
        sim benchmark's ceiling, never a unit of the findings, meta-evaluation or tables)."""
        return [r for r in self.rows(benchmark, "method") if r.label != ORACLE_ROW]

    def seed_values(self, benchmark: str, policy: str, row: str, metric: str) -> dict[int, float]:
        return {
            c.seed: c.values[metric]
            for c in self._index.get((benchmark, policy, row), [])
            if metric in c.values
        }

    def stat(self, benchmark: str, policy: str, row: str, metric: str) -> Stat | None:
        """Mean and std over seeds of one metric; None where no seed has a value."""
        values = self.seed_values(benchmark, policy, row, metric)
        return Stat.of([values[s] for s in sorted(values)])

    def stat_over_policies(self, benchmark: str, row: str, metric: str) -> Stat | None:
        """Per seed the mean over policies (RM accuracy is shared by policies), then over seeds."""
        by_seed: dict[int, list[float]] = defaultdict(list)
        for column in self.policies(benchmark):
            for seed, value in self.seed_values(benchmark, column.policy, row, metric).items():
                by_seed[seed].append(value)
        for seed, values in sorted(by_seed.items()):
            if max(values) - min(values) > 1e-9:
                log.warning(
                    "%s: %s %s differs between policies for seed %d (%s); showing their mean",
                    benchmark, row, metric, seed, ", ".join(f"{v:.4f}" for v in values),
                )  # fmt: skip
        return Stat.of([statistics.fmean(by_seed[s]) for s in sorted(by_seed)])

    def per_user(self, benchmark: str, policy: str, row: str, metric: str) -> dict[str, float]:
        """Per user, the mean over the seeds that have a value for that user."""
        pooled: dict[str, list[float]] = defaultdict(list)
        for cell in self._index.get((benchmark, policy, row), []):
            for user, value in cell.per_user.get(metric, {}).items():
                pooled[user].append(value)
        return {user: statistics.fmean(v) for user, v in sorted(pooled.items())}

    def status(self, benchmark: str, policy: str, row: str, metric: str) -> str | None:
        """Why a row has no value: "n/a (no ARGS)" where the metric does not apply to the
        method, "no pairs" where it was computed on none; None otherwise."""
        cells = self._index.get((benchmark, policy, row), [])
        if any(metric in c.values for c in cells):
            return None
        reasons = sorted({c.not_applicable[metric] for c in cells if metric in c.not_applicable})
        if reasons:
            return f"n/a ({', '.join(reasons)})"
        return "no pairs" if any(metric in c.no_pairs for c in cells) else None

    def left_out(self, benchmark: str, policy: str | None, prefix: str) -> dict[str, int]:
        """reading.LEFT_OUT_COUNTS starting with ``prefix`` summed over the cells (nonzero)."""
        total: dict[str, int] = defaultdict(int)
        for c in self.cells:
            if c.benchmark == benchmark and (policy is None or c.policy == policy):
                for key, n in c.left_out.items():
                    if key.startswith(prefix):
                        total[key] += n
        return dict(sorted(total.items()))

    def cost_stat(self, benchmark: str, policy: str, row: str, key: str) -> Stat | None:
        """Mean and std over seeds of one of a row's COST_KEYS; None where no seed has it."""
        cells = self._index.get((benchmark, policy, row), [])
        return Stat.of([c.cost[key] for c in cells if key in c.cost])

    def unit_per_user(
        self, benchmark: str, policy: str, metric: str
    ) -> dict[str, dict[str, float]]:
        """Per (reward method, seed) unit ("lore s0") with per-user values of ``metric``, those
        values: the points of the meta-evaluation and the findings' correlations."""
        return {
            cell.unit: cell.per_user[metric]
            for cell in sorted(self.cells, key=lambda c: (c.row_key, c.seed))
            if cell.benchmark == benchmark
            and cell.policy == policy
            and cell.kind == "method"
            and cell.method != ORACLE_ROW
            and cell.per_user.get(metric)
        }

    def expected_seeds(self, benchmark: str, kind: str, row: str | None = None) -> int:
        """How many seeds the run has for this benchmark and kind of row (the †-marker's bar);
        1 for a ``row`` whose cells are seed-free baselines (planned once for every seed)."""
        of_row = [c for c in self.cells if c.benchmark == benchmark and c.row == row]
        if of_row and all(c.seed_free for c in of_row):
            return 1
        return len({c.seed for c in self.cells if c.benchmark == benchmark and c.kind == kind})

    def bertscore_scales(self, benchmark: str, policy: str | None = None) -> list[tuple[str, bool]]:
        """The (model, rescaled) pairs of the BERTScores of a benchmark (and policy), sorted."""
        return sorted(
            {
                (c.bertscore_model, bool(c.bertscore_rescaled))
                for c in self.cells
                if c.benchmark == benchmark
                and (policy is None or c.policy == policy)
                and c.bertscore_model
            }
        )

    def win_tie_weights(self, benchmark: str) -> list[float]:
        """What a tie counted as in the benchmark's win rates (one value unless mixed)."""
        return sorted(
            {
                c.win_tie_weight
                for c in self.cells
                if c.benchmark == benchmark and c.win_tie_weight is not None
            }
        )

    def bertscore_models(self, benchmark: str, policy: str | None = None) -> list[str]:
        return sorted(
            {
                c.bertscore_model
                for c in self.cells
                if c.benchmark == benchmark
                and (policy is None or c.policy == policy)
                and c.bertscore_model
            }
        )
