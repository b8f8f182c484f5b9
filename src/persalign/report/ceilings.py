"""What a reward method could reach on a sim benchmark if it read every text's exact attributes:
the ceilings that say, before a study runs, whether its methods can differ at all.

    ceilings = sim_ceilings(load_benchmark("runs/study_sim/sim"))
    ceilings["rows"]["group_from_support"]["mean"], ceilings["rows"]["global_fit"]["ci95"]
    table = ceilings_table(results, "sim")     # the report's: key "reward_ceilings"

    persalign data ceilings runs/study_sim/sim [--json]

Every row is a true RM accuracy (as the ``true_rm_accuracy`` metric scores a learned reward): the
share of each adaptation user's query pairs that a reward orders as r_u does, noise-free (a pair
r_u itself ties is left out and counted in ``true_ties``; a tie of the reward is a miss), per user,
then the mean over users with a 95% bootstrap CI over users. The rewards are linear in the exact
standardized attributes phi, so each row is the best its family of methods could do with perfect
features and the benchmark's own data:

- ``sampled_labels``: the query pair's sampled label itself (how often the Bradley-Terry noise
  leaves the label on r_u's side; the oracle's Eq. 2 RM accuracy is this);
- ``global_mean``: one reward for everyone, the mean of the train users' true weights (the best a
  global reward could learn with unlimited data: Global RM, Global RM-v2, GenARM);
- ``global_fit``: one reward fitted to the train users' labelled pairs (Bradley-Terry, L2);
- ``group_known``: the centre of the user's own group (a low-rank method that knew each user's
  group: the ceiling of LoRE, PAL and PReF's mixtures);
- ``group_from_support``: the centre whose Bradley-Terry likelihood of the user's support labels
  is highest (such a method identifying the group from the support pairs);
- ``user_from_support``: a per-user Bradley-Terry fit to the support pairs alone, with the
  simulation's own prior on w_u (its MAP estimate: what a per-user reward adapted from the
  support pairs could reach).

Cost: the attributes of every pair's two texts, and small Newton fits; seconds.

The report's ``ceilings_table`` on a sim benchmark shows these rows, with the range of the run's
learned rewards' true RM accuracy beneath them. The benchmark folder is the one the run's
manifest names; where it cannot be read (moved, changed), the table is left out with a warning
that says why, and the rest of the report is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from persalign.data.benchmark_folder import load_benchmark
from persalign.errors import ConfigError, PersalignError
from persalign.report.formatting import fixed
from persalign.report.results import RunResults
from persalign.report.tabular import Table
from persalign.report.verdicts import paired_difference
from persalign.types import Benchmark, Preference

log = logging.getLogger(__name__)
LEARNED = "true_rm_accuracy"
NEWTON_STEPS = 50
MIN_TEMPERATURE = 0.05  # BETA 0 (deterministic labels) fits as a sharp, finite logistic
ROWS = {
    "sampled_labels": "the sampled label itself (the noise: an oracle's Eq. 2 accuracy)",
    "global_mean": "one reward for all: the train users' mean true weights",
    "global_fit": "one reward fitted to the train users' labelled pairs",
    "group_known": "the centre of the user's own group",
    "group_from_support": "the group centre that best explains the user's support labels",
    "user_from_support": "a per-user fit to its support pairs alone (the simulation's prior)",
}


def pair_differences(truth: Any, prefs: Sequence[Preference]) -> np.ndarray:
    """phi(x, chosen) - phi(x, rejected) [N, d], standardized attributes."""
    if not prefs:
        return np.zeros((0, len(truth.attributes)))
    prompts = [p.prompt for p in prefs]
    chosen = truth.features(prompts, [p.chosen for p in prefs])  # [N, d]
    return chosen - truth.features(prompts, [p.rejected for p in prefs])


def bradley_terry_fit(diffs: np.ndarray, temperature: float, precision: float) -> np.ndarray:
    """MAP weights w [d] of P(chosen) = sigmoid(diffs @ w / T) with a N(0, I / precision) prior
    (Newton's method; the objective is strictly convex, so it converges from 0)."""
    x = diffs / max(temperature, MIN_TEMPERATURE)  # [N, d]
    w = np.zeros(diffs.shape[1])
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))  # [N] P(chosen)
        grad = x.T @ (p - 1.0) + precision * w  # [d]
        hess = (x * (p * (1.0 - p))[:, None]).T @ x + precision * np.eye(len(w))  # [d, d]
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-10:
            break
    return w


