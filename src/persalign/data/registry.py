"""The registry of benchmark builders and the options they share.

    from persalign.data import BUILDERS, BuildOptions
    build = BUILDERS.get("pref-acl")
    manifest = build(BuildOptions(source="../shared/data/acl_anthology", seed=0), "out/acl")

Each source module registers one builder: ``tldr``, ``prism``, ``pref-lamp``, ``pref-acl``,
``jsonl`` (your own users' preference file; docs/own-data.md), and ``sim`` (simulated users over a
built benchmark: docs/simulated-users.md, its own options in ``SimOptions``).
``persalign data build NAME`` and ``persalign ls datasets`` read this registry. ``BuildOptions``
is the one declaration of every shared build option: the run config's ``benchmarks.<label>``
section extends it, and a bad value is a one-line ConfigError naming the option.

A builder with options of its own annotates its first parameter with a ``BuildOptions`` subclass;
``persalign data build NAME`` makes a ``--flag`` of every field of that class, and
``BUILDERS.get(NAME)`` hands it that class (plain ``BuildOptions`` are filled with its defaults):

    class ShoutOptions(BuildOptions):
        shout: bool = Field(False, description="Upper-case every prompt.")

    @BUILDERS.register("shouty")
    def build_shouty(options: ShoutOptions, out): ...

    BUILDERS.options_class("shouty")      # ShoutOptions
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from persalign.errors import ConfigError, describe_validation_error
from persalign.registry import Registry


class BuildFields(BaseModel):
    """The build options, declared once: BuildOptions (builders) and the run config's
    ``benchmarks.<label>`` section (runs/sections.py) both extend this."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str | None = Field(
        None,
        description="A local folder or file (jsonl: the preference file); None reads the hub or "
        "downloads (connected machines only; $PERSALIGN_ACL_DIR for pref-acl).",
    )
    seed: int = Field(
        0, description="Seed for every random choice (user split, support/query split, negatives)."
    )
    train_users: int | None = Field(
        None,
        ge=1,
        description="Train users; None: the paper's shape where the data allows, else 80%.",
    )
    adapt_users: int | None = Field(
        None, ge=1, description="Adaptation users; None: the paper's shape, else 20%."
    )
    min_items: int | None = Field(
        None,
        ge=1,
        description="Users with fewer preferences are skipped and counted; None: the dataset's "
        "default (TL;DR 10, PRISM 3, Pref-LaMP, Pref-ACL and jsonl 10).",
    )
    max_items: int | None = Field(
        None, ge=1, description="Keep at most this many items per user (the most recent)."
    )
    max_query: int | None = Field(
        None,
        ge=1,
        description="Keep at most this many query items per adaptation user (a seeded sample; the "
        "rest are dropped and counted), e.g. the PRISM test subset the paper evaluates.",
    )
    support_fraction: float = Field(
        0.5, gt=0, lt=1, description="Share of an adaptation user's items used for support."
    )
    split: Literal["random", "time"] = Field(
        "random",
        description="Support/query split: random (seeded) or time (each user's most recent items "
        "in query: the paper's year for Pref-LaMP/ACL, each record's 'time' for jsonl).",
    )
    completions: str | None = Field(
        None,
        description="jsonl: a JSON-lines file of the users' own responses ({user, prompt, "
        "completion}), the ground truth of their query prompts; None: no completions.",
    )
    split_file: str | None = Field(
        None, description="JSON of train ('seen') and adaptation ('unseen') user ids (PAL's TL;DR)."
    )
    negatives_top_k: int = Field(
        10, ge=1, description="Pref-LaMP recipe: the rejected title comes from the k most similar."
    )
    embedder: str = Field(
        "bundled:all-minilm-l6-v2", description="Embedder for hard-negative mining."
    )
    negative_pool: Literal["users", "all"] = Field(
        "users",
        description="Where negatives come from: the benchmark users' papers (as in LaMP-5) or "
        "every paper of the source (slower to embed).",
    )
    embed_max_tokens: int = Field(
        512,
        ge=8,
        description="Abstracts are embedded from their first this-many tokens for negative "
        "mining: 512, about a whole abstract and the most MiniLM's positions allow.",
    )
    include: tuple[str, ...] = Field(
        (), description="Glob patterns of source files to read (ACL: '2024.*.xml'); empty: all."
    )
    batch_size: int = Field(64, ge=1, description="Embedding batch size.")


PATH_FIELDS = ("source", "split_file", "completions")
"""The build options that name a file or folder (a run config resolves them against its folder)."""


class BuildOptions(BuildFields):
    """Options every builder understands; each ignores the ones that do not apply to it.
    A bad value is a ConfigError naming the option (``max_items: ... (got -1)``)."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc)) from None


def with_defaults(options: BuildOptions, **defaults: Any) -> BuildOptions:
    """``options`` with each field named in ``defaults`` filled in where it is None."""
    fill = {k: v for k, v in defaults.items() if getattr(options, k) is None}
    return options.model_copy(update=fill) if fill else options


Builder = Callable[[BuildOptions, str | Path], dict[str, Any]]


def options_class(builder: Builder) -> type[BuildOptions]:
    """The options a builder declares: its first parameter's annotation when that is a
    ``BuildOptions`` subclass, else ``BuildOptions``."""
    first = next(iter(inspect.signature(builder).parameters), None)
    try:
        declared = typing.get_type_hints(builder).get(first) if first else None
    except NameError as exc:  # an annotation that names nothing importable
        raise ConfigError(
            f"builder {builder.__name__}: cannot read its options class: {exc}"
        ) from None
    if isinstance(declared, type) and issubclass(declared, BuildOptions):
        return declared
    return BuildOptions


class BuilderRegistry(Registry[Builder]):
    """The dataset registry: ``get`` returns a builder that takes any ``BuildOptions`` and hands
    the builder its own options class (the fields it adds at their defaults)."""

    def options_class(self, name: str) -> type[BuildOptions]:
        return options_class(super().get(name))

    def get(self, name: str) -> Builder:
        builder = super().get(name)
        cls = options_class(builder)
        if cls is BuildOptions:
            return builder

        @functools.wraps(builder)
        def build(options: BuildOptions, out: str | Path) -> dict[str, Any]:
            if not isinstance(options, cls):
                options = cls(**options.model_dump())
            return builder(options, out)

        return build


BUILDERS = BuilderRegistry("dataset", packages=("persalign.data",))
