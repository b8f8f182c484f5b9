"""A run config's reward methods and decoders, checked against their registries before anything
runs (``parse_config`` calls these; ``runs.plan`` reads their results).

    reward_configs = check_methods(config)     # label -> the method's full, validated config
    decoder_settings(config, "args", seed=0)   # the decoding section's keys ARGS declares
    name, options = baseline_decoder(config, "short")   # baselines.decoders.short
    check_baselines(config)                    # every extra baseline decoder and its settings

Each error names the config key: ``methods.lore.latnt_dim: unknown key``, ``methods.pal.decoder:
'args' ...``, ``baselines.decoders.short.k: unknown key``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from persalign.decoding import DECODERS
from persalign.errors import ConfigError, validated
from persalign.io import dumps
from persalign.rewards import METHODS, RewardConfig

if TYPE_CHECKING:  # annotations only: runs.config imports this module
    from persalign.runs.config import RunConfig

GRID_OWNED_KEYS = ("seed",)  # set by the grid, never per method


def check_methods(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Validate every method against its own config class; returns label -> full reward config.

    Validated once per distinct (reward, methods) content: ``parse_config`` checks early (before
    anything is built) and ``make_plan`` reads the same result.
    """
    key = dumps(config.model_dump(mode="json", include={"reward", "methods"}))
    if key not in _CHECKED:
        _CHECKED.clear()  # one config at a time
        _CHECKED[key] = _checked_methods(config)
    return copy.deepcopy(_CHECKED[key])


_CHECKED: dict[str, dict[str, dict[str, Any]]] = {}


def _checked_methods(config: RunConfig) -> dict[str, dict[str, Any]]:
    _validate(RewardConfig, config.reward.settings, "reward.settings")
    out = {}
    for label, entry in config.methods.items():
        where = f"methods.{label}"
        if entry is not None and not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping of options, got {entry!r}")
        for key in GRID_OWNED_KEYS:
            if key in (entry or {}) or key in config.reward.settings:
                raise ConfigError(f"{where}.{key}: set by the grid (use 'seeds'), not per method")
        name, decoder, options = config.method_options(label)
        if not isinstance(name, str):
            raise ConfigError(f"{where}.method: expected a method name, got {name!r}")
        try:
            cls = METHODS.get(name)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        try:
            decoder_class = DECODERS.get(decoder)
        except ConfigError as exc:
            raise ConfigError(f"{where}.decoder: {exc}") from None
        if not decoder_class.needs_reward_model:
            raise ConfigError(f"{where}.decoder: {decoder!r} does not use a reward model")
        allowed = decoder_class.reward_methods
        if allowed and name not in allowed:
            raise ConfigError(
                f"{where}.decoder: {decoder!r} needs method {' or '.join(allowed)}, not {name!r}"
            )
        out[label] = _validate(cls.config_class, {**options, "seed": 0}, where)
        if out[label].get("backbone_training") == "frozen" and (problem := cls.frozen_problem()):
            raise ConfigError(
                f"{where}: {name}: {problem} (add `backbone_training: lora` under {where})"
            )
    return out


def decoder_settings(config: RunConfig, decoder: str, seed: int, **extra: Any) -> dict[str, Any]:
    """The settings of ``decoder`` for a cell: every key of the config's ``decoding`` section
    (and ``extra``) that the decoder's settings class declares, validated; lambda excepted."""
    cls = DECODERS.get(decoder)
    offered = {**config.decoding.model_dump(mode="json", exclude={"generate"}), **extra}
    settings = {k: v for k, v in offered.items() if cls.takes(k) and k != "lam"}
    settings["seed"] = seed
    where = f"decoder {decoder}"
    return validated(cls.settings_class, settings, head=where).model_dump(
        mode="json", include=set(settings)
    )


def baseline_decoder(config: RunConfig, row: str) -> tuple[str, dict[str, Any]]:
    """(registered decoder, settings given in the config) of ``baselines.decoders.<row>``."""
    where = f"baselines.decoders.{row}"
    entry = config.baselines.decoders[row]
    if entry is not None and not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping of options, got {entry!r}")
    options = dict(entry or {})
    name = options.pop("decoder", row)
    try:
        cls = DECODERS.get(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}.decoder: {exc}") from None
    if cls.needs_reward_model:
        raise ConfigError(f"{where}.decoder: {name!r} needs a reward model: list it under methods")
    return name, options


def check_baselines(config: RunConfig) -> None:
    """Every extra baseline decoder exists, needs no reward model, and takes its settings."""
    for row in config.baselines.decoders:
        name, options = baseline_decoder(config, row)
        unknown = sorted(k for k in options if not DECODERS.get(name).takes(k))
        if unknown:
            raise ConfigError(f"baselines.decoders.{row}.{unknown[0]}: unknown key")
        decoder_settings(config, name, 0, **options)


def _validate(model: type[BaseModel], data: dict[str, Any], where: str) -> dict[str, Any]:
    return validated(model, data, where).model_dump()


def _validate(model: type[BaseModel], data: dict[str, Any], where: str) -> dict[str, Any]:
    return validated(model, data, where).model_dump()
