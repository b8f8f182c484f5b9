"""The registry of reward methods: every module of ``persalign.rewards.methods`` registers one.

    METHODS.names()           # ['genarm', 'global-rm', 'global-rm-v2', 'lore', ...]
    METHODS.get("lore")       # the RewardModel subclass

Its own module, below ``base`` (which registers) and ``io`` (which looks methods up to load a
saved model), so neither has to import the other to find it.
"""

from __future__ import annotations

from persalign.registry import Registry

METHODS: Registry[type] = Registry("reward method", packages=("persalign.rewards.methods",))
