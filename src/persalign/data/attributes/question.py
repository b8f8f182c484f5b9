"""``question``: whether the response is (or contains) a question.

question("...", "Should I break up with my boyfriend?")   # 1.0
"""

from __future__ import annotations

from persalign.data.attributes import register_attribute


@register_attribute("question", summary="1 if the response contains a question mark, else 0")
def question(prompt: str, response: str) -> float:
    """1.0 when the response contains "?" (question form), else 0.0."""
    return 1.0 if "?" in response else 0.0
