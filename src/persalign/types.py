"""The record types every part of persalign speaks.

    p = Preference(id="u1/p3", user="u1", prompt="Generate a title ...",
                   chosen="Their own title", rejected="A similar paper's title")
    p.to_json()["chosen"]
    # 'Their own title'
    bench = load_benchmark("benchmarks/pref-acl")     # persalign.data.benchmark_folder
    bench.adapt_users()[0].support[:2]

A benchmark has train users (all their preferences in ``train``) and adaptation users, whose
preferences are split into ``support`` (to adapt on) and ``query`` (to evaluate on). Completions
are the user's own ground-truth responses to query prompts (Pref-LaMP, Pref-ACL), keyed by the
query preference id. A benchmark of simulated users (``persalign data build sim``) also carries
their known reward, ``bench.true_reward`` (a :class:`TrueRewardLike`; None elsewhere).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from persalign.errors import ConfigError

SPLITS = ("train", "support", "query")


@dataclass(frozen=True)
class Preference:
    """One pairwise judgement: ``user`` preferred ``chosen`` over ``rejected`` for ``prompt``."""

    id: str
    user: str
    prompt: str
    chosen: str
    rejected: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    REQUIRED = ("id", "user", "prompt", "chosen", "rejected")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Preference:
        return cls(**{k: obj[k] for k in cls.REQUIRED}, meta=dict(obj.get("meta") or {}))


@dataclass(frozen=True)
class Completion:
    """A user's own response to a prompt: the ground truth that generations are compared with."""

    id: str
    user: str
    prompt: str
    reference: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    REQUIRED = ("id", "user", "prompt", "reference")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "prompt": self.prompt,
            "reference": self.reference,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Completion:
        return cls(**{k: obj[k] for k in cls.REQUIRED}, meta=dict(obj.get("meta") or {}))


@dataclass(frozen=True)
class UserData:
    """Everything a benchmark holds about one user."""

    user: str
    role: str  # "train" or "adapt"
    train: tuple[Preference, ...] = ()
    support: tuple[Preference, ...] = ()
    query: tuple[Preference, ...] = ()
    completions: tuple[Completion, ...] = ()


class TrueRewardLike(Protocol):
    """The known reward r_u(x, y) of simulated users (persalign.data.true_reward.TrueReward)."""

    def has_user(self, user: str) -> bool: ...

    def rewards(
        self, prompts: Sequence[str], responses: Sequence[str], users: Sequence[str]
    ) -> list[float]: ...


@dataclass(frozen=True)
class Benchmark:
    """A per-user preference benchmark: train users, adaptation users, completions."""

    name: str
    train: tuple[Preference, ...]
    support: tuple[Preference, ...]
    query: tuple[Preference, ...]
    completions: tuple[Completion, ...] = ()
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    true_reward: TrueRewardLike | None = field(default=None, compare=False, hash=False)

    def train_users(self) -> list[UserData]:
        return [u for u in self.users() if u.role == "train"]

    def adapt_users(self) -> list[UserData]:
        return [u for u in self.users() if u.role == "adapt"]

    def users(self) -> list[UserData]:
        """Every user, train users first, each group sorted by id."""
        groups: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
        for split in SPLITS:
            for pref in getattr(self, split):
                groups[pref.user][split].append(pref)
        for comp in self.completions:
            groups[comp.user]["completions"].append(comp)
        out = []
        for user, parts in groups.items():
            role = "train" if parts.get("train") else "adapt"
            out.append(
                UserData(
                    user=user,
                    role=role,
                    **{k: tuple(v) for k, v in parts.items()},
                )
            )
        return sorted(out, key=lambda u: (u.role != "train", u.user))

    def user(self, user: str) -> UserData:
        for data in self.users():
            if data.user == user:
                return data
        raise ConfigError(f"unknown user {user!r} in benchmark {self.name!r}")


def group_by_user(records: Iterable[Any]) -> dict[str, list[Any]]:
    """Records (anything with a ``user`` attribute) grouped by user, in first-seen order."""
    out: dict[str, list[Any]] = defaultdict(list)
    for rec in records:
        out[rec.user].append(rec)
    return dict(out)
