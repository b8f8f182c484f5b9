"""A run config's ``metrics`` section: every registered metric's validated settings.

    settings = metric_settings({"batch_size": 16, "win_rate": {"ties": "half"}})
    settings["win_rate"].ties          # "half"
    settings["rm_accuracy"].batch_size  # 16: a shared option is every metric's default
    settings_json(settings)            # what a cell spec stores and hashes

An unknown metric or option is a ConfigError naming ``metrics.<key>[.<option>]``, with "did you
mean"; ``metrics.<key>: false`` is short for ``{enabled: false}`` (persalign.metrics.base).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from persalign.errors import ConfigError, did_you_mean, validated
from persalign.metrics.base import METRICS, ordered_metrics
from persalign.metrics.settings import SHARED_OPTIONS, MetricSettings, ScoringSettings


def metric_settings(section: Mapping[str, Any] | None, where: str = "metrics") -> dict[str, Any]:
    """{key: validated MetricSettings} of every registered metric, from a run config's
    ``metrics`` section (see module doc); a ConfigError naming ``where.key`` otherwise."""
    section = dict(section or {})
    shared = {k: section.pop(k) for k in SHARED_OPTIONS if k in section}
    validated(ScoringSettings, shared, where)  # checks shared values
    for key, entry in section.items():
        if key not in METRICS:
            hint = did_you_mean(key, [*METRICS.names(), *SHARED_OPTIONS])
            raise ConfigError(
                f"{where}.{key}: unknown metric {key!r}{hint} (metrics: "
                f"{', '.join(METRICS.names())}; shared options: {', '.join(SHARED_OPTIONS)})"
            )
        if entry is not None and not isinstance(entry, bool | dict | MetricSettings):
            raise ConfigError(f"{where}.{key}: expected a mapping of options or true/false")
    out: dict[str, Any] = {}
    for cls in ordered_metrics():
        entry = section.get(cls.key)
        if isinstance(entry, cls.settings_class):
            out[cls.key] = entry
            continue
        if isinstance(entry, MetricSettings):
            entry = entry.model_dump()
        own = {"enabled": entry} if isinstance(entry, bool) else dict(entry or {})
        fields = cls.settings_class.model_fields
        for option in own:
            if option not in fields:
                hint = did_you_mean(option, list(fields))
                raise ConfigError(
                    f"{where}.{cls.key}.{option}: unknown option{hint} "
                    f"(options: {', '.join(fields)}; persalign ls metrics)"
                )
        data = {**{k: v for k, v in shared.items() if k in fields}, **own}
        out[cls.key] = validated(cls.settings_class, data, f"{where}.{cls.key}")
    return out


def settings_json(settings: Mapping[str, MetricSettings]) -> dict[str, dict[str, Any]]:
    """{key: settings as JSON} (what a cell spec stores and hashes)."""
    return {key: value.model_dump(mode="json") for key, value in settings.items()}
