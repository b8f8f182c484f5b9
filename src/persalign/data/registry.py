"""The registry of benchmark builders and the options they share.

    from persalign.data import BUILDERS, BuildOptions
    build = BUILDERS.get("pref-acl")
    manifest = build(BuildOptions(source="../shared/data/acl_anthology", seed=0), "out/acl")

Each source module registers one builder: ``tldr``, ``prism``, ``pref-lamp``, ``pref-acl``.
``persalign data build NAME`` and ``persalign ls datasets`` read this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from persalign.registry import Registry


@dataclass(frozen=True)
class BuildOptions:
    """Options every builder understands; each ignores the ones that do not apply to it."""

    source: str | None = None
    """A local folder or file; None reads the hub or downloads (connected machines only)."""
    seed: int = 0
    """Seed for every random choice (user split, support/query split, negatives)."""
    train_users: int | None = None
    """Number of train users; None takes the paper's shape where the data allows, else 80%."""
    adapt_users: int | None = None
    """Number of adaptation users; None takes the paper's shape where the data allows, else 20%."""
    min_items: int | None = None
    """Users with fewer preferences (profile items) are skipped and counted; None: the dataset's
    default (TL;DR 10, PRISM 3, Pref-LaMP and Pref-ACL 10)."""
    max_items: int | None = None
    """Keep at most this many items per user (the most recent, or a seeded sample without years)."""
    max_query: int | None = None
    """Keep at most this many query items per adaptation user (a seeded sample; the rest are
    dropped and counted), e.g. the subset of PRISM's test split that the paper evaluates."""
    support_fraction: float = 0.5
    """Share of each adaptation user's items that go to support; the rest are query."""
    split: str = "random"
    """Support/query split: 'random' (seeded) or 'time' (each user's most recent items in query)."""
    split_file: str | None = None
    """JSON with the train ('seen') and adaptation ('unseen') user ids, e.g. PAL's TL;DR split."""
    negatives_top_k: int = 10
    """Pref-LaMP recipe: sample the rejected title from this many most similar abstracts."""
    embedder: str = "bundled:all-minilm-l6-v2"
    """Embedding model for hard-negative mining (an id, a folder, or bundled:<name>)."""
    negative_pool: str = "users"
    """Where negatives come from: 'users' (papers of the benchmark's users, as in LaMP-5, whose
    corpus is its users' profiles) or 'all' (every paper of the source; slower to embed)."""
    embed_max_tokens: int = 512
    """Abstracts are embedded from their first this-many tokens for negative mining: 512, about
    a whole abstract and the most MiniLM's positions allow (128 is faster, sees less of it)."""
    include: tuple[str, ...] = ()
    """Glob patterns of source files to read (ACL: e.g. '2024.*.xml'); empty reads all."""
    batch_size: int = 64
    """Embedding batch size."""


def with_defaults(options: BuildOptions, **defaults: Any) -> BuildOptions:
    """``options`` with each field named in ``defaults`` filled in where it is None."""
    fill = {k: v for k, v in defaults.items() if getattr(options, k) is None}
    return replace(options, **fill) if fill else options


Builder = Callable[[BuildOptions, str | Path], dict[str, Any]]
BUILDERS: Registry[Builder] = Registry("dataset", packages=("persalign.data",))
