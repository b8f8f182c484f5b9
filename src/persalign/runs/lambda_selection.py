"""Choosing ARGS's lambda per trained reward model (paper appendix F.2).

    fit_prefs, heldout = split_train_heldout(bench, per_user=2, seed=0)   # train on fit_prefs
    heldout = heldout_preferences(bench, per_user=2, seed=0)              # the same held-out
    result = select_lambda(policy, rm, heldout, [0, 0.5, 1, 2])             # TL;DR, PRISM
    result = select_lambda(policy, rm, heldout, lams, objective="harmonic")  # Pref-LaMP/ACL
    result["lam"], result["curve"]
    save_selection(result, "runs/lore/lambda.json")

Reward models trained the same way can produce rewards of different magnitudes, so lambda is
chosen per model, on held-out preferences of the train users (never the adaptation users):

- ``policy-accuracy``: the lambda that maximizes the RGD scorer's policy accuracy (Eq. 3); the
  policy and reward passes run once for the whole grid.
- ``harmonic``: the harmonic mean of ROUGE-1 (ARGS generations at that lambda against the items'
  references: the chosen responses, or ``completions`` by preference id), inverse perplexity of
  those generations under the base policy (coherence) and policy accuracy.

Ties go to the earliest lambda of ``lams``. Figures are per user, then averaged over users.
Only a method that supports RGD has a lambda (``supports_rgd``; PAL does not, paper section 7);
a method scored by its own policy (P-DPO under its ``p-dpo`` decoder) needs none (the runner
does not call this for it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from persalign.decoding import GenerationRequest, create_decoder
from persalign.errors import ConfigError
from persalign.io import write_json
from persalign.metrics.generation import per_user_mean, rouge
from persalign.metrics.perplexity import perplexity
from persalign.metrics.policy_accuracy import policy_accuracy_curve
from persalign.seeding import seeded_rng
from persalign.types import Benchmark, Completion, Preference

log = logging.getLogger(__name__)
OBJECTIVES = ("policy-accuracy", "harmonic")


def split_train_heldout(
    bench: Benchmark, per_user: int = 2, max_users: int | None = None, seed: int = 0
) -> tuple[list[Preference], list[Preference]]:
    """(train preferences to fit on, held-out train-user preferences), a seeded split.

    ``max_users`` train users (all when None, else a seeded sample of those with two or more
    preferences) give ``per_user`` random preferences each; a user always keeps at least one
    preference to train on.
    """
    if per_user < 1:
        raise ConfigError(f"per_user must be at least 1, got {per_user}")
    users = [u for u in bench.train_users() if len(u.train) > 1]  # keep one to train on
    if max_users is not None and max_users < len(users):
        users = sorted(seeded_rng("heldout-users", seed).sample(users, max_users), key=_user)
    held: set[str] = set()
    for data in users:
        prefs = sorted(data.train, key=lambda p: p.id)
        count = min(per_user, len(prefs) - 1)
        held.update(p.id for p in seeded_rng("heldout", seed, data.user).sample(prefs, count))
    heldout = [p for p in bench.train if p.id in held]
    if not heldout:
        raise ConfigError(f"no held-out preferences: benchmark {bench.name!r} has no train users")
    return [p for p in bench.train if p.id not in held], heldout


def _user(data) -> str:
    return data.user


def heldout_preferences(
    bench: Benchmark, per_user: int = 2, max_users: int | None = None, seed: int = 0
) -> list[Preference]:
    """The held-out train-user preferences of :func:`split_train_heldout`."""
    return split_train_heldout(bench, per_user, max_users, seed)[1]


def harmonic_mean(values: Sequence[float]) -> float:
    """n / sum(1 / v); 0 when any value is 0 or negative (or not finite)."""
    if any(not math.isfinite(v) or v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def _best(curve: list[dict[str, Any]]) -> float:
    best = curve[0]
    for point in curve[1:]:
        if point["score"] > best["score"]:  # strictly better: ties keep the earlier lambda
            best = point
    return best["lam"]


def select_lambda(
    policy,
    reward_model,
    heldout_prefs: Sequence[Preference],
    lams: Sequence[float],
    *,
    objective: str = "policy-accuracy",
    scorer: str | None = None,
    completions: Mapping[str, Completion] | Sequence[Completion] | None = None,
    decode_settings: Mapping[str, Any] | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """{"lam": best, "objective", "scorer", "curve": [{"lam", "policy_accuracy", ..., "score"}]}.

    ``scorer``: personal-rgd for a personalized reward model, else global-rgd (default).
    ``decode_settings``: ARGS settings of the ``harmonic`` generations (k, max_new_tokens, ...),
    lambda excluded.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; choose from {', '.join(OBJECTIVES)}")
    lams = [float(lam) for lam in lams]
    prefs = list(heldout_prefs)
    if not lams or not prefs:
        raise ConfigError("lambda selection needs a non-empty grid and held-out preferences")
    if not getattr(reward_model, "supports_rgd", True):
        name = getattr(reward_model, "name", type(reward_model).__name__)
        raise ConfigError(f"{name} does not support reward-guided decoding: no lambda to choose")
    if scorer is None:
        personalized = getattr(reward_model, "personalized", True)
        scorer = "personal-rgd" if personalized else "global-rgd"
    accuracy = policy_accuracy_curve(
        policy,
        prefs,
        reward_model,
        lams,
        scorer=scorer,
        batch_size=batch_size,
        progress=progress,
    )
    curve = [{"lam": lam, "policy_accuracy": accuracy[lam]["mean"]} for lam in lams]
    if objective == "policy-accuracy":
        for point in curve:
            point["score"] = point["policy_accuracy"]
    else:
        settings = dict(decode_settings or {})
        if "lam" in settings:
            raise ConfigError("decode_settings must not set lam: the grid does")
        settings.setdefault("batch_size", batch_size)
        references = _references(prefs, completions)
        for point in curve:
            point.update(
                generation_figures(policy, reward_model, prefs, references, point["lam"], settings)
            )
            figures = [point["rouge1"], point["inverse_perplexity"], point["policy_accuracy"]]
            point["score"] = harmonic_mean(figures)
            log.info("lambda %g: %s", point["lam"], point)
    best = _best(curve)
    log.info("chosen lambda %g (%s over %d held-out preferences)", best, objective, len(prefs))
    return {
        "lam": best,
        "objective": objective,
        "scorer": scorer,
        "heldout": len(prefs),
        "users": len({p.user for p in prefs}),
        "curve": curve,
    }


