"""Synthetic preference data for reward-model tests (imported by the test modules)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import persalign.rewards as rewards
from persalign.data.benchmark_folder import write_benchmark
from persalign.types import Benchmark, Completion, Preference

WORDS = ["cat", "dog", "sun", "map", "pen", "cup", "box", "hat", "car", "bee", "owl", "fig"]


def style_pairs(user: str, n: int, prefers_alpha: bool, seed: int) -> list[Preference]:
    """``n`` pairs where the user prefers responses ending in 'alpha' (or in 'omega')."""
    rng = random.Random(f"{user}:{seed}")
    out = []
    for i in range(n):
        topic = " ".join(rng.sample(WORDS, 2))
        word = rng.choice(WORDS)
        alpha, omega = f"{word} alpha", f"{word} omega"
        chosen, rejected = (alpha, omega) if prefers_alpha else (omega, alpha)
        out.append(Preference(f"{user}/{i}", user, f"Say about {topic}", chosen, rejected))
    return out


def two_group_task(
    seed: int = 0,
    opposite: bool = True,
    per_user: int = 24,
    n_train: int = 8,
    n_new: int = 4,
    support: int = 8,
    query: int = 12,
):
    """Train prefs, and for each new user (support, query); group B prefers the other style
    when ``opposite`` (else every user prefers 'alpha')."""
    train = []
    for u in range(n_train):
        train += style_pairs(f"train{u}", per_user, u % 2 == 0 or not opposite, seed)
    new = {}
    for u in range(n_new):
        prefs = style_pairs(f"new{u}", support + query, u % 2 == 0 or not opposite, seed + 1)
        new[f"new{u}"] = (prefs[:support], prefs[support:])
    return train, new


def write_two_group_benchmark(folder: Path) -> Path:
    """2 train users x 4 preferences, 2 adaptation users x (2 support, 3 query + completions:
    each query's chosen response), written as a benchmark folder."""
    train, new = two_group_task(per_user=4, n_train=2, n_new=2, support=2, query=3)
    query = [p for _, q in new.values() for p in q]
    write_benchmark(
        folder,
        train=train,
        support=[p for s, _ in new.values() for p in s],
        query=query,
        completions=[Completion(q.id, q.user, q.prompt, q.chosen) for q in query],
        manifest={"name": "toy"},
    )
    return folder


def two_group_benchmark(
    support: int, query: int, edit: Callable[[list[Completion]], list[Completion]] = list
) -> Benchmark:
    """2 train and 2 adaptation users (3 preferences each in training) with ``support`` and
    ``query`` items; a completion (the chosen text) per query item, passed through ``edit``."""
    train, new = two_group_task(per_user=3, n_train=2, n_new=2, support=support, query=query)
    items = [p for _, q in new.values() for p in q]
    completions = edit([Completion(q.id, q.user, q.prompt, q.chosen) for q in items])
    return Benchmark(
        name="toy",
        train=tuple(train),
        support=tuple(p for s, _ in new.values() for p in s),
        query=tuple(items),
        completions=tuple(completions),
    )


def adapted_lore(backbone: str, bench: Benchmark, adapt_steps: int, **settings):
    """LoRE, untrained (random LoRA and head), each adaptation user adapted on their support."""
    rm = rewards.create(
        "lore", backbone=backbone, latent_dim=2, adapt_steps=adapt_steps, **settings
    )
    for user in bench.adapt_users():
        rm.adapt(user.user, list(user.support))
    return rm
