"""One cell's metrics.json as a report ``Cell``: its report columns, per-user values, counts of
what it left out, and which null metrics do not apply to its method.

    cell = parse_cell(json.loads(text), "pref-acl__smol-135m__lore__s0")
    cell.values["rm_accuracy"], cell.per_user["rm_accuracy"], cell.not_applicable, cell.no_pairs
    method_traits("pal")            # frozenset({"no-rgd"}): PAL has no ARGS
    expected(report_columns())      # kind -> the column keys a finished cell should have

Every number read is a report column of ``persalign.metrics.schema``; report.reading walks the run
folder and reports what is missing. The rules (per-user values, the BERTScore scale, what "not
applicable" and "no pairs" mean) are in report.reading's docstring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from persalign.metrics.base import KINDS, Column
from persalign.metrics.schema import report_columns
from persalign.report.results import COST_KEYS, Cell
from persalign.rewards import METHODS

NO_RGD, NO_RM_ACCURACY, OWN_POLICY = "no-rgd", "no-rm-accuracy", "own-policy"
TRAITS = {NO_RGD: "no ARGS", NO_RM_ACCURACY: "no RM accuracy", OWN_POLICY: "writes itself"}
# what a method with no RM accuracy lacks: the metrics that judge with its reward model
JUDGED_BY_THE_RM = frozenset(
    {"rm_accuracy", "win_rate", "win_rate_per_user", "prefix_accuracy", "steering_accuracy",
     "gt_mrr", "gt_top1", "lambda"}
)  # fmt: skip
KEPT_WITHOUT_RGD = frozenset({"rm_accuracy", "prefix_accuracy"})  # a PAL cell still has these


def method_traits(method: str) -> frozenset[str]:
    """TRAITS of a reward method's class (unknown methods, older plugins: none)."""
    if method not in METHODS:
        return frozenset()
    cls = METHODS.get(method)
    traits = set()
    if not getattr(cls, "supports_rgd", True):
        traits.add(NO_RGD)
    if not getattr(cls, "has_rm_accuracy", True):
        traits.add(NO_RM_ACCURACY)
    if getattr(cls, "default_decoder", "args") != "args":
        traits.add(OWN_POLICY)
    return frozenset(traits)


def not_applicable(traits: frozenset[str], keys: Sequence[str]) -> dict[str, str]:
    """metric -> why it does not apply, for the null ``keys`` of a method with ``traits``."""
    out = {}
    for key in keys:
        if NO_RGD in traits and key not in KEPT_WITHOUT_RGD:
            out[key] = TRAITS[NO_RGD]
        elif NO_RM_ACCURACY in traits and key in JUDGED_BY_THE_RM:
            out[key] = TRAITS[NO_RM_ACCURACY]
    return out


# what a cell's metric blocks counted and left out (shown under the tables, summed over cells)
LEFT_OUT_COUNTS = {
    "win_rate.empty": ("win-rate pairs with an empty text", ("win_rate", "empty")),
    "win_rate.unpaired_rgd": ("RGD generations without a zero-shot partner",
                              ("win_rate", "unpaired_rgd")),
    "win_rate.unpaired_zero_shot": ("zero-shot generations without an RGD partner",
                                    ("win_rate", "unpaired_zero_shot")),
    "win_rate.no_prompt": ("win-rate pairs without a prompt", ("win_rate", "no_prompt")),
    "generation.unmatched_references": ("references without a generation",
                                        ("generation", "unmatched_references")),
    "generation.missing": ("generations without a reference", ("generation", "missing")),
    "steering_accuracy.unpaired": ("steering prompts without a partner",
                                   ("steering_accuracy", "unpaired")),
    "steering_accuracy.empty": ("steering pairs with an empty text",
                                ("steering_accuracy", "empty")),
    "prefix_accuracy.no_prefix": ("prefix-accuracy pairs without a prefix to compare",
                                  ("prefix_accuracy", "no_prefix")),
    "demonstrations.dropped": ("ICL demonstrations dropped to fit max_prompt_tokens",
                               ("demonstrations", "dropped")),
    "demonstrations.prompts_without": ("ICL prompts left without any demonstration "
                                       "(the zero-shot prompt)",
                                       ("demonstrations", "prompts_without")),
    "ground_truth_rank.no_negatives": ("ground-truth-rank prompts without negatives",
                                       ("ground_truth_rank", "no_negatives")),
}  # fmt: skip


