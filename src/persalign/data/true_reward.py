"""The known reward of simulated users: r_u(x, y) = w_u . phi(x, y), recomputable from JSON.

    truth = TrueReward.from_json(read_json("out/sim/true_reward.json"))
    truth.rewards(["Summarize: ..."], ["A short summary"], ["sim-007"])    # [r_u(x, y)]
    truth.features(prompts, responses)       # [N, d] standardized phi
    truth.has_user("sim-007"), truth.weights("sim-007")

``true_reward.json`` (written by ``persalign data build sim``, listed with its sha256 in the
benchmark's manifest) holds everything needed: the attribute names (persalign.data.attributes),
each attribute's standardization (mean and standard deviation over the source's responses; a
constant attribute has std 1), every user's group and weight vector, the group centres, the label
noise BETA and the seed. ``load_benchmark`` attaches a TrueReward to ``Benchmark.true_reward``
when the folder has this file; metrics and the ``oracle`` reward method read it there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from persalign.data.attributes import attribute_matrix
from persalign.errors import ConfigError, DataError

FILE = "true_reward.json"
FORMAT = "persalign-true-reward/1"


@dataclass(frozen=True)
class TrueReward:
    """Attributes, their standardization and every user's weights (see module doc)."""

    attributes: tuple[str, ...]
    mean: tuple[float, ...]  # [d] of the raw attributes over the source's responses
    std: tuple[float, ...]  # [d] (1.0 for a constant attribute)
    users: dict[str, tuple[float, ...]]  # user -> w_u [d]
    groups: dict[str, int]  # user -> its group g(u)
    centres: tuple[tuple[float, ...], ...]  # [K, d] w_g
    noise: float  # BETA: Bradley-Terry temperature of the sampled labels (0: deterministic)
    spread: float  # sigma: w_u = w_g(u) + sigma * eps
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)  # source, counts (not needed for r_u)

    def has_user(self, user: str) -> bool:
        return user in self.users

    def weights(self, user: str) -> np.ndarray:
        """w_u [d]; ConfigError for a user the simulation does not know."""
        if user not in self.users:
            raise ConfigError(f"user {user!r} is not a simulated user of this benchmark")
        return np.asarray(self.users[user], dtype=np.float64)

    def features(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Standardized phi [N, d]: (raw - mean) / std."""
        raw = attribute_matrix(self.attributes, prompts, responses)  # [N, d]
        return (raw - np.asarray(self.mean)) / np.asarray(self.std)

    def rewards(
        self, prompts: Sequence[str], responses: Sequence[str], users: Sequence[str]
    ) -> list[float]:
        """r_u(x, y) of each (prompt, response, user), as Python floats."""
        if not len(prompts) == len(responses) == len(users):
            raise ValueError("prompts, responses and users must have the same length")
        if not users:
            return []
        phi = self.features(prompts, responses)  # [N, d]
        w = np.stack([self.weights(u) for u in users])  # [N, d]
        return [float(v) for v in (phi * w).sum(axis=1)]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "attributes": list(self.attributes),
            "standardization": {
                name: {"mean": m, "std": s}
                for name, m, s in zip(self.attributes, self.mean, self.std, strict=True)
            },
            "users": {
                u: {"group": self.groups[u], "weights": list(w)} for u, w in self.users.items()
            },
            "group_weights": [list(c) for c in self.centres],
            "noise": self.noise,
            "user_spread": self.spread,
            "seed": self.seed,
            "reward": "r_u(x, y) = sum_j weights[j] * (phi_j(x, y) - mean_j) / std_j",
            **self.extra,
        }

    @classmethod
    def from_json(cls, obj: Any, path: Any = None) -> TrueReward:
        """Parse a true_reward.json object; DataError naming ``path`` when it is not one."""
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise DataError(f"not a simulated users' true reward (format {FORMAT!r})", path)
        try:
            names = tuple(obj["attributes"])
            stats = obj["standardization"]
            users = {u: tuple(float(x) for x in v["weights"]) for u, v in obj["users"].items()}
            groups = {u: int(v["group"]) for u, v in obj["users"].items()}
            known = {"format", "attributes", "standardization", "users", "group_weights"}
            known |= {"noise", "user_spread", "seed", "reward"}
            return cls(
                attributes=names,
                mean=tuple(float(stats[n]["mean"]) for n in names),
                std=tuple(float(stats[n]["std"]) for n in names),
                users=users,
                groups=groups,
                centres=tuple(tuple(float(x) for x in c) for c in obj["group_weights"]),
                noise=float(obj["noise"]),
                spread=float(obj["user_spread"]),
                seed=int(obj["seed"]),
                extra={k: v for k, v in obj.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed true reward ({type(exc).__name__}: {exc})", path) from None
