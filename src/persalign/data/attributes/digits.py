"""``digits``: how many numbers the response contains.

digits("...", "I lost 20 pounds in 3 months")   # 2.0
"""

from __future__ import annotations

import re

from persalign.data.attributes import register_attribute

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@register_attribute("digits", summary="Number of numbers (runs of digits) in the response")
def digits(prompt: str, response: str) -> float:
    """Count of maximal digit runs ("3.5" and "1,000" count once): a taste for specifics."""
    return float(len(_NUMBER.findall(response)))