def _no_pairs(raw: Any) -> bool:
    """A metric block computed on no pairs (ranking.per_user_accuracy's "no pairs")."""
    return isinstance(raw, dict) and (raw.get("status") == "no pairs" or raw.get("pairs") == 0)


def expected(columns: Sequence[Column]) -> dict[str, tuple[str, ...]]:
    """kind -> the column keys a finished cell of that kind should have (a null is reported)."""
    return {kind: tuple(c.key for c in columns if kind in c.expected_for) for kind in KINDS}


def _number(value: Any) -> float | None:
    if isinstance(value, dict):
        value = value.get("mean")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _per_user(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not isinstance(value.get("per_user"), dict):
        return {}
    out = {}
    for user, v in value["per_user"].items():
        number = _number(v)
        if number is not None:
            out[str(user)] = number
    return out


def _lookup(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = data
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def parse_cell(data: dict[str, Any], name: str, columns: Sequence[Column] | None = None) -> Cell:
    """One metrics.json as a Cell (the numbers of ``columns``, default: every report column);
    ValueError naming the field when it is not a cell."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    for key in ("benchmark", "policy", "seed", "kind", "method"):
        if data.get(key) is None:
            raise ValueError(f"missing field {key!r}")
    if data["kind"] not in KINDS:
        raise ValueError(f"unknown kind {data['kind']!r} (expected method or baseline)")
    values: dict[str, float] = {}
    per_user: dict[str, dict[str, float]] = {}
    no_pairs, null = set(), []
    for column in report_columns() if columns is None else columns:
        raw = _lookup(data, column.path)
        number = _number(raw)
        if number is None:
            null.append(column.key)
            if _no_pairs(raw):
                no_pairs.add(column.key)
        if number is not None:
            values[column.key] = number
            nested = not isinstance(raw, dict) and len(column.path) > 1
            per_user[column.key] = _per_user(_lookup(data, column.path[:-1]) if nested else raw)
    shots = data.get("shots")
    params = _number(data.get("scale_params"))
    model = _lookup(data, ("generation", "bertscore_model"))
    rescaled = _lookup(data, ("generation", "bertscore_rescaled"))
    tie = _number(_lookup(data, ("win_rate", "tie_weight"))) if "win_rate" in values else None
    personalized = data.get("personalized")
    cost_block = data.get("cost") if isinstance(data.get("cost"), dict) else {}
    cost = {k: v for k in COST_KEYS if (v := _number(cost_block.get(k))) is not None}
    traits = method_traits(str(data["method"])) if data["kind"] == "method" else frozenset()
    counts = {
        key: int(n)
        for key, (_, path) in LEFT_OUT_COUNTS.items()
        if (n := _number(_lookup(data, path)))
    }
    return Cell(
        cell=str(data.get("cell") or name),
        benchmark=str(data["benchmark"]),
        policy=str(data["policy"]),
        scale=str(data.get("scale") or data["policy"]),
        scale_params=params,
        seed=int(data["seed"]),
        kind=str(data["kind"]),
        method=str(data["method"]),
        shots=int(shots)
        if isinstance(shots, int | float) and not isinstance(shots, bool)
        else None,
        values=values,
        per_user=per_user,
        bertscore_model=str(model) if model else None,
        personalized=personalized if isinstance(personalized, bool) else None,
        bertscore_rescaled=(rescaled is True) if model else None,
        win_tie_weight=tie,
        cost=cost,
        seconds=_number(data.get("seconds")),
        not_applicable=not_applicable(traits, null),
        no_pairs=frozenset(no_pairs),
        traits=traits,
        left_out=counts,
    )
