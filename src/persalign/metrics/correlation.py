"""Correlations across methods (Tables 2 and 6, Fig. 1): Pearson, Spearman, Kendall (scipy).

    correlations([82.6, 76.8, 68.7], [81.1, 50.0, 59.8])       # one value per method
    # {'pearson': {'r': 0.83..., 'p': 0.37...}, 'spearman': {...}, 'kendall': {...}, 'n': 3, ...}
    rm = {"lore": {"u1": 0.8, "u2": 0.9}, "vpl": {...}, ...}    # method -> user -> value
    rouge1 = {"lore": {"u1": 0.31, "u2": 0.28}, ...}
    result = correlations_over_users(rm, rouge1, n_boot=1000, seed=0)
    result["kendall"]["r"], result["kendall"]["ci"]               # point estimate, 95% CI

``correlations_over_users`` correlates the methods' means over users, with a percentile
bootstrap over users: resample the users with replacement, recompute every method's mean over
the sampled users, recompute the correlation across methods. Only methods present in both
inputs and users present for every such method take part (the others are listed in
``notes``). Fewer than 3 points, or a constant input, give NaN with a note instead of an error.

    result = correlations_over_user_points(rm, rouge1, n_boot=1000, seed=0)

``leave_one_out(x, y, group)`` recomputes a statistic with each group's points left out (the
report's leave-one-method-out range: is the correlation carried by one method?).

``correlations_over_user_points`` takes every (method, user) with both values as one point (the
``users`` units of the report) and bootstraps over users as clusters: a resampled user brings
all of its points.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

log = logging.getLogger(__name__)

STATISTICS = ("pearson", "spearman", "kendall")
MIN_POINTS = 3
NAN = float("nan")


def _statistics(x: np.ndarray, y: np.ndarray) -> dict[str, tuple[float, float]]:
    """(statistic, p-value) of each correlation; the caller guarantees n >= 3, non-constant."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on ties/constant resamples; NaN says it all
        out = {
            "pearson": stats.pearsonr(x, y),
            "spearman": stats.spearmanr(x, y),
            "kendall": stats.kendalltau(x, y),
        }
    return {name: (float(res[0]), float(res[1])) for name, res in out.items()}


def _problem(x: np.ndarray, y: np.ndarray) -> str | None:
    if len(x) < MIN_POINTS:
        return f"only {len(x)} point(s); a correlation needs at least {MIN_POINTS}"
    for name, values in (("x", x), ("y", y)):
        if np.all(values == values[0]):
            return f"{name} is constant ({values[0]:g}); the correlation is undefined"
    return None


def correlations(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """``{"pearson"|"spearman"|"kendall": {"r", "p"}, "n", "dropped", "notes"}``.

    Pairs where either value is NaN (a method without that metric) are dropped and counted.
    """
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} values but y has {len(y)}")
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    notes = []
    dropped = int((~keep).sum())
    if dropped:
        notes.append(f"{dropped} pair(s) with a missing (non-finite) value dropped")
    problem = _problem(xa, ya)
    if problem is not None:
        notes.append(problem)
        values = dict.fromkeys(STATISTICS, (NAN, NAN))
    else:
        values = _statistics(xa, ya)
    out: dict[str, Any] = {name: {"r": r, "p": p} for name, (r, p) in values.items()}
    out.update(n=len(xa), dropped=dropped, notes=notes)
    return out


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc, yc = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    denom = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    return np.where(denom > 0, (xc * yc).sum(axis=1) / np.where(denom > 0, denom, 1.0), NAN)


