"""Cell metrics as plugins: one class per top-level key of a cell's metrics.json.

    from persalign.metrics import CellContext, CellMetric, Column, MetricSettings, register_metric

    class LengthSettings(MetricSettings):
        strip: bool = Field(True, description="Strip whitespace before counting.")

    @register_metric("length", summary="Mean generation length in characters, per user then mean")
    class Length(CellMetric):
        settings_class = LengthSettings     # metrics.length.strip in a run config
        needs = frozenset({"generations"})
        columns = (Column("length", ("length",), "Length", None, "number"),)

        def compute(self, ctx: CellContext) -> dict:
            texts = [g["text"].strip() if self.settings.strip else g["text"]
                     for g in ctx.generations]
            return {"mean": sum(len(t) for t in texts) / len(texts)}

    settings = metric_settings({"batch_size": 16, "length": {"strip": False}})  # every metric's
    ctx = CellContext(kind="method", method="lore", decoder="args", seed=0, settings=settings,
                      benchmark=bench, policy=policy, reward_model=rm, lam=1.0,
                      generations=gens, zero_shot=ZeroShot(zs_metrics, zs_gens))
    compute_cell_metrics(ctx)      # {"rm_accuracy": {...}, "policy_accuracy": {...}, ...}

A new file in ``persalign/metrics/`` with such a class is all a new metric needs: the registry
imports every module of the package on first lookup, the runner writes its value under its key,
``persalign ls metrics`` lists it and the report shows its columns (``schema.report_columns``).

A metric is computed for a cell when the cell's kind is one of its ``kinds``, everything it
``needs`` is there (see ``CellContext.has``) and ``enabled(settings)`` says yes; otherwise its
key is left out (the runner writes null). Metrics run in a fixed order (``order``, then key), so a
later one can read an earlier one's value in ``ctx.results``.

Options live beside their metric: ``settings_class`` (a :class:`MetricSettings` subclass: strict,
a description on every field) declares them, and the run config's ``metrics.<key>`` section sets
them (``metric_settings`` validates it; an unknown metric or option is a one-line error with
"did you mean"). Every metric has ``enabled``; ``metrics.<key>: false`` is short for
``{enabled: false}``. A shared option (``SHARED_OPTIONS``: ``batch_size``) given at the top of
the section is the default of every metric whose settings declare it (``ScoringSettings``), and a
metric's own entry overrides it. ``persalign ls metrics`` prints every metric's options.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from persalign.errors import ConfigError, did_you_mean, validated
from persalign.metrics.settings import SHARED_OPTIONS, MetricSettings, ScoringSettings
from persalign.metrics.text_scores import TextScores
from persalign.registry import Registry
from persalign.types import Benchmark, Preference

if TYPE_CHECKING:  # annotations only: importing them at run time would load torch
    from persalign.decoding import Policy
    from persalign.rewards import RewardModel

log = logging.getLogger(__name__)

KINDS = ("method", "baseline")
# what a metric may need, and what each means in a CellContext
NEEDS = {
    "generations": "the cell's generations (decoding.generate is on)",
    "references": "the users' own completions (benchmark.completions, Pref-LaMP/ACL)",
    "reward_model": "the method's reward model (method cells)",
    "policy": "the base policy",
    "zero_shot": "the zero-shot cell of the same benchmark, policy and seed",
    "true_reward": "the simulated users' known reward (a sim benchmark's true_reward.json)",
    "oracle": "the oracle cell of the same benchmark, policy and seed (sim benchmarks)",
}
# how a column's values are shown in the report
UNITS = {"fraction": "a fraction, shown in % (x 100)", "number": "shown as it is"}


@dataclass(frozen=True)
class Column:
    """One report column: the number at ``path`` in metrics.json (a dict's "mean" is read).

    ``higher_is_better``: None where neither is (lambda); ``expected_for``: the cell kinds where
    a null value is reported as missing.
    """

    key: str
    path: tuple[str, ...]
    label: str
    higher_is_better: bool | None
    unit: str = "fraction"
    expected_for: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"column {self.key!r}: unit {self.unit!r} not in {sorted(UNITS)}")
        if not self.path or not set(self.expected_for) <= set(KINDS):
            raise ValueError(f"column {self.key!r}: empty path or unknown kind in expected_for")


@dataclass(frozen=True)
class ZeroShot:
    """A finished cell a method cell is compared with: the zero-shot cell (``ctx.zero_shot``)
    or the oracle's cell (``ctx.oracle``, sim benchmarks)."""

    metrics: dict[str, Any]
    generations: list[dict[str, Any]] | None = None


@dataclass
class CellContext:
    """Everything a cell's metrics may use; the runner fills it (see compute_cell_metrics).

    ``settings``: a run config's ``metrics`` section, or metric key -> its settings (a
    MetricSettings, or its JSON dict as a cell spec stores it); ``metric_settings`` validates it
    on creation, and ``options(key)`` reads one metric's. ``decoder``: the method cell's
    decoder ("args"), or the baseline itself ("zero-shot", "icl", "icl-rag"). ``shots`` and
    ``icl`` (the cell decoder's settings, which the ICL scorer renders demonstrations with):
    cells whose decoder uses the support set (ICL, ICL-RAG) only. ``model_results``: files
    the model job wrote (``{"rm_accuracy": {...}}``). ``results``: what earlier metrics of this
    cell computed (filled in as they run). ``oracle``: the finished cell of the ``oracle``
    method (sim benchmarks, method cells of a run that has one). ``text_scores``: the per-text
    sums this cell's metrics have computed (``metrics.text_scores``: policy accuracy's texts,
    which the ground-truth rank does not score again).
    """

    kind: str
    method: str
    decoder: str
    seed: int
    settings: dict[str, Any]
    benchmark: Benchmark
    policy: Policy | None = None
    reward_model: RewardModel | None = None
    lam: float | None = None
    shots: int | None = None
    icl: dict[str, Any] | None = None
    generations: list[dict[str, Any]] | None = None
    zero_shot: ZeroShot | None = None
    oracle: ZeroShot | None = None
    model_results: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    text_scores: TextScores = field(default_factory=TextScores)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"cell kind {self.kind!r} is not one of {', '.join(KINDS)}")
        self.settings = metric_settings(self.settings)  # every metric's, validated

    def has(self, need: str) -> bool:
        """Whether the cell has what ``need`` (a key of NEEDS) names."""
        present = {
            "generations": self.generations is not None,
            "references": bool(self.benchmark.completions),
            "reward_model": self.reward_model is not None,
            "policy": self.policy is not None,
            "zero_shot": self.zero_shot is not None,
            "true_reward": self.benchmark.true_reward is not None,
            "oracle": self.oracle is not None,
        }
        return present[need]

    def judges_zero_shot(self) -> bool:
        """Whether the reward model can judge against the zero-shot cell's outputs: it has RM
        accuracy (not P-DPO, "-" in the paper) and the zero-shot cell has generations."""
        judge = bool(getattr(self.reward_model, "has_rm_accuracy", True))
        return judge and self.zero_shot is not None and self.zero_shot.generations is not None

    def options(self, key: str) -> MetricSettings:
        """The validated settings of metric ``key`` (its class's defaults where none given)."""
        given = self.settings.get(key)
        return given if given is not None else METRICS.get(key).settings_class()

    def prompts(self) -> dict[tuple[str, str], str]:
        """(user, id) -> prompt of every query preference."""
        return {(q.user, q.id): q.prompt for q in self.benchmark.query}

    def support(self) -> dict[str, list[Preference]]:
        """user -> support preferences of every adaptation user (the ICL demonstrations)."""
        return {u.user: list(u.support) for u in self.benchmark.adapt_users()}