def _references(
    prefs: Sequence[Preference], completions: Mapping[str, Completion] | Sequence[Completion] | None
) -> list[str]:
    """Each item's reference: its completion (by preference id) if given, else its chosen."""
    if completions is not None and not isinstance(completions, Mapping):
        completions = {c.id: c for c in completions}
    found = completions or {}
    return [found[p.id].reference if p.id in found else p.chosen for p in prefs]


def generation_figures(
    policy,
    reward_model,
    prefs: Sequence[Preference],
    references: Sequence[str],
    lam: float,
    settings: Mapping[str, Any],
) -> dict[str, float]:
    """ROUGE-1 and inverse perplexity of ARGS generations at ``lam`` (per user, then mean)."""
    decoder = create_decoder("args", policy, reward_model=reward_model, lam=lam, **settings)
    requests = [GenerationRequest(p.id, p.user, p.prompt) for p in prefs]
    texts = [g.text for g in decoder.generate(requests, progress=False)]
    users = [p.user for p in prefs]
    rouge1 = per_user_mean(users, [s["rouge1"] for s in rouge(texts, references)])["mean"]
    ppl = perplexity(
        policy,
        [p.prompt for p in prefs],
        texts,
        users=users,
        batch_size=int(settings.get("batch_size", 8)),
        progress=False,
    )["mean"]
    inverse = 1.0 / ppl if math.isfinite(ppl) and ppl > 0 else 0.0
    return {"rouge1": rouge1, "perplexity": ppl, "inverse_perplexity": inverse}


def save_selection(result: Mapping[str, Any], path: str | Path) -> None:
    """Write a :func:`select_lambda` result as JSON (atomically)."""
    write_json(path, dict(result))
