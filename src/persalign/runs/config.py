"""Experiment configs: one YAML file, strict pydantic models, ``--set a.b=value`` overrides.

    config = load_config("configs/demo.yaml", overrides=["seeds=[0]", "decoding.k=5"])
    config.name, list(config.methods), config.seeds
    # ('demo', ['global-rm', 'global-rm-v2', 'lore', 'mpu', 'pref'], [0])
    config_hash(config)                          # sha256 of the resolved config
    dump_config(config)                          # the resolved dict (written to manifest.json)

Every key is checked: an unknown key or a wrong type is a :class:`ConfigError` naming the key
(``demo.yaml: decoding.max_new_tokns: unknown key``). Reward-method options are checked against
the method's own config class, so a typo in ``methods.lore.latnt_dim`` fails before anything
runs. Relative paths (``benchmarks.*.path``, ``source``, ``split_file``, ``completions``) are
relative to the config file's folder; ``$VARS`` and ``~`` are expanded. docs/runs.md is the
reference.
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from persalign.data.registry import PATH_FIELDS
from persalign.errors import ConfigError, describe_validation_error
from persalign.io import dumps, read_text
from persalign.metrics import MetricSettings, metric_settings
from persalign.metrics.selection import selection_column
from persalign.overrides import parse_overrides
from persalign.registry import load_plugins
from persalign.rewards import METHODS
from persalign.runs.config_checks import check_baselines, check_methods
from persalign.runs.sections import (
    BaselinesConfig,
    BenchmarkConfig,
    DecodingConfig,
    LambdaConfig,
    PolicyConfig,
    ReportConfig,
    RewardSection,
    Strict,
)

__all__ = [
    "BaselinesConfig",
    "BenchmarkConfig",
    "DecodingConfig",
    "LambdaConfig",
    "PolicyConfig",
    "ReportConfig",
    "RewardSection",
    "RunConfig",
    "check_methods",
    "config_hash",
    "dump_config",
    "load_config",
    "metrics_settings",
    "parse_config",
]


class RunConfig(Strict):
    """One experiment: the grid benchmark x method x policy x seed, plus baselines."""

    name: str = Field(description="Run name: results go to <out>/<name>/.", pattern=r"^[\w.-]+$")
    seeds: list[int] = Field([0], min_length=1, description="Seeds (one grid row each).")
    benchmarks: dict[str, BenchmarkConfig] = Field(
        min_length=1, description="Benchmarks by label (the key names cells and tables)."
    )
    reward: RewardSection = Field(RewardSection(), description="Reward-model settings.")
    methods: dict[str, dict[str, Any] | None] = Field(
        {},
        description="Reward methods by label: {method: registered name (default: the label), "
        "decoder: a registered decoder that uses a reward model (default: the method's "
        "default_decoder, args; p-dpo for P-DPO), any field of the method's config}.",
    )
    plugins: list[str] = Field(
        [],
        description="Modules to import before planning and in every job (each registers "
        "methods, decoders or metrics), e.g. my_lab.metrics.",
    )
    policies: dict[str, PolicyConfig] = Field(min_length=1, description="Policies by name.")
    baselines: BaselinesConfig = Field(BaselinesConfig(), description="Baselines.")
    decoding: DecodingConfig = Field(DecodingConfig(), description="Generation settings.")
    lam: LambdaConfig = Field(LambdaConfig(), alias="lambda", description="Lambda selection.")
    metrics: dict[str, Any] = Field(
        {},
        description="Metric options: {metric key: its options (persalign ls metrics), or "
        "true/false to switch it}; a shared option (batch_size) at the top is the default of "
        "every metric that has it.",
    )
    report: ReportConfig = Field(ReportConfig(), description="Report settings.")
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads per job (null: torch's default, one per core); 1 avoids "
        "oversubscribed cores. Ray tasks default to 1 (one CPU each).",
    )
    verify: bool = Field(
        True,
        description="Check every benchmark file against its manifest's sha256 when it loads (a "
        "benchmarks.<label>.path before anything runs, and in every job); false loads a folder "
        "edited by hand. `persalign run --no-verify` / `--verify` overrides it.",
    )

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("seeds must be distinct")
        return value

    @field_validator("benchmarks", "methods", "policies")
    @classmethod
    def _labels(cls, value: dict[str, Any]) -> dict[str, Any]:
        for label in value:
            if not label or "__" in label or not all(c.isalnum() or c in "-_" for c in label):
                raise ValueError(
                    f"label {label!r}: use letters, digits, '-' and '_' (no '__'; no '.', which "
                    "--set reads as a nesting level)"
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        for label in self.methods:
            if label == "zero-shot" or label.startswith("icl"):
                raise ValueError(f"methods.{label}: 'zero-shot' and 'icl*' name the baselines")
        for row in self.baselines.decoders:
            where = f"baselines.decoders.{row}"
            if row == "zero-shot" or row.startswith("icl") or row in self.methods:
                raise ValueError(f"{where}: the label names a baseline or a method already")
            self._labels({row: None})
        if len(self.lam.grid) > 1 and self.lam.heldout_per_user == 0:
            raise ValueError("lambda.heldout_per_user is 0: nothing to select lambda on")
        return self

    def method_options(self, label: str) -> tuple[str, str, dict[str, Any]]:
        """(registered method, decoder, reward-config dict) of method ``label``."""
        entry = dict(self.methods[label] or {})
        name = entry.pop("method", label)
        decoder = entry.pop("decoder", None) or _default_decoder(name)
        return name, decoder, {"backbone": self.reward.backbone, **self.reward.settings, **entry}


def _default_decoder(method: Any) -> str:
    """The method's ``default_decoder`` (args; an unknown method is reported by the checks)."""
    if not isinstance(method, str) or method not in METHODS:
        return "args"
    return METHODS.get(method).default_decoder


