"""Do the methods differ at all on a metric? The test a correlation over methods rests on.

    test = method_differences(values)      # values: [methods, users] of one metric
    test.f, test.p, test.kept              # 0.43, 0.90, 0.0: the methods do not differ here
    test.text                              # "F 0.43, p 0.901"

A correlation over methods (report.units, the findings' Kendall tau) can only be decided if the
methods differ on both of its metrics. This is the two-way ANOVA without replication on the
methods x users values (each user's effect removed, as resampling users moves every method
alike): F = MS_methods / MS_residual with (m - 1, (m - 1)(n - 1)) degrees of freedom, its p-value
under "every method has the same mean" (normal theory: with a few pairs per user the values are
coarse, so read it as a guide), and ``kept = max(0, 1 - 1/F)``, the share of the spread of the
methods' means that is not sampling noise (the moment estimate). ``flat`` (F <= 1): the methods'
means spread no more than noise alone would, so there is no order of the methods to predict and
more users like these would not decide a correlation on that metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class MethodDifferences:
    """Do the methods' means differ beyond noise? (two-way ANOVA, methods x users)"""

    f: float  # MS_methods / MS_residual (inf: no residual noise)
    p: float  # P(F >= f) if every method had the same mean
    kept: float  # the share of the methods' spread that is not noise: max(0, 1 - 1/F)
    methods: int
    users: int

    @property
    def flat(self) -> bool:
        """F <= 1: the methods differ by no more than noise."""
        return self.kept == 0.0

    @property
    def text(self) -> str:
        f = "inf" if math.isinf(self.f) else f"{self.f:.2f}"
        return f"F {f}, p {'< 0.001' if self.p < 0.001 else f'{self.p:.3f}'}"


def method_differences(values: np.ndarray) -> MethodDifferences:
    """[methods, users] values of one metric -> the ANOVA test that the methods differ."""
    methods, users = values.shape
    if methods < 2 or users < 2:
        raise ValueError(f"need at least 2 methods and 2 users, got {methods} x {users}")
    means = values.mean(axis=1)  # [methods]
    residual = values - means[:, None] - values.mean(axis=0)[None, :] + values.mean()
    df_methods, df_residual = methods - 1, (methods - 1) * (users - 1)
    ms_methods = users * float(((means - means.mean()) ** 2).sum()) / df_methods
    ms_residual = float((residual**2).sum()) / df_residual
    tiny = 1e-12 * (float(np.square(values - values.mean()).mean()) or 1.0)  # float rounding
    if ms_residual <= tiny:  # no noise at all: the methods differ exactly, or not at all
        differ = ms_methods > tiny
        f = math.inf if differ else 0.0
        return MethodDifferences(f, 0.0 if differ else 1.0, float(differ), methods, users)
    f = ms_methods / ms_residual
    p = float(stats.f.sf(f, df_methods, df_residual))
    return MethodDifferences(f, p, max(0.0, 1.0 - 1.0 / f) if f > 0 else 0.0, methods, users)
