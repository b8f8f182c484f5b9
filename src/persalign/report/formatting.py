"""Fixed formats for report cells: "82.56 ± 1.12", "0.410 (p=0.123)", "--" for missing.

    fmt_stat(Stat(0.7725, 0.0125, 2))
    # '77.25 ± 1.25'
    fmt_corr({"pearson": {"r": 0.41, "p": 0.123}}, "pearson")
    # '0.410 (p=0.123)'
    fmt_column(Stat(12.5, 0.25, 2), perplexity_column), column_header(perplexity_column)
    # ('12.50 ± 0.25', 'Perplexity ↓')
    bertscore_label([("roberta-large", True)])
    # 'BERTScore-F1 (rescaled, roberta-large)'
    bertscore_label([("bundled:all-minilm-l6-v2", False)])
    # 'BERTScore-F1 (raw, all-minilm-l6-v2)'

Every number in a table goes through these, so the same results always give the same text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from persalign.metrics.base import Column
from persalign.report.results import Stat

NA = "--"
DAGGER = "†"
STATISTICS = {"pearson": "Pearson r", "spearman": "Spearman ρ", "kendall": "Kendall τ"}
LABELS = {
    "rm_accuracy": "RM Acc",
    "policy_accuracy": "Policy Acc",
    "win_rate": "Win Rate",
    "win_rate_per_user": "Win Rate (per-user mean)",
    "rouge1": "ROUGE-1",
    "rougeL": "ROUGE-L",
    "bertscore_f1": "BERTScore-F1",
}


def slug(name: str) -> str:
    """A file-name-safe form of a benchmark or policy name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "unnamed"


def fixed(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def fmt_stat(stat: Stat | None, expected: int = 0, scale: float = 100.0) -> str:
    """ "82.56 ± 1.12" (in % by default); "--" for None; "†" when n < expected."""
    if stat is None:
        return NA
    text = f"{fixed(stat.mean * scale, 2)} ± {fixed(stat.std * scale, 2)}"
    return text + DAGGER if stat.n < expected else text


def fmt_column(stat: Stat | None, column: Column, expected: int = 0) -> str:
    """A report column's value by its unit: a fraction in %, any other number as it is."""
    return fmt_stat(stat, expected, 100.0 if column.unit == "fraction" else 1.0)


def column_header(column: Column) -> str:
    """ "RM Acc (%) ↑": the label, "(%)" for fractions, ↑ / ↓ where higher / lower is better."""
    unit = " (%)" if column.unit == "fraction" else ""
    better = column.higher_is_better
    arrow = "" if better is None else " ↑" if better else " ↓"
    return f"{column.label}{unit}{arrow}"


def model_name(spec: str) -> str:
    """A BERTScore model as tables name it: ``bundled:`` and a local folder's path dropped."""
    name = spec.removeprefix("bundled:")
    if name.startswith(("/", "~", ".")):
        name = name.rstrip("/").rsplit("/", 1)[-1] or name
    return name


def bertscore_label(scales: Sequence[tuple[str, bool]], label: str = "BERTScore-F1") -> str:
    """The BERTScore header naming its scale and model, from the cells' ``(model, rescaled)``:
    "BERTScore-F1 (rescaled, roberta-large)"; several: "(several models or scales)"."""
    if not scales:
        return label
    if len(scales) > 1:
        return f"{label} (several models or scales)"
    model, rescaled = scales[0]
    return f"{label} ({'rescaled' if rescaled else 'raw'}, {model_name(model)})"


def finite(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def fmt_corr(result: dict[str, Any] | None, statistic: str) -> str:
    """ "0.410 (p=0.123)" from a correlations() result; "--" where undefined."""
    entry = (result or {}).get(statistic) or {}
    r, p = finite(entry.get("r")), finite(entry.get("p"))
    if r is None:
        return NA
    if p is None:
        return fixed(r, 3)
    return f"{fixed(r, 3)} ({'p<0.001' if p < 0.001 else f'p={p:.3f}'})"