def best_group(diffs: np.ndarray, centres: np.ndarray, temperature: float) -> int:
    """The group whose centre gives the support labels the highest Bradley-Terry likelihood."""
    margins = diffs @ centres.T / max(temperature, MIN_TEMPERATURE)  # [N, K]
    return int(np.argmax(-np.logaddexp(0.0, -margins).sum(axis=0)))


def sim_ceilings(bench: Benchmark, n_boot: int = 1000) -> dict[str, Any]:
    """The ceilings of the module doc; ConfigError for a benchmark with no true reward."""
    truth = bench.true_reward
    if truth is None:
        raise ConfigError(f"benchmark {bench.name!r} has no true reward (not a sim benchmark)")
    query = list(bench.query)
    if not query:
        raise ConfigError(f"benchmark {bench.name!r} has no query pairs to score")
    d = len(truth.attributes)
    centres = np.asarray(truth.centres, dtype=float)  # [K, d]
    prior = d / (1.0 + truth.spread**2)  # w_u ~ N(0, (1 + sigma^2) / d I) around no group
    train_users = sorted({p.user for p in bench.train})
    global_mean = np.mean([truth.weights(u) for u in train_users], axis=0)  # [d]
    global_fit = bradley_terry_fit(pair_differences(truth, bench.train), truth.noise, d)
    support: dict[str, list[Preference]] = {}
    for pref in bench.support:
        support.setdefault(pref.user, []).append(pref)
    per_user_w: dict[str, dict[str, np.ndarray]] = {}
    for user in sorted({q.user for q in query}):
        diffs = pair_differences(truth, support.get(user, []))  # [S, d]
        per_user_w[user] = {
            "global_mean": global_mean,
            "global_fit": global_fit,
            "group_known": centres[truth.groups[user]],
            "group_from_support": centres[best_group(diffs, centres, truth.noise)],
            "user_from_support": bradley_terry_fit(diffs, truth.noise, prior),
        }
    diffs = pair_differences(truth, query)  # [Q, d]
    hits: dict[str, dict[str, list[float]]] = {row: {} for row in ROWS}
    ties = 0
    for pref, diff in zip(query, diffs, strict=True):
        true_margin = float(diff @ truth.weights(pref.user))
        if true_margin == 0:
            ties += 1
            continue
        hits["sampled_labels"].setdefault(pref.user, []).append(float(true_margin > 0))
        for row, w in per_user_w[pref.user].items():
            margin = float(diff @ w)
            hit = margin != 0 and (margin > 0) == (true_margin > 0)
            hits[row].setdefault(pref.user, []).append(float(hit))
    rows = {}
    for row, by_user in hits.items():
        per_user = {u: float(np.mean(h)) for u, h in by_user.items()}
        mean, ci, n = paired_difference(per_user, dict.fromkeys(per_user, 0.0), n_boot=n_boot)
        rows[row] = {"mean": mean, "ci95": list(ci) if ci else None, "users": n,
                     "what": ROWS[row]}  # fmt: skip
    support_counts = [len(support.get(u, [])) for u in per_user_w]
    return {
        "benchmark": bench.name,
        "users": len(per_user_w),
        "query_pairs": len(query) - ties,
        "true_ties": ties,
        "support_pairs_per_user": float(np.mean(support_counts)),
        "train_pairs": len(bench.train),
        "groups": len(centres),
        "noise": truth.noise,
        "user_spread": truth.spread,
        "rows": rows,
    }


def benchmark_path(results: RunResults, benchmark: str) -> Path | None:
    """The benchmark folder the run's manifest names (``benchmarks.<label>.path``)."""
    config = (results.manifest or {}).get("config") or {}
    path = ((config.get("benchmarks") or {}).get(benchmark) or {}).get("path")
    return Path(path) if path else None


def _percent(value: float | None) -> str:
    return "--" if value is None else fixed(100 * value, 1)


def learned_range(results: RunResults, benchmark: str) -> tuple[float, float, int] | None:
    """(lowest, highest, methods): each reward method's true RM accuracy, mean over its seeds
    (``stat_over_policies``: a reward model's figure is shared by policies), the oracle aside
    (``unit_rows``); None where no method has one."""
    stats = [results.stat_over_policies(benchmark, row.label, LEARNED)
             for row in results.unit_rows(benchmark)]  # fmt: skip
    means = [stat.mean for stat in stats if stat is not None]
    if not means:
        return None
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