def batched_statistics(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Pearson r, Spearman rho and Kendall tau-b (scipy's defaults) of each row pair of
    ``x``, ``y`` [B, n] at once; NaN for a row where x or y is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(x.shape[1], k=1)
    sx, sy = np.sign(x[:, i] - x[:, j]), np.sign(y[:, i] - y[:, j])
    pairs = len(i)
    denom = np.sqrt((pairs - (sx == 0).sum(axis=1)) * (pairs - (sy == 0).sum(axis=1)))
    tau = np.where(denom > 0, (sx * sy).sum(axis=1) / np.where(denom > 0, denom, 1.0), NAN)
    ranks_x, ranks_y = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    return {
        "pearson": _pearson_rows(x, y),
        "spearman": _pearson_rows(ranks_x, ranks_y),
        "kendall": tau,
    }


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _common_methods(
    a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]]
) -> tuple[list[str], list[str]]:
    """The methods in both inputs (sorted) and a note naming those in only one."""
    only = sorted(set(a) ^ set(b))
    notes = [f"methods in only one input, left out: {', '.join(only)}"] if only else []
    return sorted(set(a) & set(b)), notes


def _attach_ci(
    result: dict[str, Any], boots: Mapping[str, np.ndarray], confidence: float, n_boot: int
) -> int:
    """Percentile CI of each statistic's bootstrap values into ``result[name]["ci"]`` (undefined
    resamples left out, and counted in a note); returns how many resamples were undefined."""
    undefined = int(np.isnan(boots["pearson"]).sum())
    tail = 100 * (1 - confidence) / 2
    for name in STATISTICS:
        finite = boots[name][np.isfinite(boots[name])]
        lo, hi = np.percentile(finite, [tail, 100 - tail]) if finite.size else (NAN, NAN)
        result[name]["ci"] = [float(lo), float(hi)]
    if undefined:
        result["notes"].append(f"{undefined} of {n_boot} resamples gave an undefined correlation")
    return undefined


def aligned_matrices(
    a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]]
) -> tuple[list[str], list[str], np.ndarray, np.ndarray, list[str]]:
    """Methods, users, and [methods, users] arrays of a and b on the common methods/users."""
    methods, notes = _common_methods(a, b)
    users: set[str] | None = None
    for method in methods:
        have = {u for u, v in a[method].items() if math.isfinite(v)}
        have &= {u for u, v in b[method].items() if math.isfinite(v)}
        users = have if users is None else users & have
    users_sorted = sorted(users or ())
    every = set().union(*(set(a[m]) | set(b[m]) for m in methods)) if methods else set()
    if len(every) > len(users_sorted):
        notes.append(
            f"{len(every) - len(users_sorted)} user(s) missing for some method, left out "
            f"(means are over the {len(users_sorted)} common users)"
        )
    am = np.array([[a[m][u] for u in users_sorted] for m in methods], dtype=float)
    bm = np.array([[b[m][u] for u in users_sorted] for m in methods], dtype=float)
    return methods, users_sorted, am.reshape(len(methods), -1), bm.reshape(len(methods), -1), notes


def correlations_over_users(
    a: Mapping[str, Mapping[str, float]],
    b: Mapping[str, Mapping[str, float]],
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    keep_boot: bool = False,
) -> dict[str, Any]:
    """Correlation across methods of their mean-over-users, with a bootstrap CI over users.

    ``a`` and ``b``: method -> user -> value (e.g. RM accuracy and ROUGE-1 per user). Returns
    :func:`correlations`' result with ``"ci": [lo, hi]`` in each statistic, plus ``methods``,
    ``users``, ``means`` ({"a", "b"}: method -> mean), ``n_boot``, ``seed``, ``confidence``,
    ``boot_undefined`` (resamples whose correlation was undefined, left out of the CI) and,
    with ``keep_boot``, ``boot`` (statistic -> [n_boot] resampled values, NaN where undefined).
    The same seed, users and n_boot draw the same resamples, so two results' ``boot`` values
    are paired resample by resample.
    """
    _check_confidence(confidence)
    methods, users, am, bm, notes = aligned_matrices(a, b)
    if not users:
        notes.append("no user has a value for every method")
    mean_a = am.mean(axis=1) if users else np.full(len(methods), NAN)
    mean_b = bm.mean(axis=1) if users else np.full(len(methods), NAN)
    result = correlations(mean_a.tolist(), mean_b.tolist())
    result["notes"] = notes + result["notes"]
    boots = dict.fromkeys(STATISTICS, np.empty(0))
    if users and _problem(mean_a, mean_b) is None and n_boot > 0:
        # resampling users with replacement = multinomial counts of each user per resample
        n_users = len(users)
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=n_boot)
        boots = batched_statistics(counts @ am.T / n_users, counts @ bm.T / n_users)
    undefined = _attach_ci(result, boots, confidence, n_boot)
    result.update(
        methods=methods,
        users=len(users),
        means={
            "a": dict(zip(methods, mean_a.tolist(), strict=True)),
            "b": dict(zip(methods, mean_b.tolist(), strict=True)),
        },
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
        boot_undefined=undefined,
    )
    if keep_boot:
        result["boot"] = boots
    return result


