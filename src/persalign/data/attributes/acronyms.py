"""``acronyms``: how many acronyms (all-capital words of two or more letters) the response has.

acronyms("...", "BERT and GPT for NLP")   # 3.0
"""

from __future__ import annotations

from persalign.data.attributes import register_attribute, words


@register_attribute("acronyms", summary="Number of acronyms (words of 2+ capitals, no lowercase)")
def acronyms(prompt: str, response: str) -> float:
    """Count of words with at least two capital letters and no lowercase letter ("NLP", "GPT-4",
    "TIFU"): a taste for jargon."""
    return float(
        sum(sum(c.isupper() for c in w) >= 2 and not any(c.islower() for c in w)
            for w in words(response))
    )  # fmt: skip
