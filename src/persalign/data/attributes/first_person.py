"""``first_person``: the share of the response's words that are first-person pronouns.

first_person("...", "I think my boyfriend hates me")   # 0.5 (I, my, me of 6 words)
"""

from __future__ import annotations

from persalign.data.attributes import register_attribute, words

PRONOUNS = frozenset(
    {
        "i",
        "me",
        "my",
        "mine",
        "myself",
        "we",
        "us",
        "our",
        "ours",
        "ourselves",
        "i'm",
        "i've",
        "i'd",
        "i'll",
        "we're",
        "we've",
        "we'd",
        "we'll",
    }
)


@register_attribute("first_person", summary="Share of words that are first-person pronouns")
def first_person(prompt: str, response: str) -> float:
    """Fraction of words in PRONOUNS (case-insensitive; 0 for an empty response)."""
    found = [w.casefold().replace("’", "'") for w in words(response)]
    return sum(w in PRONOUNS for w in found) / len(found) if found else 0.0
