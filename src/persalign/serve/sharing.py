"""The served reward model on the policy's own weights, when its backbone is frozen.

    rm = load_reward_for("runs/lore", policy, device="cpu")   # one model in memory if it can
    reason = sharing_reason("runs/lore", policy)               # None: it can; else why not

A reward model trained with a frozen backbone (its saved LoRA weights all zero, or none) on
the policy's model (same spec, device and dtype) needs no backbone of its own: it is loaded onto
``policy.model`` (wrapped without LoRA) and its decoding forward is the policy's, so the
process holds one copy of the weights, and ``Engine`` then runs fused ARGS (each user costs a
vector, not a model). Otherwise the reward model loads its own backbone, as before, and one
INFO line says why.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from persalign.decoding.policy import Policy
from persalign.errors import ConfigError
from persalign.models.device import pick_device, pick_dtype
from persalign.models.loading import resolve_model_path
from persalign.rewards import load
from persalign.rewards.engine.backbone import Backbone
from persalign.rewards.engine.saving import saved_config, saved_lora_is_zero

log = logging.getLogger(__name__)


def _same_model(a: str, b: str) -> bool:
    try:
        return a == b or resolve_model_path(a) == resolve_model_path(b)
    except ConfigError:
        return False


def sharing_reason(path: str | Path, policy: Any, **overrides: Any) -> str | None:
    """None when the reward model at ``path`` can run on ``policy``'s loaded model; else why
    not (``overrides``: device/dtype as ``load`` takes them)."""
    if not isinstance(policy, Policy) or not policy.spec:
        return "the policy was not loaded from a model spec"
    config = saved_config(path, **overrides)
    if not _same_model(config.backbone, policy.spec):
        return f"its backbone {config.backbone!r} is not the policy {policy.spec!r}"
    device = pick_device(config.device)
    dtype = pick_dtype(device, config.dtype)
    here = policy.device
    if device.type != here.type or (device.index or 0) != (here.index or 0):
        return f"it runs on {device}, the policy on {here}"
    if dtype != policy.model.dtype:
        return f"it runs in {dtype}, the policy in {policy.model.dtype}"
    if not saved_lora_is_zero(path):
        return "its LoRA weights are not zero (a LoRA-trained backbone)"
    return None


def load_reward_for(path: str | Path, policy: Any, **overrides: Any) -> Any:
    """The reward model at ``path``, on ``policy``'s weights when ``sharing_reason`` allows."""
    reason = sharing_reason(path, policy, **overrides)
    if reason is not None:
        log.info("the reward model loads a backbone of its own: %s", reason)
        return load(path, **overrides)
    backbone = Backbone(policy.model, None)
    # its decoding forward is the policy's: no second (merged) view of the weights either
    backbone.decode_hidden = policy.decode_hidden
    rm = load(path, shared_backbone=backbone, tokenizer=policy.tokenizer, **overrides)
    log.info("the reward model runs on the policy's weights (frozen backbone): one model loaded")
    return rm
