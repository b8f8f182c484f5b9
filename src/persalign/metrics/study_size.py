"""How many users a study needs: simulate studies of more users drawn from the users it had.

    sample = Resampling((rm_acc, true_gain), "kendall")   # [methods, users] each: τ of the means
    simulated_ci_width(sample, users=192)                  # median 95% CI width at 192 users
    users_to_meet(sample, bar=0.30)                        # Projection(users=768, width=0.28, ...)

    diff = Resampling((icl_rag_minus_best[None, :],), "mean")   # [1, users]: a paired difference
    users_to_meet(diff, bar=0.37).users

A study's CI comes from a percentile bootstrap over its users (metrics.correlation,
report.verdicts). To ask what ``n`` users would give, treat the study's own users as the
population: draw a study of ``n`` users from them with replacement, bootstrap that study's CI as
the report does, and take the median width over ``draws`` such studies. For a mean this recovers
the 1/sqrt(n) rule; for a Kendall τ over methods whose means are close it does not: τ's CI stays
wide until enough users order the methods, and only the simulation sees it.

The study's own users overstate how far apart the methods are: their observed means spread by
the true differences plus sampling noise. So before drawing, each array's method means are
pulled toward their grand mean by sqrt(kept), ``kept = max(0, 1 - 1/F)`` the share of their
spread that is not noise (metrics.method_differences), and each user's deviations are kept as
they are. Methods that differ by no more than noise (F <= 1) become tied, and no study orders
them. Checked on the simulated-users study (benchmarks/check_sizing.py: project the width at 48
users from random halves of them): with the pull, 9 of 20 projections fell short of the width
48 users gave (mean absolute error 0.06); without it 16 of 20 (0.14), and by the 1/sqrt(n)
rule 18 of 20 (0.17).

Both levels are multinomial counts over the study's users (a drawn study is counts c summing to
``n``; one of its resamples, counts drawn with probabilities c / n), so a simulated study of any
size costs ``n_boot`` products of [n_boot, users] and [users, units], never n rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from persalign.metrics.correlation import batched_statistics
from persalign.metrics.method_differences import method_differences

STATISTICS = ("kendall", "mean")
# studies tried, as multiples of the users a study had: about 1.5x apart, up to 32x
FACTORS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)
DRAWS = 20  # simulated studies per size (the median width over them)


@dataclass(frozen=True)
class Resampling:
    """What a finding's CI resamples: per-user values of its units and the statistic of their
    means. ``"kendall"``: two [units, users] arrays, Kendall τ-b of the units' means;
    ``"mean"``: one [1, users] array, its mean (a paired difference per user)."""

    samples: tuple[np.ndarray, ...]
    statistic: str
    shrink: bool = True  # Kendall: pull the units' means together by their noise share first

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"unknown statistic {self.statistic!r}; choose from {STATISTICS}")
        wanted = 2 if self.statistic == "kendall" else 1
        if len(self.samples) != wanted:
            raise ValueError(f"{self.statistic} needs {wanted} arrays, got {len(self.samples)}")
        shapes = {np.shape(s)[1:] for s in self.samples}
        if any(np.ndim(s) != 2 for s in self.samples) or len(shapes) != 1:
            raise ValueError("every sample is a [units, users] array over the same users")

    @property
    def users(self) -> int:
        return int(np.shape(self.samples[0])[1])

    def population(self) -> Resampling:
        """What studies are drawn from: a Kendall sample's units' means pulled toward their
        grand mean by sqrt(kept) (module doc); a mean's sample as it is."""
        if self.statistic != "kendall" or not self.shrink or self.users < 2:
            return self
        pulled = []
        for sample in self.samples:
            x = np.asarray(sample, dtype=float)  # [units, users]
            keep = math.sqrt(method_differences(x).kept)
            means = x.mean(axis=1, keepdims=True)  # [units, 1]
            pulled.append(x - (1.0 - keep) * (means - means.mean()))
        return Resampling(tuple(pulled), self.statistic, shrink=False)

    def values(self, counts: np.ndarray) -> np.ndarray:
        """The statistic of each resample, given each user's count in it: [B] from [B, users]."""
        n = counts.sum(axis=1, keepdims=True)  # [B, 1]
        means = [counts @ np.asarray(s, dtype=float).T / n for s in self.samples]  # [B, units]
        if self.statistic == "mean":
            return means[0][:, 0]
        return batched_statistics(means[0], means[1])["kendall"]


@dataclass(frozen=True)
class Projection:
    """The fewest users tried whose simulated CI is within the bar (None: none up to
    ``tried``), and the median width there (at ``tried`` when none)."""

    users: int | None
    width: float
    tried: int


def ci_width(
    sample: Resampling,
    study: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    confidence: float = 0.95,
) -> float:
    """The percentile bootstrap CI width of one study (``study``: each sample user's count in
    it, [users]), resampled as the report does; NaN when no resample is defined."""
    users = int(study.sum())
    resamples = rng.multinomial(users, study / users, size=n_boot)  # [n_boot, users]
    values = sample.values(resamples)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan")
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(hi - lo)


def simulated_ci_width(
    sample: Resampling,
    users: int,
    draws: int = DRAWS,
    n_boot: int = 400,
    seed: int = 0,
    confidence: float = 0.95,
) -> float:
    """Median over ``draws`` simulated studies of ``users`` users of their bootstrap CI width."""
    if users < 1 or draws < 1 or n_boot < 1:
        raise ValueError("users, draws and n_boot must be at least 1")
    rng = np.random.default_rng(seed)
    sample = sample.population()
    base = np.full(sample.users, 1.0 / sample.users)
    widths = []
    for _ in range(draws):
        study = rng.multinomial(users, base)  # [users of the sample]: who the study drew
        widths.append(ci_width(sample, study, n_boot, rng, confidence))
    return float(np.nanmedian(widths)) if np.isfinite(widths).any() else float("nan")


def users_to_meet(
    sample: Resampling,
    bar: float,
    factors: tuple[float, ...] = FACTORS,
    draws: int = DRAWS,
    n_boot: int = 400,
    seed: int = 0,
) -> Projection:
    """Try studies of ``factor x`` the sample's users, smallest first, until the median simulated
    CI width is at most ``bar``."""
    sample = sample.population()  # once: each size draws from the same population
    width, tried = float("nan"), sample.users
    for factor in factors:
        tried = max(1, round(sample.users * factor))
        width = simulated_ci_width(sample, tried, draws=draws, n_boot=n_boot, seed=seed)
        if width <= bar:
            return Projection(tried, width, tried)
    return Projection(None, width, tried)
