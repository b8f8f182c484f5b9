"""``--set key=value`` overrides: dotted keys, YAML-typed values.

parse_overrides(["head_lr=1e-3", "latent_dim=8", "model.name=lore", "tags=[a, b]"])
# {'head_lr': 0.001, 'latent_dim': 8, 'model': {'name': 'lore'}, 'tags': ['a', 'b']}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from persalign.errors import ConfigError


def parse_value(text: str) -> Any:
    """A YAML scalar or list (``8`` -> 8, ``1e-3`` -> 0.001, ``true`` -> True, ``x`` -> 'x')."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse value {text!r}: {exc}") from None
    if isinstance(value, str) and _looks_like_float(value):
        return float(value)  # YAML 1.1 reads "1e-3" as a string
    return value


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Nested dict from ``key=value`` strings; a dotted key makes nested mappings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part!r} is both a value and a section")
        node[leaf] = parse_value(raw)
    return out
