"""``extractive``: how much of the response is copied from the prompt (word overlap).

extractive("My cat ate my homework", "Cat ate homework")   # 1.0
extractive("My cat ate my homework", "A dog story")        # 0.0
"""

from __future__ import annotations

from persalign.data.attributes import register_attribute, words


@register_attribute(
    "extractive", summary="Share of the response's words that occur in the prompt (overlap)"
)
def extractive(prompt: str, response: str) -> float:
    """Fraction of the response's words (case-insensitive) found among the prompt's words;
    0 for an empty response. Extractive vs abstractive taste."""
    found = [w.casefold() for w in words(response)]
    if not found:
        return 0.0
    source = {w.casefold() for w in words(prompt)}
    return sum(w in source for w in found) / len(found)
