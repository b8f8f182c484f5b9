"""Attribute scorers phi_j(x, y): the transparent features simulated users care about.

    from persalign.data.attributes import ATTRIBUTES, attribute_matrix
    ATTRIBUTES.names()
    # ['acronyms', 'colon', 'digits', 'extractive', 'first_person', 'hype', 'length', ...]
    ATTRIBUTES.get("length")("Summarize: ...", "A short title")    # 3.0
    attribute_matrix(["length", "question"], prompts, responses)   # [N, 2] float64

Each attribute is one file of this package: a function ``(prompt, response) -> float`` registered
with ``@register_attribute(name)``, deterministic (no randomness, no model), cheap on a CPU (pure
Python on the text) and documented with what it measures. ``persalign data build sim`` scores
every response of its source with the chosen attributes and standardizes each over them
(persalign.data.true_reward), so a user's weight on an attribute is in standard deviations.
Adding one is adding a file (docs/simulated-users.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from persalign.registry import Registry

Attribute = Callable[[str, str], float]
ATTRIBUTES: Registry[Attribute] = Registry("attribute", packages=("persalign.data.attributes",))

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


def register_attribute(name: str, summary: str = "") -> Callable[[Attribute], Attribute]:
    """Function decorator: register ``fn(prompt, response) -> float`` as attribute ``name``."""
    return ATTRIBUTES.register(name, summary)


def words(text: str) -> list[str]:
    """The words of ``text``: runs of letters and digits, inner apostrophes and hyphens kept."""
    return _WORD.findall(text)


def attribute_matrix(
    names: Sequence[str], prompts: Sequence[str], responses: Sequence[str]
) -> np.ndarray:
    """Raw attribute values [N, len(names)] (float64) of each (prompt, response)."""
    scorers = [ATTRIBUTES.get(name) for name in names]
    out = np.zeros((len(responses), len(scorers)), dtype=np.float64)  # [N, d]
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        for j, scorer in enumerate(scorers):
            out[i, j] = float(scorer(prompt, response))
    return out


__all__ = ["ATTRIBUTES", "Attribute", "attribute_matrix", "register_attribute", "words"]
