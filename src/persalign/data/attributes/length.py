"""``length``: the response's length in words (persalign.data.attributes.words).

length("...", "Attention Is All You Need")   # 5.0
"""

from __future__ import annotations

from persalign.data.attributes import register_attribute, words


@register_attribute("length", summary="Length of the response in words")
def length(prompt: str, response: str) -> float:
    """Number of words in the response (a taste for long or short texts)."""
    return float(len(words(response)))
