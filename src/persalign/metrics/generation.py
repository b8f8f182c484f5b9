"""Behavioural alignment (Eq. 8): how close generations are to what the user actually wrote.

    rouge(["a short title"], ["A Short Title, Longer"])          # rouge-score F-measures
    # [{'rouge1': 0.857..., 'rougeL': 0.857...}]
    bertscore_f1(["a title"], ["the title"])                     # bundled MiniLM, offline
    # [0.93...]
    bertscore_f1(preds, refs, model="roberta-large")             # the paper's: rescaled (hub)
    result = behavioural_alignment(generations, bench.completions)
    result["rouge1"]["mean"], result["bertscore_model"], result["bertscore_layers"]
    result["bertscore_rescaled"], result["bertscore_baseline"]   # False, None: raw MiniLM

``behavioural_alignment`` matches each generation (a dict with ``user``, ``id``, ``text``, as
written by ``persalign generate``) to the user's completion with the same (user, id), scores
each pair with ROUGE-1, ROUGE-L (F-measure, Porter stemmer) and BERTScore-F1, averages per user
and then over users. Generations without a reference are counted (``missing``), never silently
dropped into the average. Empty generations score 0 on every similarity and are counted
(``empty``; BERTScore's 0 is raw, see below). BERTScore is rescaled with bert-score's baseline
where it ships one for the model and layer (roberta-large: the paper's scale), raw otherwise
(the bundled MiniLM), or as ``rescale`` says (auto | always | never); the result names which
(``bertscore_rescaled``, and the F1 baseline ``bertscore_baseline`` it was rescaled with). The
BERTScore machinery lives in :mod:`persalign.metrics.bertscore`.

The ``generation`` cell metric is ``behavioural_alignment`` with the options of
``metrics.generation`` (``GenerationSettings``: ``bertscore_model``, ``bertscore_num_layers``,
``bertscore_rescale``, ``bertscore_batch_size``), or, when ``bertscore_model`` is null, ROUGE only
(``bertscore_f1`` and its model null).
"""

from __future__ import annotations

import functools
import logging
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from persalign.errors import ConfigError
from persalign.metrics.base import CellContext, CellMetric, Column, register_metric
from persalign.metrics.bertscore import (
    DEFAULT_BERTSCORE_MODEL,
    bertscore_baseline,
    bertscore_f1,
    read_baseline,
    resolve_bertscore_model,
)
from persalign.metrics.settings import MetricSettings
from persalign.types import Completion

log = logging.getLogger(__name__)

ROUGE_TYPES = ("rouge1", "rougeL")
SIMILARITIES = ("rouge1", "rougeL", "bertscore_f1")
MAX_EXAMPLES = 5  # how many missing keys a result lists by name

__all__ = [
    "DEFAULT_BERTSCORE_MODEL",
    "behavioural_alignment",
    "bertscore_f1",
    "per_user_mean",
    "rouge",
    "rouge_only",
]


@functools.cache
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer  # lazy: rouge-score imports nltk (seconds)

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """``[{"rouge1": f, "rougeL": f}]`` per (prediction, reference) pair, F-measure, stemmed.

    An empty prediction (or reference) scores 0.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    scorer = _rouge_scorer()
    out = []
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)  # rouge-score's order: (target, prediction)
        out.append({name: float(scores[name].fmeasure) for name in ROUGE_TYPES})
    return out


def per_user_mean(users: Sequence[str], values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "pooled", "per_user"}``: per user, then over users (Eq. 8); pooled: over items."""
    by_user: dict[str, list[float]] = {}
    for user, value in zip(users, values, strict=True):
        by_user.setdefault(user, []).append(float(value))
    per_user = {user: statistics.fmean(v) for user, v in sorted(by_user.items())}
    nan = float("nan")
    return {
        "mean": statistics.fmean(per_user.values()) if per_user else nan,
        "pooled": statistics.fmean(values) if len(values) else nan,
        "per_user": per_user,
    }


def _field(record: Any, name: str, index: int) -> Any:
    value = record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)
    if value is None:
        raise ConfigError(f"generation #{index + 1} has no {name!r} field: {record!r:.200}")
    return value


def _references(
    completions: Iterable[Completion] | Mapping[Any, Any],
) -> dict[tuple[str, str], str]:
    """(user, id) -> reference text, from Completions or a mapping (of Completions, or of
    ``(user, id) -> reference text``); a duplicated key is a ConfigError."""
    items: list[tuple[tuple[str, str], str]] = []
    if isinstance(completions, Mapping):
        for key, value in completions.items():
            if isinstance(value, Completion):
                items.append(((value.user, value.id), value.reference))
            elif isinstance(key, tuple) and len(key) == 2 and isinstance(value, str):
                items.append(((str(key[0]), str(key[1])), value))
            else:
                raise ConfigError(
                    "completions mapping must hold Completion values or (user, id) -> text, "
                    f"got {key!r}: {value!r:.80}"
                )
    else:
        items = [((c.user, c.id), c.reference) for c in completions]
    refs: dict[tuple[str, str], str] = {}
    for key, text in items:
        if key in refs:
            raise ConfigError(f"two completions for user {key[0]!r}, id {key[1]!r}")
        refs[key] = text
    return refs


