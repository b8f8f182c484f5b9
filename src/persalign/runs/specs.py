"""Typed, frozen run specs: everything that determines a job's result, and nothing else.

    spec = ModelJobSpec(benchmark="pref-acl", benchmark_hash="...", method="lore",
                        reward_method="lore", reward_config={...}, seed=0,
                        heldout=HeldoutSpec(per_user=1, users=3))
    spec.to_json()                 # plain JSON data (what a Ray task receives, what is hashed)
    parse_spec(spec.to_json())     # back to the typed spec (by its ``kind``)
    spec_hash(spec)                # sha256 of the JSON: decides whether a finished job is reused

A benchmark built by a run has a ``BenchmarkBuildSpec`` (its builder and ``BuildOptions``).
Each option is declared once, in the component that owns it: a model job carries its method's
own validated config (``RewardConfig`` subclass), a cell its decoder's validated settings (the
decoder's ``settings_class``, lambda excepted: each cell chooses it), its policy
(``PolicyConfig``), every metric's validated settings (each metric's ``settings_class``, from
the config's ``metrics`` section) and lambda selection (``LambdaConfig``).
No paths and no times: a spec is the same on every machine.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from persalign.data.registry import BuildFields, BuildOptions
from persalign.io import dumps
from persalign.runs.sections import LambdaConfig, PolicyConfig


class Spec(BaseModel):
    """Frozen; unknown keys are errors; serialises to plain JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class BenchmarkBuildSpec(BuildFields):
    """A benchmark built by a run: its builder and every build option (``run_build.json``)."""

    dataset: str = Field(description="Registered builder (persalign ls datasets).")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def options(self) -> BuildOptions:
        return BuildOptions(**self.model_dump(exclude={"dataset"}))


class JobRef(Spec):
    """Another job this one reads the results of: its id and spec hash."""

    id: str = Field(description="The job's id (its folder name).")
    hash: str = Field(description="The spec hash its finished files must record.")


class HeldoutSpec(Spec):
    """Train users' items held out of training to choose lambda on (appendix F.2)."""

    per_user: int = Field(ge=0, description="Held-out items per train user (0: none).")
    users: int | None = Field(None, ge=1, description="At most this many train users (seeded).")


class ModelJobSpec(Spec):
    """Train one reward model on a benchmark's train users and adapt it to the others."""

    kind: Literal["model"] = "model"
    benchmark: str = Field(description="Benchmark label in the config.")
    benchmark_hash: str = Field(description="sha256 of the benchmark's data files.")
    method: str = Field(description="Method label in the config.")
    reward_method: str = Field(description="Registered reward method (persalign ls methods).")
    reward_config: dict[str, Any] = Field(
        description="The method's config, validated by its config_class (seed included)."
    )
    seed: int = Field(description="Seed of training and adaptation.")
    heldout: HeldoutSpec = Field(description="Items held out for lambda selection.")


class PolicySpec(PolicyConfig):
    """A cell's policy: its config entry, its name and its resolved scale label."""

    name: str = Field(description="Policy name in the config.")
    scale: str = Field(description="Scale label in tables (resolved).")


class CellJobSpec(Spec):
    """One (benchmark, policy, row, seed): a baseline decoder or a reward method's decoder."""

    kind: Literal["baseline", "method"] = Field(description="baseline or reward method.")
    benchmark: str = Field(description="Benchmark label in the config.")
    benchmark_hash: str = Field(description="sha256 of the benchmark's data files.")
    policy: PolicySpec = Field(description="The base policy.")
    seed: int = Field(description="Seed of decoding and demonstrations.")
    method: str = Field(description="Row: a method label, or zero-shot / icl / icl-rag.")
    shots: int | None = Field(None, description="Demonstrations (ICL rows).")
    decoder: str = Field(description="Registered decoder (persalign ls decoders).")
    decoder_settings: dict[str, Any] = Field(
        description="The decoder's validated settings, lambda excepted (chosen per cell)."
    )
    generate: bool = Field(True, description="Generate (off: ranking metrics only).")
    metrics: dict[str, dict[str, Any]] = Field(
        description="Every metric's validated settings by key (defaults filled in)."
    )
    reward_method: str | None = Field(None, description="Method cells: the registered method.")
    model: JobRef | None = Field(None, description="Method cells: the trained reward model.")
    zero_shot: JobRef | None = Field(None, description="The zero-shot cell (win rate, base acc).")
    oracle: JobRef | None = Field(
        None, description="Method cells of a run with the oracle method: its cell (captured)."
    )
    lam: LambdaConfig | None = Field(
        None, alias="lambda", description="Method cells: lambda selection."
    )

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if out.get("oracle") is None:  # runs without an oracle keep their spec hashes
            out.pop("oracle", None)
        return out


JobSpec = ModelJobSpec | CellJobSpec


def parse_spec(data: dict[str, Any]) -> JobSpec:
    """The typed spec of JSON data (a model job's or a cell's, by ``kind``)."""
    if data.get("kind") == "model":
        return ModelJobSpec.model_validate(data)
    return CellJobSpec.model_validate(data)


def spec_hash(spec: JobSpec) -> str:
    """sha256 of the spec's canonical JSON (sorted keys)."""
    return hashlib.sha256(dumps(spec.to_json()).encode()).hexdigest()
