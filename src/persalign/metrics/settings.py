"""A metric's options: the base classes of every ``CellMetric.settings_class``.

    class WinRateSettings(MetricSettings):
        ties: Literal["loss", "half"] = Field("loss", description="What a tie counts as.")

    WinRateSettings(ties="half").enabled        # True: every metric can be switched off
    ScoringSettings().batch_size                 # 8: metrics that score texts with a model

A run config sets them under ``metrics.<key>`` (``persalign.metrics.base.metric_settings``);
``SHARED_OPTIONS`` given at the top of the section are the default of every metric that declares
them. Unknown keys are rejected; every field has a description (``persalign ls metrics``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MetricSettings(BaseModel):
    """A metric's options (``metrics.<key>`` in a run config). Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Compute this metric for the cells it applies to.")


class ScoringSettings(MetricSettings):
    """Options of a metric that scores texts with a model in batches."""

    batch_size: int = Field(
        8,
        ge=1,
        description="Sequences per scoring pass (metrics.batch_size sets it for every metric).",
    )


# options given at the top of the metrics section: the default of every metric that declares them
SHARED_OPTIONS = ("batch_size",)