def behavioural_alignment(
    generations: Sequence[Mapping[str, Any]],
    completions: Iterable[Completion] | Mapping[Any, Any],
    bertscore_model: str = DEFAULT_BERTSCORE_MODEL,
    *,
    num_layers: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
    rescale: str = "auto",
    baseline_path: str | Path | None = None,
) -> dict[str, Any]:
    """Eq. 8 with S = ROUGE-1, ROUGE-L and BERTScore-F1.

    Returns ``{"rouge1"|"rougeL"|"bertscore_f1": {"mean", "pooled", "per_user"},
    "bertscore_model", "bertscore_layers", "bertscore_rescaled", "bertscore_baseline", "n",
    "users", "missing", "missing_examples", "empty", "unmatched_references"}``: ``n``
    generations were scored, ``missing`` had no reference (not scored), ``empty`` were empty
    strings (scored 0, BERTScore raw 0), ``unmatched_references`` completions had no generation.
    ``rescale`` and ``baseline_path``: see :func:`persalign.metrics.bertscore.bertscore_baseline`.
    """
    refs = _references(completions)
    users: list[str] = []
    predictions: list[str] = []
    references: list[str] = []
    missing: list[str] = []
    seen: set[tuple[str, str]] = set()
    for index, gen in enumerate(generations):
        key = (str(_field(gen, "user", index)), str(_field(gen, "id", index)))
        text = _field(gen, "text", index)
        if key in seen:
            raise ConfigError(f"two generations for user {key[0]!r}, id {key[1]!r}")
        seen.add(key)
        if key not in refs:
            missing.append(f"{key[0]}/{key[1]}")
            continue
        users.append(key[0])
        predictions.append(str(text))
        references.append(refs[key])
    if missing:
        log.warning(
            "%d generation(s) have no reference completion and are not scored (e.g. %s)",
            len(missing),
            ", ".join(missing[:MAX_EXAMPLES]),
        )
    empty = sum(1 for p in predictions if not p.strip())
    if empty:
        log.warning("%d generation(s) are empty and score 0", empty)
    spec, layers = resolve_bertscore_model(bertscore_model, num_layers)
    baseline = bertscore_baseline(spec, layers, rescale, baseline_path)
    per_pair = rouge(predictions, references)
    bert = (
        bertscore_f1(
            predictions,
            references,
            model=spec,
            num_layers=layers,
            batch_size=batch_size,
            device=device,
            rescale="always" if baseline is not None else "never",
            baseline_path=baseline,
        )
        if predictions
        else []
    )
    values = {name: [p[name] for p in per_pair] for name in ROUGE_TYPES}
    values["bertscore_f1"] = bert
    result: dict[str, Any] = {name: per_user_mean(users, values[name]) for name in SIMILARITIES}
    result.update(
        bertscore_model=bertscore_model,
        bertscore_layers=layers,
        bertscore_rescaled=baseline is not None,
        bertscore_baseline=None if baseline is None else read_baseline(baseline, layers),
        n=len(predictions),
        users=len(set(users)),
        missing=len(missing),
        missing_examples=missing[:MAX_EXAMPLES],
        empty=empty,
        unmatched_references=len(set(refs) - seen),
    )
    return result


def rouge_only(
    generations: Sequence[Mapping[str, Any]], completions: Iterable[Completion]
) -> dict[str, Any]:
    """The ``generation`` block without BERTScore: ROUGE-1/L of the generations that have a
    completion, per user then mean (bertscore_f1 and bertscore_model null)."""
    refs = {(c.user, c.id): c.reference for c in completions}
    scored = [g for g in generations if (g["user"], g["id"]) in refs]
    pairs = rouge([g["text"] for g in scored], [refs[g["user"], g["id"]] for g in scored])
    users = [g["user"] for g in scored]
    out: dict[str, Any] = {
        name: per_user_mean(users, [p[name] for p in pairs]) for name in ROUGE_TYPES
    }
    out.update(bertscore_f1=None, bertscore_model=None, n=len(scored))
    return out


class GenerationSettings(MetricSettings):
    """Options of behavioural alignment (``metrics.generation``)."""

    bertscore_model: str | None = Field(
        DEFAULT_BERTSCORE_MODEL,
        description="BERTScore model (roberta-large on connected machines); null: ROUGE only.",
    )
    bertscore_num_layers: int | None = Field(
        None, ge=1, description="BERTScore layer; null: bert-score's table, else the last layer."
    )
    bertscore_rescale: Literal["auto", "always", "never"] = Field(
        "auto",
        description="BERTScore scale: auto: rescaled with bert-score's baseline where it ships one "
        "(roberta-large, the paper's scale), raw otherwise; always: rescaled or an error; "
        "never: raw F1.",
    )
    bertscore_batch_size: int = Field(
        32, ge=1, description="Sentence pairs per BERTScore pass (not metrics.batch_size)."
    )


def _similarity(key: str, label: str) -> Column:
    return Column(key, ("generation", key), label, True, "fraction", ("method", "baseline"))


@register_metric(
    "generation",
    summary="Eq. 8: ROUGE-1/L and BERTScore-F1 vs the user's own completion, per user then mean",
)
class BehaviouralAlignment(CellMetric):
    """Behavioural alignment of the cell's generations (benchmarks with completions)."""

    settings_class = GenerationSettings

    needs = frozenset({"generations", "references"})
    order = 50
    columns = (
        _similarity("rouge1", "ROUGE-1"),
        _similarity("rougeL", "ROUGE-L"),
        _similarity("bertscore_f1", "BERTScore-F1"),
    )

    def compute(self, ctx: CellContext) -> dict[str, Any]:
        gens, completions = ctx.generations or [], ctx.benchmark.completions
        options = self.settings
        if not options.bertscore_model:
            return rouge_only(gens, completions)
        return behavioural_alignment(
            gens,
            completions,
            options.bertscore_model,
            num_layers=options.bertscore_num_layers,
            batch_size=options.bertscore_batch_size,
            rescale=options.bertscore_rescale,
        )
