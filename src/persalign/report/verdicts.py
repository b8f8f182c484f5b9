"""Verdict rules and the paired bootstrap that every finding reads (docs/findings.md).

    verdict, reason = weak_verdict((-0.2, 0.25), users=48, methods=9)   # ('holds', ...)
    verdict, reason = sign_verdict((0.1, 0.9), users=48)               # the claim d > 0
    mean, ci, n = paired_difference(icl_rag_by_user, best_by_user, n_boot=1000)

A verdict is "holds", "does not hold" or "inconclusive": it reads the 95% CI only, and is
inconclusive without one or with fewer than MIN_USERS users or, for a correlation, fewer than
MIN_METHODS distinct methods (report.units). ``halving_users``: an inconclusive finding says how
many users would halve its CI (the width scales as 1/sqrt(n), so 4n).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from persalign.report.units import SEED, too_few

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
WEAK_TAU = 0.31  # the paper's largest reported |tau| (Table 2), which it calls negligible
CONFIDENCE = 0.95
# the simulated-users study's decision bars on a CI's width (report.sizing)
TAU_CI_BAR = 0.30  # a Kendall tau verdict's 95% CI at most this wide
ORACLE_SHARE_BAR = 0.25  # ICL-RAG against the best method: at most this share of the oracle's gain


def halving_users(n: int) -> int:
    """CI width ~ 1/sqrt(n): halving it takes n * (w / (w / 2))^2 = 4n users."""
    return 4 * n


def _gate(ci: tuple[float, float] | None, users: int, methods: int | None) -> str | None:
    if ci is None:
        return "no CI (too few units, a constant metric, or --bootstrap 0)"
    return too_few(users, methods)


def _verdict(
    ci: tuple[float, float] | None,
    users: int,
    methods: int,
    rule: Callable[[float, float], tuple[str, str]],
) -> tuple[str, str]:
    gate = _gate(ci, users, methods)
    return (INCONCLUSIVE, gate or "") if gate or ci is None else rule(*ci)


def weak_verdict(
    ci: tuple[float, float] | None, users: int, methods: int, bound: float = WEAK_TAU
) -> tuple[str, str]:
    """The claim |tau| <= bound: (verdict, reason)."""

    def rule(lo: float, hi: float) -> tuple[str, str]:
        if -bound <= lo and hi <= bound:
            return HOLDS, f"the CI lies within |τ| <= {bound:g}"
        if lo > bound or hi < -bound:
            return FAILS, f"the CI lies beyond |τ| = {bound:g} on one side"
        return INCONCLUSIVE, f"the CI crosses ±{bound:g}"

    return _verdict(ci, users, methods, rule)


def decoupled_verdict(
    ci: tuple[float, float] | None, users: int, methods: int, bound: float = WEAK_TAU
) -> tuple[str, str]:
    """The claim tau = 0 (decoupled): (verdict, reason)."""

    def rule(lo: float, hi: float) -> tuple[str, str]:
        if lo > 0 or hi < 0:
            return FAILS, "the CI excludes 0"
        if -bound <= lo and hi <= bound:
            return HOLDS, f"the CI contains 0 and lies within |τ| <= {bound:g}"
        return INCONCLUSIVE, f"the CI contains 0 but crosses ±{bound:g}"

    return _verdict(ci, users, methods, rule)


def sign_verdict(ci: tuple[float, float] | None, users: int) -> tuple[str, str]:
    """The claim difference > 0: (verdict, reason)."""
    if ci is None:
        return INCONCLUSIVE, "no CI (no paired users, or --bootstrap 0)"
    gate = too_few(users)
    if gate:
        return INCONCLUSIVE, gate
    if ci[0] > 0:
        return HOLDS, "the CI lies above 0"
    if ci[1] < 0:
        return FAILS, "the CI lies below 0"
    return INCONCLUSIVE, "the CI contains 0"


def paired_differences(a: Mapping[str, float], b: Mapping[str, float]) -> np.ndarray:
    """a - b per common user, in user order: [n]."""
    return np.array([a[u] - b[u] for u in sorted(a.keys() & b.keys())], dtype=float)


def paired_difference(
    a: Mapping[str, float], b: Mapping[str, float], n_boot: int, seed: int = SEED
) -> tuple[float | None, tuple[float, float] | None, int]:
    """Mean over the common users of a - b, its percentile bootstrap CI over users, and n."""
    return mean_with_ci(paired_differences(a, b), n_boot, seed)


def mean_with_ci(
    d: np.ndarray, n_boot: int, seed: int = SEED
) -> tuple[float | None, tuple[float, float] | None, int]:
    """Mean of per-user values d [n], its percentile bootstrap CI over users, and n."""
    if not len(d):
        return None, None, 0
    if n_boot <= 0:
        return float(d.mean()), None, len(d)
    rng = np.random.default_rng(seed)
    n = len(d)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)  # [n_boot, n]
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(counts @ d / n, [tail, 100 - tail])
    return float(d.mean()), (float(lo), float(hi)), n
