"""Training loops shared by the reward methods: ``fit`` on train users, ``adapt`` a new user.

    history = fit(rm, bench.train, log_path="runs/x/train_log.jsonl")
    adapt_user_vector(rm, "user-7", support)      # z_k only; theta bitwise unchanged

``fit`` is seeded (initialisation, shuffling), shows a rich progress bar and writes one JSON line
per step (step, epoch, loss, pairwise accuracy). Methods change what a step does through
``RewardModel.training_step`` (LoRE-Alt alternates two optimisers) and what the loss is through
``pair_loss`` / ``pair_objective``. The default step back-propagates in micro-batches of at most
``max_tokens_per_microbatch`` tokens (exact for any ``pair_loss``; see ``pair_rewards``), with
each pair's prompt encoded once (``shared_prompt``) and, during ``fit`` only, gradient
checkpointing on the backbone (``gradient_checkpointing``).

With ``backbone_training="frozen"`` ``fit`` first builds the features of every training response
(``features.training_features``: one no-grad pass, cached on disk, reused by every method and
seed) and the steps read them (``rm.training_features``) instead of running the backbone; the
steps, epochs and seeds are those of the LoRA path. Adaptation reads its support pairs' features
the same way (``features.sequence_values``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from persalign.errors import ConfigError
from persalign.io import SkipReport
from persalign.logs import progress_bar
from persalign.rewards.engine.features import sequence_values, training_features
from persalign.rewards.engine.frozen_states import padded_states, remembers
from persalign.rewards.engine.memory import limit_heap_fragmentation
from persalign.rewards.engine.pair_rewards import backward_pair_loss, response_hidden

if TYPE_CHECKING:  # annotations only: RewardModel calls into this module
    from persalign.rewards.base import RewardModel
from persalign.types import Preference

log = logging.getLogger(__name__)


def usable_pairs(prefs: Sequence[Preference], skips: SkipReport) -> list[Preference]:
    """Pairs with non-empty, different texts; the rest are counted in ``skips``."""
    kept = []
    for pref in prefs:
        if not pref.chosen.strip() or not pref.rejected.strip():
            skips.add("pair with an empty response", pref.id)
        elif pref.chosen == pref.rejected:
            skips.add("pair with identical responses", pref.id)
        else:
            kept.append(pref)
    return kept


def default_training_step(
    rm: RewardModel, pairs: Sequence[Preference], optimizers: list[torch.optim.Optimizer]
) -> dict[str, float]:
    """One optimisation step on ``pairs``: forward, loss, backward (in micro-batches under the
    token budget, exactly), clip, step."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    chosen, rejected, loss = backward_pair_loss(rm, pairs)
    if rm.config.grad_clip:
        params = [p for opt in optimizers for g in opt.param_groups for p in g["params"]]
        nn.utils.clip_grad_norm_(params, rm.config.grad_clip)
    for opt in optimizers:
        opt.step()
    accuracy = (chosen > rejected).float().mean().item()
    return {"loss": loss.item(), "accuracy": accuracy}


