"""Seeded randomness that depends only on what it is for, never on call order or process.

from persalign.seeding import seeded_rng
seeded_rng("icl", 0, "user-3", "q17").sample(range(10), 2)   # the same list on every machine
"""

from __future__ import annotations

import random


def seeded_rng(*parts: object) -> random.Random:
    """A random generator that depends only on ``parts`` (not on call order or process)."""
    return random.Random(":".join(str(p) for p in parts))
