"""``word_length``: the mean length of the response's words in characters.

word_length("...", "Transformers everywhere")   # 11.5
"""

from __future__ import annotations

from persalign.data.attributes import register_attribute, words


@register_attribute("word_length", summary="Mean word length in characters (plain vs technical)")
def word_length(prompt: str, response: str) -> float:
    """Mean number of characters per word; 0 for an empty response."""
    found = words(response)
    return sum(len(w) for w in found) / len(found) if found else 0.0