def merge(base: dict[str, Any], update: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Deep merge of ``update`` into a copy of ``base`` (a mapping replaces nothing but keys)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{where}.{key}" if where else key
        current = out.get(key)
        if isinstance(value, dict) and (current is None or isinstance(current, dict)):
            out[key] = merge(current or {}, value, path)
        elif isinstance(value, dict):
            raise ConfigError(f"--set {path}.*: {path} is {type(current).__name__}, not a mapping")
        else:
            out[key] = value
    return out


def parse_config(
    raw: dict[str, Any],
    *,
    overrides: list[str] | None = None,
    base_dir: str | Path = ".",
    source: str = "config",
    default_name: str = "run",
) -> RunConfig:
    """Validate a raw config mapping (after ``--set`` overrides); paths resolved from base_dir."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    raw = merge(raw, parse_overrides(overrides or []))
    raw.setdefault("name", default_name)
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None
    try:
        load_plugins(config.plugins)
        check_methods(config)
        check_baselines(config)
        metrics_settings(config)
        _check_selection_metric(config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return resolve_paths(config, Path(base_dir))


def metrics_settings(config: RunConfig) -> dict[str, MetricSettings]:
    """{metric key: its validated settings} of every registered metric (plugins loaded first):
    the config's ``metrics`` section, each entry checked by the metric's own settings class."""
    return metric_settings(config.metrics)


def _check_selection_metric(config: RunConfig) -> None:
    """report.selection_metric names a report column (plugins loaded first)."""
    try:
        selection_column(config.report.selection_metric)
    except ConfigError as exc:
        raise ConfigError(f"report.selection_metric: {exc}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read, override and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config not found: {path}")
    text = read_text(path)  # DataError naming the line of a byte that is not UTF-8
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{yaml_where(path, exc)}: not valid YAML ({yaml_problem(exc)})"
        ) from None
    return parse_config(
        raw,
        overrides=overrides,
        base_dir=path.resolve().parent,
        source=str(path),
        default_name=path.stem,
    )


def yaml_where(path: Path, exc: yaml.YAMLError) -> str:
    """``path:line`` of a YAML error (``path`` alone when the parser gives no position)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f"{path}:{mark.line + 1}" if mark is not None else str(path)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's problem in one line, without its multi-line source excerpt."""
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    text = "; ".join(p for p in parts if p) or str(exc)
    return " ".join(text.split())


def _resolve(value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    expanded = os.path.expanduser(os.path.expandvars(value))
    if "$" in expanded:
        raise ConfigError(f"unset environment variable in path {value!r}")
    return str((base / expanded).resolve())


def resolve_paths(config: RunConfig, base: Path) -> RunConfig:
    """Benchmark paths relative to ``base`` made absolute."""
    benchmarks = {
        label: bench.model_copy(
            update={
                key: _resolve(getattr(bench, key), base)
                for key in ("path", *PATH_FIELDS)
                if getattr(bench, key) is not None
            }
        )
        for label, bench in config.benchmarks.items()
    }
    return config.model_copy(update={"benchmarks": benchmarks})


def dump_config(config: RunConfig) -> dict[str, Any]:
    """The resolved config as plain JSON data (YAML key names, defaults filled in)."""
    return config.model_dump(mode="json", by_alias=True)


def config_hash(config: RunConfig) -> str:

    return hashlib.sha256(dumps(dump_config(config)).encode()).hexdigest()
