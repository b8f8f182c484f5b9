"""``hype``: how many hype words (a fixed lexicon of promotional adjectives) the response uses.

hype("...", "A novel, powerful and efficient approach")   # 3.0
"""

from __future__ import annotations

from persalign.data.attributes import register_attribute, words

LEXICON = frozenset(
    {
        "novel",
        "powerful",
        "robust",
        "efficient",
        "effective",
        "significant",
        "significantly",
        "remarkable",
        "unprecedented",
        "breakthrough",
        "revolutionary",
        "amazing",
        "incredible",
        "best",
        "superior",
        "improved",
        "improving",
        "state-of-the-art",
        "cutting-edge",
        "groundbreaking",
        "seamless",
        "scalable",
        "unified",
        "simple",
        "strong",
        "stronger",
        "better",
        "massive",
        "huge",
        "awesome",
        "great",
        "crazy",
        "insane",
        "ultimate",
    }
)


@register_attribute("hype", summary="Number of words from a fixed lexicon of hype words")
def hype(prompt: str, response: str) -> float:
    """Count of words (case-insensitive) in LEXICON: a taste for, or against, promotion."""
    return float(sum(w.casefold() in LEXICON for w in words(response)))
