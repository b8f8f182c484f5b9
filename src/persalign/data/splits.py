"""User and item splits, and the shared path from per-user preferences to a benchmark folder.

    train, adapt = split_users(sorted(users), train_users=None, adapt_users=None, seed=0)
    support, query = split_items(prefs, fraction=0.5, seed=0, key="u1")
    manifest = write_preference_benchmark("tldr", prefs, skips, options, "out/tldr",
                                          source={"kind": "tldr", "path": "..."})

The paper's shape (section 6) is the default where the data is large enough: e.g. 485 train and
126 adaptation users for Pref-LaMP. Smaller data falls back to an 80/20 split of the users.
The manifest's ``items_per_user`` gives the mean preferences per train and adaptation user beside
the paper's figures (``persalign.data.stats.PAPER_PREFS_PER_USER``, section 6), e.g. 48.8 / 49.2
for Pref-LaMP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from persalign.data.benchmark_folder import write_benchmark
from persalign.data.registry import BuildOptions, with_defaults
from persalign.data.stats import items_per_user
from persalign.errors import ConfigError, DataError
from persalign.io import SkipReport, interrupt_point, read_json
from persalign.seeding import seeded_rng
from persalign.types import Completion, Preference, group_by_user

log = logging.getLogger(__name__)
T = TypeVar("T")

TRAIN_KEYS = ("train", "seen", "summary_uids", "train_users")
ADAPT_KEYS = ("adapt", "unseen", "summary_unseen_uids", "adapt_users", "test")
DUPLICATE_REASON = "duplicate preference (same user, prompt, chosen and rejected)"


def split_users(
    users: Sequence[str],
    *,
    train_users: int | None,
    adapt_users: int | None,
    seed: int,
    paper_shape: tuple[int, int] | None = None,
) -> tuple[list[str], list[str]]:
    """Seeded split of ``users`` into (train, adapt), both sorted.

    With neither count given: the paper's ``(train, adapt)`` shape if the data allows, else 80/20.
    With one count given, the other takes the rest.
    """
    pool = sorted(users)
    if train_users is None and adapt_users is None:
        if paper_shape and sum(paper_shape) <= len(pool):
            train_users, adapt_users = paper_shape
        else:
            adapt_users = max(1, round(0.2 * len(pool))) if len(pool) > 1 else 0
            train_users = len(pool) - adapt_users
    elif train_users is None:
        train_users = len(pool) - adapt_users  # type: ignore[operator]
    elif adapt_users is None:
        adapt_users = len(pool) - train_users
    if train_users < 0 or adapt_users < 0 or train_users + adapt_users > len(pool):
        raise ConfigError(
            f"asked for {train_users} train + {adapt_users} adaptation users, "
            f"but only {len(pool)} users qualify"
        )
    seeded_rng("users", seed).shuffle(pool)
    adapt = sorted(pool[:adapt_users])
    train = sorted(pool[adapt_users : adapt_users + train_users])
    return train, adapt


def split_items(
    items: Sequence[T],
    *,
    fraction: float,
    seed: int,
    key: str,
    order: Callable[[T], Any] | None = None,
) -> tuple[list[T], list[T]]:
    """Split one user's items into (support, query).

    Random (seeded by ``seed`` and ``key``) unless ``order`` is given: then items are sorted by it
    and the last ones (the most recent) go to query, like LaMP's time split. Both parts keep at
    least one item when there are two or more.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"support fraction must be between 0 and 1, got {fraction}")
    items = list(items)
    n_support = round(fraction * len(items))
    if len(items) >= 2:
        n_support = min(max(n_support, 1), len(items) - 1)
    if order is None:
        seeded_rng("items", seed, key).shuffle(items)
    else:
        items.sort(key=order)
    return items[:n_support], items[n_support:]


