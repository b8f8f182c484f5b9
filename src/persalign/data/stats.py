"""Summary statistics of a benchmark folder (``persalign data stats DIR``).

stats = benchmark_stats(load_benchmark("out/pref-acl"))
stats["train"]["preferences_per_user"]["median"]
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from typing import Any

from persalign.types import Benchmark, Preference


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
    """Users, preferences per user, prompts and completions, for train and adaptation users."""
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
        "prompts": len({p.prompt for p in everything}),
        "completions": len(bench.completions),
        "skipped": {
            reason: info.get("count", 0)
            for reason, info in bench.manifest.get("skipped", {}).items()
        },
    }
