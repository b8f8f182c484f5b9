"""Correlations over the report's units, the minimum a verdict needs, and one method's weight.

    mc = unit_correlation(results, "pref-acl", "smol-135m", "rm_accuracy", "rouge1", 1000)
    mc.r(), mc.ci(), mc.units, mc.methods, mc.users, mc.trusted
    mc.loo_range()          # (-0.06, 0.45, "p-dpo"): Kendall tau with each method left out
    mc.left_out             # ["2 user(s) missing for some unit, left out", ...]

Two kinds of units (the points of a correlation), named by every table that shows one:

- ``methods`` (the paper's, Table 2): one point per reward method, its mean over seeds of the
  per-user values, over the users every method has;
- ``method-seed``: one point per reward-method cell ("lore s0"), its mean over the users.

Both take a 95% percentile bootstrap over users (persalign.metrics.correlation
.correlations_over_users, seed SEED). A correlation is *trusted* (a verdict, a "best" metric)
only with at least MIN_USERS users and MIN_METHODS distinct reward methods: 2 methods x 3 seeds
are 6 units but still 2 methods. ``keep_units`` / ``keep_users`` restrict the points and users
(the meta-evaluation's one common set).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from persalign.metrics.correlation import aligned_matrices, correlations_over_users, leave_one_out
from persalign.metrics.method_differences import MethodDifferences, method_differences
from persalign.metrics.study_size import Resampling
from persalign.report.formatting import finite
from persalign.report.results import RunResults

MIN_USERS = 10  # fewer users: the bootstrap CI is not trusted, no verdict
MIN_METHODS = 5  # fewer distinct reward methods: no verdict on a correlation
MIN_POINTS = 3  # fewer points: no correlation at all ("--")
SEED = 0  # of every bootstrap in the report's findings and meta-evaluation
UNIT_KINDS = {
    "methods": "methods (each method's mean over seeds; the paper's units)",
    "method-seed": "(method, seed) units (one per reward-method cell)",
}
SHORT = {"methods": "methods", "method-seed": "(method, seed) units"}


def method_of(unit: str) -> str:
    """The reward method of a unit: "lore s0" -> "lore"; a method unit is its own method."""
    head, sep, tail = unit.rpartition(" s")
    return head if sep and tail.isdigit() else unit


def unit_values(
    results: RunResults, benchmark: str, policy: str, metric: str, units: str
) -> dict[str, dict[str, float]]:
    """unit -> user -> value of ``metric`` for every unit with per-user values."""
    if units == "method-seed":
        return results.unit_per_user(benchmark, policy, metric)
    if units != "methods":
        raise ValueError(f"unknown units {units!r}; choose from {', '.join(UNIT_KINDS)}")
    out = {}
    for row in results.unit_rows(benchmark):
        values = results.per_user(benchmark, policy, row.label, metric)
        if values:
            out[row.label] = values
    return out


def too_few(users: int, methods: int | None = None) -> str | None:
    """Why a CI over ``users`` (and ``methods`` reward methods) is not trusted; None if it is."""
    if users < MIN_USERS:
        return f"only {users} users (a verdict needs at least {MIN_USERS}): the CI is not trusted"
    if methods is not None and methods < MIN_METHODS:
        return (
            f"only {methods} reward methods (a verdict needs at least {MIN_METHODS} distinct "
            "methods, whatever the seeds): the CI is not trusted"
        )
    return None


@dataclass(frozen=True)
class MetaCorrelation:
    """One metric against another at one scale over ``kind`` units; ``result`` is
    correlations_over_users' (None with fewer than MIN_POINTS units)."""

    metric: str
    target: str
    result: dict[str, Any] | None
    units: int
    users: int
    methods: int = 0  # distinct reward methods among the units
    kind: str = "method-seed"
    loo: dict[str, float] = field(default_factory=dict)  # method left out -> Kendall tau
    differences: tuple[MethodDifferences, ...] = ()  # do the units differ on metric, on target?
    # the per-user values the CI resampled ([units, users] each; metrics.study_size)
    resampling: Resampling | None = field(default=None, compare=False, repr=False)

    def r(self, statistic: str = "kendall") -> float | None:
        return finite(((self.result or {}).get(statistic) or {}).get("r"))

    def ci(self, statistic: str = "kendall") -> tuple[float, float] | None:
        ci = ((self.result or {}).get(statistic) or {}).get("ci") or ()
        bounds = [finite(v) for v in ci]
        if len(bounds) != 2 or bounds[0] is None or bounds[1] is None:
            return None
        return bounds[0], bounds[1]

    @property
    def trusted(self) -> bool:
        return self.result is not None and too_few(self.users, self.methods) is None

    @property
    def left_out(self) -> list[str]:
        """What the correlation left out, with counts (users, resamples, one-sided units)."""
        return list((self.result or {}).get("notes") or [])

    def loo_range(self) -> tuple[float, float, str] | None:
        """(lowest, highest) Kendall tau with one method left out, and the method whose removal
        moves tau the most; None where no method can be left out with 3 points left."""
        values = {m: v for m, t in self.loo.items() if (v := finite(t)) is not None}
        if not values:
            return None
        full = self.r() or 0.0
        moved = max(sorted(values), key=lambda m: abs(values[m] - full))
        return min(values.values()), max(values.values()), moved


def unit_correlation(
    results: RunResults,
    benchmark: str,
    policy: str,
    x: str,
    y: str,
    n_boot: int,
    units: str = "method-seed",
    keep_units: Collection[str] | None = None,
    keep_users: Collection[str] | None = None,
    keep_boot: bool = False,
) -> MetaCorrelation:
    """Correlation of ``x`` and ``y`` over the ``units`` with both, CI over users, and the
    Kendall tau with each reward method left out."""
    a = unit_values(results, benchmark, policy, x, units)
    b = unit_values(results, benchmark, policy, y, units)
    common = sorted(a.keys() & b.keys())
    if keep_units is not None:
        common = [u for u in common if u in keep_units]
    if keep_users is not None:
        a = {u: {k: v for k, v in a[u].items() if k in keep_users} for u in common}
        b = {u: {k: v for k, v in b[u].items() if k in keep_users} for u in common}
    methods = len({method_of(u) for u in common})
    if len(common) < MIN_POINTS:
        return MetaCorrelation(x, y, None, len(common), 0, methods, units)
    result = correlations_over_users(
        {u: a[u] for u in common},
        {u: b[u] for u in common},
        n_boot=n_boot,
        seed=SEED,
        keep_boot=keep_boot,
    )
    means = result["means"]
    loo = leave_one_out(means["a"], means["b"], method_of) if methods > 1 else {}
    kept, users, am, bm, _ = aligned_matrices(
        {u: a[u] for u in common}, {u: b[u] for u in common}
    )  # [units, users] each: the values the CI resampled
    enough = len(kept) >= 2 and len(users) >= 2  # do the units differ on x, on y?
    differences = (method_differences(am), method_differences(bm)) if enough else ()
    resampling = Resampling((am, bm), "kendall") if users else None
    return MetaCorrelation(
        x, y, result, int(result["n"]), int(result["users"]), methods, units, loo,
        differences, resampling,
    )  # fmt: skip