def read_split_file(path: str | Path) -> tuple[list[str], list[str]]:
    """Train and adaptation user ids from a JSON split file (PAL's seen/unseen keys work)."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise DataError("a split file must be a JSON object of user-id lists", path)
    train = next((obj[k] for k in TRAIN_KEYS if k in obj), None)
    adapt = next((obj[k] for k in ADAPT_KEYS if k in obj), None)
    if train is None or adapt is None:
        raise DataError(
            f"a split file needs a train list (one of {', '.join(TRAIN_KEYS)}) and an "
            f"adaptation list (one of {', '.join(ADAPT_KEYS)}); found keys: {', '.join(obj)}",
            path,
        )
    for name, ids in (("train", train), ("adaptation", adapt)):
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise DataError(f"the {name} users must be a list of strings", path)
    both = set(train) & set(adapt)
    if both:
        raise DataError(f"users in both train and adaptation lists: {sorted(both)[:3]}", path)
    return list(train), list(adapt)


def write_preference_benchmark(
    name: str,
    prefs: Sequence[Preference],
    skips: SkipReport,
    options: BuildOptions,
    out: str | Path,
    *,
    source: dict[str, Any],
    paper_shape: tuple[int, int] | None = None,
    completions: Sequence[Completion] = (),
    user_split: tuple[list[str], list[str]] | None = None,
    json_files: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Split users and items of a preference dataset and write the benchmark folder.

    Exact duplicates (same user, prompt, chosen and rejected) are dropped first and counted in
    ``skips`` (:func:`drop_duplicates`): one copy in a user's support set and another in its query
    set would be a query pair the adapted model has already seen.

    ``user_split`` (train, adapt) skips user selection when the caller already chose the users
    (the Pref-LaMP builder selects them before mining negatives). Completions are kept for the
    query preferences they answer (same id). ``json_files`` go to write_benchmark (the sim
    builder's ``true_reward.json``).
    """
    interrupt_point("split")
    options = with_defaults(options, min_items=10)
    prefs = drop_duplicates(prefs, skips)
    by_user = {
        user: cap_items(items, options, skips, user) for user, items in group_by_user(prefs).items()
    }
    if not by_user:
        why = "; ".join(f"{n} {reason}" for reason, n in sorted(skips.counts.items()))
        why = f" (skipped: {why})" if why else ""
        raise DataError(f"{name}: no preferences to split{why}", source.get("path"))
    if user_split is not None:
        train, adapt = (sorted(u for u in users if u in by_user) for users in user_split)
    else:
        train, adapt = select_preference_users(by_user, skips, options, paper_shape)
    if not train or not adapt:
        raise ConfigError(
            f"{name}: the split leaves {len(train)} train and {len(adapt)} adaptation users; "
            "lower --min-items or give more data"
        )
    train_prefs = [p for u in train for p in by_user[u]]
    support: list[Preference] = []
    query: list[Preference] = []
    uncapped_query = 0
    order = _time_order if options.split == "time" else None
    for user in adapt:
        s, q = split_items(
            by_user[user],
            fraction=options.support_fraction,
            seed=options.seed,
            key=user,
            order=order,
        )
        support += s
        uncapped_query += len(q)
        query += cap_items(q, options, skips, user, query=True)
    by_id = {c.id: c for c in completions}
    kept_completions = [by_id[q.id] for q in query if q.id in by_id]  # in query order
    skips.log(log)
    manifest = {
        "name": name,
        "source": source,
        "options": _options_json(options),
        "seed": options.seed,
        "skipped": skips.to_json(),
        "train_user_ids": train,
        "adapt_user_ids": adapt,
        "items_per_user": items_per_user(
            name,
            train=(len(train), len(train_prefs)),
            adapt=(len(adapt), len(support) + len(query)),
            adapt_before_max_query=len(support) + uncapped_query,
        ),
    }
    return write_benchmark(
        out,
        train=train_prefs,
        support=support,
        query=query,
        completions=kept_completions,
        manifest=manifest,
        json_files=json_files,
    )


def drop_duplicates(prefs: Sequence[Preference], skips: SkipReport) -> list[Preference]:
    """The first of every group of preferences with the same user, prompt, chosen and rejected
    (exact text); each later copy is counted in ``skips`` as ``DUPLICATE_REASON``."""
    first: dict[tuple[str, str, str, str], str] = {}
    kept = []
    for pref in prefs:
        key = (pref.user, pref.prompt, pref.chosen, pref.rejected)
        if key in first:
            skips.add(DUPLICATE_REASON, f"{pref.id} (repeats {first[key]})")
        else:
            first[key] = pref.id
            kept.append(pref)
    return kept


def cap_items(
    items: list[Preference],
    options: BuildOptions,
    skips: SkipReport,
    user: str,
    *,
    query: bool = False,
) -> list[Preference]:
    """At most ``max_items`` of one user's items (``query``: at most ``max_query`` of an
    adaptation user's query items): a seeded sample in the original order; the rest are counted."""
    if query:
        cap, stream, reason = options.max_query, "query", "query items beyond --max-query"
    else:
        cap, stream, reason = options.max_items, "cap", "items beyond --max-items"
    if cap is None or len(items) <= cap:
        return items
    keep = set(seeded_rng(stream, options.seed, user).sample(range(len(items)), cap))
    skips.add(f"{reason} {cap}", user, count=len(items) - cap)
    return [item for i, item in enumerate(items) if i in keep]


def select_preference_users(
    by_user: dict[str, list[Preference]],
    skips: SkipReport,
    options: BuildOptions,
    paper_shape: tuple[int, int] | None,
) -> tuple[list[str], list[str]]:
    """(train, adapt) users: from the split file if given, else a seeded split of eligible users.

    Users below ``min_items`` and split-file ids absent from the data are skipped and counted.
    """
    eligible = []
    for user in sorted(by_user):
        if len(by_user[user]) < options.min_items:
            skips.add(f"user with fewer than {options.min_items} preferences", user)
        else:
            eligible.append(user)
    if not options.split_file:
        return split_users(
            eligible,
            train_users=options.train_users,
            adapt_users=options.adapt_users,
            seed=options.seed,
            paper_shape=paper_shape,
        )
    train_ids, adapt_ids = read_split_file(options.split_file)
    for uid in [*train_ids, *adapt_ids]:
        if uid not in by_user:
            skips.add("split-file user not in the data", uid)
    ok = set(eligible)
    listed = set(train_ids) | set(adapt_ids)
    for user in eligible:
        if user not in listed:
            skips.add("user not in the split file", user)
    return sorted(u for u in train_ids if u in ok), sorted(u for u in adapt_ids if u in ok)


def _time_order(pref: Preference) -> tuple[Any, str]:
    when = pref.meta.get("time", pref.meta.get("year"))
    if when is None:
        raise ConfigError(f"--split time needs dated items; {pref.id} has no 'time' or 'year'")
    return (when, pref.id)


def _options_json(options: BuildOptions) -> dict[str, Any]:
    return options.model_dump(mode="json")