class CellMetric:
    """A per-cell metric: its value goes under ``key`` in metrics.json (see module doc).

    Subclasses set ``needs`` (keys of NEEDS), ``kinds``, ``columns``, ``order`` and
    ``settings_class`` (their options, read in ``compute`` as ``self.settings``), may override
    ``applies``, and implement ``compute``. ``key`` and ``summary`` are set by
    ``register_metric``.
    """

    settings_class: ClassVar[type[MetricSettings]] = MetricSettings
    key: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    kinds: ClassVar[frozenset[str]] = frozenset(KINDS)
    columns: ClassVar[tuple[Column, ...]] = ()
    order: ClassVar[int] = 100  # computation, column and results.csv order (then key)

    def __init__(self, settings: MetricSettings | None = None):
        if settings is not None and not isinstance(settings, self.settings_class):
            raise TypeError(f"metric {self.key!r} takes {self.settings_class.__name__}")
        self.settings = settings if settings is not None else self.settings_class()

    def applies(self, ctx: CellContext) -> bool:
        """Whether to compute it for this cell: kind, needs and the config switch."""
        return (
            ctx.kind in self.kinds
            and all(ctx.has(need) for need in sorted(self.needs))
            and self.settings.enabled
        )

    @classmethod
    def describe_options(cls) -> list[tuple[str, str, str]]:
        """(option, default, description) of each of this metric's settings."""
        out = []
        for name, info in cls.settings_class.model_fields.items():
            default = "required" if info.is_required() else repr(info.default)
            out.append((name, default, info.description or ""))
        return out

    def announce(self, ctx: CellContext) -> None:
        """Before any metric of the cell computes: tell ``ctx.text_scores`` what this one will
        score (``TextScores.expect``), so an earlier metric's pass can score it on the same
        rows. Nothing by default; the values must not depend on it."""

    def compute(self, ctx: CellContext) -> Any:
        """The JSON value written under ``key``."""
        raise NotImplementedError