def fit(
    rm: RewardModel,
    prefs: Sequence[Preference],
    *,
    log_path: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train theta and the train users' z_k on ``prefs``; returns the per-step history."""
    cfg = rm.config
    skips = SkipReport()
    pairs = usable_pairs(prefs, skips)
    skips.log(log, what="training pairs skipped")
    if not pairs:
        raise ConfigError(f"no usable training pairs among {len(prefs)} preferences")
    users = sorted({p.user for p in pairs})
    frozen_backbone = cfg.backbone_training == "frozen"
    if frozen_backbone:
        rm.training_features = training_features(rm, pairs, progress=progress)
    torch.manual_seed(cfg.seed)
    if rm.personalized:
        rm.set_users(users, rm.init_train_users(len(users)))
        rm.user_table.requires_grad_(True)
    try:
        return _train(rm, pairs, log_path=log_path, progress=progress)
    finally:
        rm.training_features = None


def _train(
    rm: RewardModel, pairs: list[Preference], *, log_path: str | Path | None, progress: bool
) -> list[dict[str, float]]:
    """``fit``'s loop once the users are set (and the frozen features built)."""
    cfg = rm.config
    rm.before_fit(pairs)
    optimizers = rm.make_optimizers()
    steps_per_epoch = math.ceil(len(pairs) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    generator = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    handle = _open_log(log_path)
    rm.train()
    rm.backbone.set_gradient_checkpointing(
        cfg.gradient_checkpointing and rm.training_features is None
    )
    limit_heap_fragmentation()
    try:
        with progress_bar(show=progress) as bar:
            task = bar.add_task(f"training {rm.name}", total=total)
            step = 0
            while step < total:
                order = torch.randperm(len(pairs), generator=generator).tolist()
                for start in range(0, len(order), cfg.batch_size):
                    if step >= total:
                        break
                    batch = [pairs[i] for i in order[start : start + cfg.batch_size]]
                    metrics = rm.training_step(batch, optimizers, step)
                    record = {
                        "step": step + 1,
                        "epoch": step // steps_per_epoch,
                        "pairs": len(batch),
                        **metrics,
                    }
                    history.append(record)
                    if handle:
                        handle.write(json.dumps(record) + "\n")
                        handle.flush()
                    step += 1
                    bar.update(task, advance=1, description=_describe(rm, metrics))
    finally:
        if handle:
            handle.close()
        rm.backbone.set_gradient_checkpointing(False)
        rm.eval()
        rm.user_table.requires_grad_(False)
    return history


def _describe(rm: RewardModel, metrics: dict[str, float]) -> str:
    return f"training {rm.name} loss {metrics['loss']:.3f} acc {metrics['accuracy']:.2f}"


def _open_log(path: str | Path | None):
    if path is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("w", encoding="utf-8")


@contextmanager
def frozen(module: nn.Module):
    """Temporarily stop gradients to every parameter of ``module``."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@torch.no_grad()
def response_features(rm: RewardModel, pairs: Sequence[Preference]) -> dict[str, Any]:
    """Frozen hidden states of the chosen and rejected responses: [2n, R, H] and validity
    (each pair's prompt encoded once where the method shares it; a frozen backbone's
    remembered states, frozen_states.py: every method and seed adapts from one pass)."""
    texts = [p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs]
    remembered = padded_states(rm, *texts) if remembers(rm) and pairs else None
    hidden, valid = response_hidden(rm, pairs) if remembered is None else remembered
    return {"hidden": hidden, "valid": valid, "n": len(pairs)}


def start_user_vector(
    rm: RewardModel, user: str, support: Sequence[Preference]
) -> tuple[list[Preference], nn.Parameter] | None:
    """The usable support pairs (skips counted and logged) and a fresh trainable z for a new
    user; None, with the user added at the method's starting z, when there is nothing to learn
    (no usable pair, or ``adapt_steps`` 0)."""
    skips = SkipReport()
    pairs = usable_pairs(support, skips)
    skips.log(log, what=f"support pairs of {user} skipped")
    z = nn.Parameter(rm.new_user_vector().detach().clone().float())
    if not pairs or rm.config.adapt_steps == 0:
        rm.add_user(user, z.detach())
        return None
    return list(pairs), z


def adapt_user_vector(rm: RewardModel, user: str, support: Sequence[Preference]) -> None:
    """Learn ``user``'s z by Bradley-Terry on cached, frozen response features."""
    start = start_user_vector(rm, user, support)
    if start is None:
        return
    pairs, z = start
    feats = response_features(rm, pairs)
    n = feats["n"]
    optimizer = torch.optim.Adam([z], lr=rm.config.adapt_lr or rm.config.user_lr)
    with frozen(rm):
        for _ in range(rm.config.adapt_steps):
            optimizer.zero_grad(set_to_none=True)
            rows = feats["hidden"].shape[0]
            zz = z[None, :].expand(rows, -1)  # [2n, D]
            last = sequence_values(rm, feats["hidden"], feats["valid"], zz)  # [2n]
            loss = rm.pair_loss(last[:n], last[n:], pairs) + rm.user_regularizer(z)
            loss.backward()
            optimizer.step()
    rm.add_user(user, z.detach())
