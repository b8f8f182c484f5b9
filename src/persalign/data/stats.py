"""Summary statistics of a benchmark folder (``persalign data stats DIR``).

    stats = benchmark_stats(load_benchmark("out/pref-acl"))
    stats["train"]["preferences_per_user"]["median"]
    stats["train"]["preferences_per_user"]["mean"]     # this build's mean per train user
    stats["paper_preferences_per_user"]["train"]       # the paper's (section 6): 48.8

``PAPER_PREFS_PER_USER`` holds the paper's preferences per train and adaptation user (section 6)
for each builder; a benchmark's manifest (``items_per_user``) and ``persalign data stats`` show
them beside the build's own means.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from typing import Any

from persalign.types import Benchmark, Preference

PAPER_PREFS_PER_USER: dict[str, dict[str, Any]] = {
    # Section 6, "Datasets and Models": preferences per train / adaptation user. Pref-ACL is
    # built with the Pref-LaMP recipe, so Pref-LaMP's figures are its reference.
    "tldr": {"train": 2097.0, "adapt": 100.0, "benchmark": "tldr"},
    "prism": {"train": 22.1, "adapt": 14.5, "benchmark": "prism"},
    "pref-lamp": {"train": 48.8, "adapt": 49.2, "benchmark": "pref-lamp"},
    "pref-acl": {"train": 48.8, "adapt": 49.2, "benchmark": "pref-lamp"},
}


def distribution(values: Iterable[int]) -> dict[str, float]:
    """min / median / mean / max of ``values`` (zeros when empty)."""
    vals = list(values)
    if not vals:
        return {"min": 0, "median": 0, "mean": 0.0, "max": 0}
    return {
        "min": min(vals),
        "median": statistics.median(vals),
        "mean": round(statistics.fmean(vals), 3),
        "max": max(vals),
    }


def _per_user(prefs: Iterable[Preference]) -> Counter[str]:
    return Counter(p.user for p in prefs)


def benchmark_stats(bench: Benchmark) -> dict[str, Any]:
    """Users, preferences per user (and the paper's means), prompts and completions."""
    train = _per_user(bench.train)
    support = _per_user(bench.support)
    query = _per_user(bench.query)
    adapt = support + query
    everything = [*bench.train, *bench.support, *bench.query]
    return {
        "name": bench.name,
        "train": {
            "users": len(train),
            "preferences": len(bench.train),
            "preferences_per_user": distribution(train.values()),
        },
        "adapt": {
            "users": len(adapt),
            "preferences": len(bench.support) + len(bench.query),
            "preferences_per_user": distribution(adapt.values()),
            "support_per_user": distribution(support[u] for u in adapt),
            "query_per_user": distribution(query[u] for u in adapt),
        },
        "paper_preferences_per_user": PAPER_PREFS_PER_USER.get(bench.name),
        "prompts": len({p.prompt for p in everything}),
        "completions": len(bench.completions),
        "skipped": {
            reason: info.get("count", 0)
            for reason, info in bench.manifest.get("skipped", {}).items()
        },
    }


def items_per_user(
    name: str,
    *,
    train: tuple[int, int],
    adapt: tuple[int, int],
    adapt_before_max_query: int | None = None,
) -> dict[str, Any]:
    """Mean preferences per train and adaptation user ((users, preferences) each), and the
    paper's figures for this benchmark (None when the paper has none).

    ``adapt_before_max_query`` (support + every query item) is kept when ``--max-query``
    dropped query items, since the paper's figure counts them all.
    """

    def mean(users: int, prefs: int) -> float:
        return round(prefs / users, 3) if users else 0.0

    out: dict[str, Any] = {"train": mean(*train), "adapt": mean(*adapt)}
    if adapt_before_max_query is not None and adapt_before_max_query != adapt[1]:
        out["adapt_before_max_query"] = mean(adapt[0], adapt_before_max_query)
    out["paper"] = PAPER_PREFS_PER_USER.get(name)
    return out