METRICS: Registry[type[CellMetric]] = Registry("metric", packages=("persalign.metrics",))


def register_metric(name: str, summary: str = "") -> Callable[[type[CellMetric]], type[CellMetric]]:
    """Class decorator: register a CellMetric whose metrics.json key (and registry name) is
    ``name``; every column must read from under that key."""

    def decorate(cls: type[CellMetric]) -> type[CellMetric]:
        if not (isinstance(cls, type) and issubclass(cls, CellMetric)):
            raise TypeError(f"metric {name!r}: {cls!r} is not a CellMetric subclass")
        if name in SHARED_OPTIONS or not issubclass(cls.settings_class, MetricSettings):
            raise ValueError(
                f"metric {name!r}: a shared option's name, or settings_class is "
                "not a MetricSettings subclass"
            )
        unknown = set(cls.needs) - set(NEEDS) or set(cls.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"metric {name!r}: unknown needs or kinds {sorted(unknown)}")
        outside = [c.key for c in cls.columns if c.path[0] != name]
        if outside:
            raise ValueError(f"metric {name!r}: columns {outside} do not read from {name!r}")
        cls.key = name
        cls.summary = summary or (cls.__doc__ or "").strip().split("\n")[0]
        return METRICS.register(name, summary=cls.summary)(cls)

    return decorate


def ordered_metrics() -> list[type[CellMetric]]:
    """Every registered metric in computation order: ``order``, then key."""
    return sorted((entry.obj for entry in METRICS.entries()), key=lambda m: (m.order, m.key))


def compute_cell_metrics(ctx: CellContext) -> dict[str, Any]:
    """{key: value} of every registered metric that applies to the cell, in a fixed order.

    Each value is also put into ``ctx.results`` as soon as it is computed.
    """
    metrics = []
    for cls in ordered_metrics():
        metric = cls(ctx.options(cls.key))
        if metric.applies(ctx):
            metrics.append(metric)
        else:
            log.debug("metric %s: not for this cell", cls.key)
    for metric in metrics:  # what each will score, before any computes (CellMetric.announce)
        metric.announce(ctx)
    out: dict[str, Any] = {}
    for metric in metrics:
        log.info("metric %s", metric.key)
        out[metric.key] = ctx.results[metric.key] = metric.compute(ctx)
    return out


def metric_settings(section: Mapping[str, Any] | None, where: str = "metrics") -> dict[str, Any]:
    """{key: validated MetricSettings} of every registered metric, from a run config's
    ``metrics`` section (see module doc); a ConfigError naming ``where.key`` otherwise."""
    section = dict(section or {})
    shared = {k: section.pop(k) for k in SHARED_OPTIONS if k in section}
    validated(ScoringSettings, shared, where)  # checks shared values
    for key, entry in section.items():
        if key not in METRICS:
            hint = did_you_mean(key, [*METRICS.names(), *SHARED_OPTIONS])
            raise ConfigError(
                f"{where}.{key}: unknown metric {key!r}{hint} (metrics: "
                f"{', '.join(METRICS.names())}; shared options: {', '.join(SHARED_OPTIONS)})"
            )
        if entry is not None and not isinstance(entry, bool | dict | MetricSettings):
            raise ConfigError(f"{where}.{key}: expected a mapping of options or true/false")
    out: dict[str, Any] = {}
    for cls in ordered_metrics():
        entry = section.get(cls.key)
        if isinstance(entry, cls.settings_class):
            out[cls.key] = entry
            continue
        if isinstance(entry, MetricSettings):
            entry = entry.model_dump()
        own = {"enabled": entry} if isinstance(entry, bool) else dict(entry or {})
        fields = cls.settings_class.model_fields
        for option in own:
            if option not in fields:
                hint = did_you_mean(option, list(fields))
                raise ConfigError(
                    f"{where}.{cls.key}.{option}: unknown option{hint} "
                    f"(options: {', '.join(fields)}; persalign ls metrics)"
                )
        data = {**{k: v for k, v in shared.items() if k in fields}, **own}
        out[cls.key] = validated(cls.settings_class, data, f"{where}.{cls.key}")
    return out


def settings_json(settings: Mapping[str, MetricSettings]) -> dict[str, dict[str, Any]]:
    """{key: settings as JSON} (what a cell spec stores and hashes)."""
    return {key: value.model_dump(mode="json") for key, value in settings.items()}
