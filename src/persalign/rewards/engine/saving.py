"""Saving and loading reward models: safetensors weights plus a JSON config, never pickle.

    rm.save("runs/x/model")
    rm = load_reward_model("runs/x/model")        # same rewards, same users

Only what training changed is saved: the LoRA weights, the head and the user table. The frozen
backbone is reloaded from its spec (a hub id, a folder or ``bundled:``) recorded in the config.

Each file is written to a temporary file and renamed; the weights first, then the config, which
records the weights' sha256. A save killed between the two leaves new weights beside the old
config: loading refuses it (the hash differs) instead of mixing two models. ``persalign train``
goes further and renames a whole temporary folder into place. Missing files are refused before
the backbone loads.

A model whose saved LoRA weights are all zero (or absent: a frozen backbone) can run on a
backbone loaded already, e.g. a policy's own model, instead of loading a second copy:

    if saved_lora_is_zero("runs/x/model"):
        rm = load_reward_model("runs/x/model", shared_backbone=Backbone(policy.model, None),
                               tokenizer=policy.tokenizer)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save

from persalign import __version__
from persalign.errors import DataError, validated
from persalign.io import atomic_write, read_json, write_json
from persalign.rewards.registry import METHODS

FORMAT = "persalign-reward/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


def trained_state(rm) -> dict[str, torch.Tensor]:
    """The state that training changes: everything but the frozen base weights."""
    out = {}
    for name, tensor in rm.state_dict().items():
        if name.startswith("backbone.") and "lora_" not in name:
            continue
        out[name] = tensor.detach().cpu().contiguous()
    return out


def save_reward_model(rm, path: str | Path) -> None:
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    payload = _serialize(trained_state(rm))
    with atomic_write(folder / WEIGHTS_FILE, "wb") as handle:
        handle.write(payload)
    users = sorted(rm.user_ids, key=rm.user_ids.__getitem__)
    write_json(
        folder / CONFIG_FILE,
        {
            "format": FORMAT,
            "method": rm.name,
            "config": rm.config.model_dump(),
            "users": users,
            "weights_sha256": hashlib.sha256(payload).hexdigest(),
            "persalign_version": __version__,
        },
    )


def _serialize(tensors: dict[str, torch.Tensor]) -> bytes:
    return save(tensors, metadata={"format": FORMAT})


def saved_config(path: str | Path, **overrides):
    """The method's validated config of a saved reward model (``overrides`` applied)."""
    meta, _ = _read_checked(Path(path))
    cls = METHODS.get(meta["method"])
    return validated(cls.config_class, {**meta["config"], **overrides}, head=f"{path}: config")


def saved_lora_is_zero(path: str | Path) -> bool:
    """Whether the saved LoRA weights are absent or all zero (B matrices: LoRA adds nothing,
    the backbone is its base model)."""
    _, weights = _read_checked(Path(path))
    return _lora_is_zero(_tensors(weights, Path(path) / WEIGHTS_FILE))


def _lora_is_zero(state: dict[str, torch.Tensor]) -> bool:
    return all(
        not bool(v.any()) for k, v in state.items() if "lora_B" in k or "lora_embedding_B" in k
    )


def _tensors(weights: bytes, weights_path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_tensors(weights)
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise DataError(f"cannot read weights ({exc})", weights_path) from exc


def _read_checked(folder: Path) -> tuple[dict, bytes]:
    """The config and the weights' bytes of a whole, consistent reward-model folder."""
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not folder.is_dir():
        raise DataError("not a reward-model folder (train one with `persalign train`)", folder)
    if not config_path.is_file():  # every file is checked before the backbone loads
        raise DataError(f"missing {CONFIG_FILE}: not a whole reward-model folder", folder)
    meta = read_json(config_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"not a persalign reward model (format {FORMAT!r} expected)", folder)
    for key, kind in (("method", str), ("config", dict)):
        if key not in meta:
            raise DataError(
                f"no {key!r} key (a reward model's config names its {key})", config_path
            )
        if not isinstance(meta[key], kind):
            got = type(meta[key]).__name__
            raise DataError(f"{key!r} must be a {kind.__name__}, got {got}", config_path)
    if not weights_path.is_file():
        raise DataError(f"missing {WEIGHTS_FILE}: not a whole reward-model folder", folder)
    weights = weights_path.read_bytes()
    recorded = meta.get("weights_sha256")
    if recorded is not None and hashlib.sha256(weights).hexdigest() != recorded:
        raise DataError(
            f"sha256 differs from the one {CONFIG_FILE} records (an interrupted save, or "
            "files from two models): retrain it",
            weights_path,
        )
    return meta, weights


def load_reward_model(path: str | Path, *, shared_backbone=None, tokenizer=None, **overrides):
    """Rebuild the method from its config, then load its trained weights.

    ``overrides`` are config keys (``backbone="other/spec"`` names another backbone to load).
    ``shared_backbone`` (a ``Backbone`` without LoRA, e.g. over a policy's model) replaces the
    one the config names, for a model whose saved LoRA weights are all zero (else a DataError); its
    saved LoRA weights are then left out. ``tokenizer`` replaces loading the config's."""
    folder = Path(path)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    meta, weights = _read_checked(folder)
    cls = METHODS.get(meta["method"])
    config = validated(
        cls.config_class, {**meta["config"], **overrides}, head=f"{config_path}: config"
    )
    state = _tensors(weights, weights_path)
    if shared_backbone is not None:
        if not _lora_is_zero(state):
            raise DataError("LoRA weights are not zero: it needs a backbone of its own", folder)
        state = {k: v for k, v in state.items() if "lora_" not in k}
    rm = cls(config, backbone=shared_backbone, tokenizer=tokenizer)
    state = {k: v.to(rm.backbone.device) for k, v in state.items()}
    if "user_table" in state:
        rm.set_users(meta["users"], state["user_table"])
    expected = set(trained_state(rm))
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise DataError(
            f"weights do not match method {meta['method']!r}: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}",
            weights_path,
        )
    rm.load_state_dict(state, strict=False)
    rm.eval()
    return rm
