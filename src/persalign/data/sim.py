"""Simulated users whose reward is known: the ``sim`` builder (docs/simulated-users.md).

    persalign data build sim --from out/pref-acl --users 64 --groups 4 --noise 1.0 \
        --attributes length,colon,hype --seed 0 --out out/sim
    BUILDERS.get("sim")(SimOptions(source="out/pref-acl", users=64, groups=4), "out/sim")

From an already built benchmark (``--from``/``source``): every prompt with two or more different
responses (over its train, support and query preferences) is kept with those responses. Each
response gets the attributes phi(x, y) (persalign.data.attributes), standardized over all kept
responses. K group centres w_g ~ N(0, I/d) (with ``shared_taste`` s > 0, w_g = sqrt(s) * m +
sqrt(1 - s) * N(0, I/d) around one common taste m ~ N(0, I/d): groups that agree as much as s
says, as real users agree enough for one reward to fit them well above chance); user u
(``sim-000`` ...) joins group u mod K (after a seeded shuffle) and has w_u = w_g(u) +
sigma * eps, eps ~ N(0, I/d); r_u(x, y) = w_u . phi(x, y).
Each user draws ``items_per_user`` prompts (users share prompts) and for each a pair of its
different responses, labelled by Bradley-Terry on r_u with temperature BETA (``noise``):
P(a over b) = sigmoid((r_u(a) - r_u(b)) / BETA); BETA 0 gives the deterministic label (a coin
only for an exact tie). Users are split into train and adaptation users and items into support
and query as for any benchmark (``train_users``, ``adapt_users``, ``support_fraction``). Every
preference's completion (kept for query items) is its prompt's response with the highest r_u,
so ROUGE and BERTScore still apply. ``true_reward.json`` (persalign.data.true_reward) records
what recomputes r_u. Same source, options and seed give a byte-identical folder.

Bad input is a one-line ConfigError before anything is written: no ``--from``, an unknown
attribute, more groups than users, a split asking for more users than ``--users``, a source
with no prompt that has two different responses.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from persalign.data.attributes import ATTRIBUTES, attribute_matrix
from persalign.data.benchmark_folder import MANIFEST, load_benchmark
from persalign.data.registry import BUILDERS, BuildOptions, with_defaults
from persalign.data.splits import write_preference_benchmark
from persalign.data.true_reward import FILE, TrueReward
from persalign.errors import ConfigError
from persalign.io import SkipReport, sha256_file
from persalign.types import Completion, Preference

log = logging.getLogger(__name__)


class SimOptions(BuildOptions):
    """The build options plus the simulation's own (``source``: the benchmark folder to draw
    prompts and responses from)."""

    source: str | None = Field(
        None,
        description="The built benchmark folder whose prompts and responses the users label.",
        json_schema_extra={"cli": ["--from", "--source"]},
    )
    users: int = Field(64, ge=2, description="Simulated users (train and adaptation together).")
    groups: int = Field(
        4, ge=1, description="K groups: users of a group share a centre w_g (low-rank users)."
    )
    noise: float = Field(
        1.0, ge=0, description="BETA: Bradley-Terry temperature of the labels (0: deterministic)."
    )
    attributes: tuple[str, ...] = Field(
        (), description="Attribute names (persalign ls attributes); empty: every registered one."
    )

    @field_validator("attributes", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """``--attributes a,b`` (the CLI's form) or repeated flags: one name each."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            return tuple(n.strip() for v in value for n in str(v).split(",") if n.strip())
        return value

    user_spread: float = Field(
        0.5, ge=0, description="sigma: a user's weights are its group centre + sigma * N(0, I/d)."
    )
    items_per_user: int = Field(
        20, ge=2, description="Preferences per user (prompts drawn without replacement)."
    )
    shared_taste: float = Field(
        0.0,
        ge=0,
        le=1,
        description="s: the share of a group centre's variance that every group shares, "
        "w_g = sqrt(s) * m + sqrt(1 - s) * N(0, I/d) with one m ~ N(0, I/d) "
        "(0: independent groups; 1: one taste for all).",
    )


def as_sim_options(options: BuildOptions) -> SimOptions:
    """SimOptions from any BuildOptions (the simulation's fields at their defaults)."""
    return options if isinstance(options, SimOptions) else SimOptions(**options.model_dump())


def _rng(seed: int, *parts: object) -> np.random.Generator:
    """A numpy generator that depends only on the seed and what it is for."""
    digest = hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def check_options(options: SimOptions) -> tuple[str, ...]:
    """The attribute names to use; ConfigError on any bad option (nothing written yet)."""
    if options.source is None:
        raise ConfigError("sim needs --from: a built benchmark folder to draw responses from")
    names = options.attributes or tuple(ATTRIBUTES.names())
    for name in names:
        ATTRIBUTES.get(name)  # unknown: "unknown attribute 'x'; did you mean ...?"
    if len(set(names)) != len(names):
        raise ConfigError(f"--attributes repeats a name: {','.join(names)}")
    if options.groups > options.users:
        raise ConfigError(f"--groups {options.groups} is more than --users {options.users}")
    asked = (options.train_users or 0) + (options.adapt_users or 0)
    if asked > options.users:
        raise ConfigError(
            f"--train-users + --adapt-users = {asked} is more than --users {options.users}"
        )
    return names


def response_pool(source: str | Path) -> tuple[list[str], list[list[str]], dict[str, Any]]:
    """(prompts, each prompt's different responses) of a built benchmark, sorted, and where
    they came from; ConfigError when no prompt has two different responses."""
    bench = load_benchmark(source)
    by_prompt: dict[str, set[str]] = {}
    for pref in (*bench.train, *bench.support, *bench.query):
        by_prompt.setdefault(pref.prompt, set()).update((pref.chosen, pref.rejected))
    prompts = sorted(p for p, r in by_prompt.items() if len(r) >= 2)
    if not prompts:
        raise ConfigError(
            f"--from {source}: no prompt has two different responses, so there are no pairs"
        )
    responses = [sorted(by_prompt[p]) for p in prompts]
    manifest = Path(source) / MANIFEST
    info = {
        "kind": "sim",
        "from": str(source),
        "from_name": bench.name,
        "from_manifest_sha256": sha256_file(manifest) if manifest.is_file() else None,
        "prompts": len(prompts),
        "responses": sum(len(r) for r in responses),
    }
    return prompts, responses, info


def simulate_users(
    options: SimOptions, d: int
) -> tuple[list[str], list[int], np.ndarray, np.ndarray]:
    """(user ids, their groups, group centres [K, d], user weights [N, d])."""
    width = len(str(options.users - 1))
    users = [f"sim-{i:0{width}d}" for i in range(options.users)]
    centres = _rng(options.seed, "centres").normal(size=(options.groups, d)) / math.sqrt(d)
    if options.shared_taste > 0:  # every centre leans towards one common taste m
        common = _rng(options.seed, "shared").normal(size=d) / math.sqrt(d)  # [d]
        s = options.shared_taste
        centres = math.sqrt(s) * common + math.sqrt(1 - s) * centres  # [K, d]
    order = _rng(options.seed, "groups").permutation(options.users)
    groups = [0] * options.users
    for rank, i in enumerate(order.tolist()):
        groups[i] = rank % options.groups
    eps = _rng(options.seed, "users").normal(size=(options.users, d)) / math.sqrt(d)
    weights = centres[groups] + options.user_spread * eps  # [N, d]
    return users, groups, centres, weights


def label(r_a: float, r_b: float, noise: float, draw: float) -> bool:
    """Whether a is chosen over b: Bradley-Terry with temperature ``noise`` (0: a exactly when
    r_a > r_b), ``draw`` a uniform number in [0, 1)."""
    if noise == 0:
        return r_a > r_b or (r_a == r_b and draw < 0.5)
    z = (r_a - r_b) / noise
    p = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    return draw < p


@BUILDERS.register("sim", summary="Simulated users with a known reward over a built benchmark")
def build_sim(options: SimOptions, out: str | Path) -> dict[str, Any]:
    """A benchmark of simulated users labelling a built benchmark's responses (module doc)."""
    options = with_defaults(as_sim_options(options), min_items=2)
    names = check_options(options)
    prompts, responses, source = response_pool(options.source)
    flat_prompts = [p for p, rs in zip(prompts, responses, strict=True) for _ in rs]
    flat = [r for rs in responses for r in rs]
    raw = attribute_matrix(names, flat_prompts, flat)  # [M, d]
    mean, std = raw.mean(axis=0), raw.std(axis=0)  # [d]
    std = np.where(std > 0, std, 1.0)
    phi = (raw - mean) / std  # [M, d]
    starts = np.cumsum([0] + [len(rs) for rs in responses])  # prompt i: rows starts[i]:starts[i+1]
    users, groups, centres, weights = simulate_users(options, len(names))
    per_user = min(options.items_per_user, len(prompts))
    prefs: list[Preference] = []
    completions: list[Completion] = []
    for u, user in enumerate(users):
        rng = _rng(options.seed, "items", user)
        for n, i in enumerate(sorted(rng.choice(len(prompts), per_user, replace=False).tolist())):
            rows = range(starts[i], starts[i + 1])
            r = phi[starts[i] : starts[i + 1]] @ weights[u]  # [responses of prompt i]
            a, b = rng.choice(len(rows), 2, replace=False).tolist()
            a_wins = label(float(r[a]), float(r[b]), options.noise, float(rng.random()))
            chosen, rejected = (a, b) if a_wins else (b, a)
            pid = f"{user}/{n}"
            prefs.append(
                Preference(
                    pid,
                    user,
                    prompts[i],
                    flat[rows[chosen]],
                    flat[rows[rejected]],
                    meta={
                        "prompt_index": i,
                        "true_margin": round(float(r[chosen] - r[rejected]), 6),
                    },
                )
            )
            best = int(np.argmax(r))  # the first of equal rewards
            completions.append(Completion(pid, user, prompts[i], flat[rows[best]]))
    truth = TrueReward(
        attributes=tuple(names),
        mean=tuple(float(x) for x in mean),
        std=tuple(float(x) for x in std),
        users={user: tuple(float(x) for x in weights[u]) for u, user in enumerate(users)},
        groups=dict(zip(users, groups, strict=True)),
        centres=tuple(tuple(float(x) for x in c) for c in centres),
        noise=float(options.noise),
        spread=float(options.user_spread),
        seed=options.seed,
        extra={"source": source}
        | ({"shared_taste": float(options.shared_taste)} if options.shared_taste else {}),
    )
    log.info("sim: %d users over %d prompts, %d preferences", len(users), len(prompts), len(prefs))
    return write_preference_benchmark(
        "sim",
        prefs,
        SkipReport(),
        options,
        out,
        source=source,
        completions=completions,
        json_files={FILE: truth.to_json()},
    )