def leave_one_out(
    x: Mapping[str, float],
    y: Mapping[str, float],
    group: Callable[[str], str],
    statistic: str = "kendall",
) -> dict[str, float]:
    """``group -> statistic`` over the points (keys of both ``x`` and ``y``) of the other groups;
    NaN where fewer than 3 points are left or an input is constant.

        leave_one_out({"a s0": .1, "a s1": .2, ...}, {...}, lambda u: u.rsplit(" s", 1)[0])
    """
    keys = sorted(x.keys() & y.keys())
    out = {}
    for left in sorted({group(k) for k in keys}):
        kept = [k for k in keys if group(k) != left]
        xs = np.array([x[k] for k in kept], dtype=float)
        ys = np.array([y[k] for k in kept], dtype=float)
        out[left] = _point_statistics(xs, ys)[statistic]
    return out


def _point_statistics(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Pearson r, Spearman rho, Kendall tau-b of one sample (NaN where undefined)."""
    if _problem(x, y) is not None:
        return dict.fromkeys(STATISTICS, NAN)
    rows = _pearson_rows(np.stack([x, stats.rankdata(x)]), np.stack([y, stats.rankdata(y)]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = float(stats.kendalltau(x, y).statistic)
    return {"pearson": float(rows[0]), "spearman": float(rows[1]), "kendall": tau}


def correlations_over_user_points(
    a: Mapping[str, Mapping[str, float]],
    b: Mapping[str, Mapping[str, float]],
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Correlation over (method, user) points, with a cluster bootstrap CI over users.

    ``a`` and ``b``: method -> user -> value. Every (method, user) with a finite value in both is
    a point. Returns :func:`correlations`' result with ``"ci"`` in each statistic, plus
    ``methods``, ``users``, ``n_boot``, ``seed``, ``confidence`` and ``boot_undefined``.
    """
    _check_confidence(confidence)
    methods, notes = _common_methods(a, b)
    by_user: dict[str, list[int]] = {}
    xs, ys = [], []
    for method in methods:
        for user in sorted(set(a[method]) & set(b[method])):
            x, y = float(a[method][user]), float(b[method][user])
            if math.isfinite(x) and math.isfinite(y):
                by_user.setdefault(user, []).append(len(xs))
                xs.append(x)
                ys.append(y)
    result = correlations(xs, ys)
    result["notes"] = notes + result["notes"]
    boots: dict[str, list[float]] = {name: [] for name in STATISTICS}
    users = sorted(by_user)
    xa, ya = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if users and _problem(xa, ya) is None and n_boot > 0:
        rng = np.random.default_rng(seed)
        groups = [np.asarray(by_user[u]) for u in users]
        for _ in range(n_boot):
            index = np.concatenate([groups[i] for i in rng.integers(len(users), size=len(users))])
            for name, value in _point_statistics(xa[index], ya[index]).items():
                boots[name].append(value)
    arrays = {name: np.asarray(values, dtype=float) for name, values in boots.items()}
    undefined = _attach_ci(result, arrays, confidence, n_boot)
    result.update(
        methods=methods,
        users=len(users),
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
        boot_undefined=undefined,
    )
    return result
