"""The jobs of a run: one model job per (benchmark, method, backbone, seed), one cell per
(benchmark, policy, method or baseline, seed), in an order where dependencies come first.

    jobs = make_plan(config, {"pref-acl": prepared})
    [j.id for j in jobs][:3]
    # ['pref-acl__global-rm__bundled-smollm2-135m-instruct__s0',
    #  'pref-acl__smol__zero-shot__s0', ...]
    jobs[2].needs       # a method cell needs its model and its zero-shot cell

A method cell chooses lambda only where its policy accuracy is an RGD score (``method_cell``):
a method that writes with its own policy (P-DPO, decoder ``p-dpo``) has ``lambda`` null, and a
method without RGD (``supports_rgd`` False: PAL) under ARGS neither generates nor chooses lambda
(its RM accuracy is still reported).

A job is plain data (``to_json``), so a Ray task gets exactly what the local backend gets. Its
``spec`` is everything that determines its result and nothing else (no paths, no times):
``spec_hash`` of it decides whether a finished job can be reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persalign.decoding import DECODERS, seed_free
from persalign.metrics import settings_json
from persalign.metrics.scoring import RGD_SCORERS, method_scorer
from persalign.rewards import METHODS
from persalign.runs.benchmark_builds import PreparedBenchmark
from persalign.runs.config import RunConfig, metrics_settings
from persalign.runs.config_checks import baseline_decoder, check_methods, decoder_settings
from persalign.runs.specs import (
    CellJobSpec,
    HeldoutSpec,
    JobRef,
    JobSpec,
    ModelJobSpec,
    PolicySpec,
    parse_spec,
    spec_hash,
)

ORACLE = "oracle"  # the reward method whose cell the others' ``captured`` metric reads


@dataclass(frozen=True)
class Job:
    """A model to train or a cell to evaluate."""

    id: str
    kind: str  # "model" | "cell"
    spec: JobSpec
    bench_path: str
    needs: tuple[str, ...] = ()
    gpus: float = 0.0
    threads: int | None = None  # torch CPU threads of the job process (not in the spec)
    plugins: tuple[str, ...] = ()  # modules to import first (config ``plugins``; not in the spec)
    verify: bool = True  # check the benchmark against its manifest (config ``verify``; not in spec)
    spec_hash: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec_hash", spec_hash(self.spec))

    def folder(self, run_dir: str | Path) -> Path:
        return Path(run_dir) / ("models" if self.kind == "model" else "cells") / self.id

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "spec": self.spec.to_json(),
            "bench_path": self.bench_path,
            "needs": list(self.needs),
            "gpus": self.gpus,
            "threads": self.threads,
            "plugins": list(self.plugins),
            "verify": self.verify,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Job:
        return cls(
            obj["id"],
            obj["kind"],
            parse_spec(obj["spec"]),
            obj["bench_path"],
            tuple(obj["needs"]),
            obj["gpus"],
            obj.get("threads"),
            tuple(obj.get("plugins", ())),
            obj.get("verify", True),
        )


def slug(spec: str) -> str:
    """A file-name-safe name for a model spec: hub ids and bundled names readable, local
    folders by their last component plus a short hash of the full path."""
    looks_local = spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1
    base = spec.rstrip("/").rsplit("/", 1)[-1] if looks_local else spec
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-") or "model"
    if looks_local:
        text += "-" + hashlib.sha256(spec.encode()).hexdigest()[:6]
    return text


def make_plan(config: RunConfig, benches: dict[str, PreparedBenchmark]) -> list[Job]:
    """Every job of the grid, dependencies first (per benchmark and seed: models, then per
    policy the baselines and the method cells)."""
    reward_configs = check_methods(config)
    jobs: list[Job] = []
    for label, bench in benches.items():
        once: dict[str, Job] = {}  # cell name -> the first seed's cell of a seed-free baseline
        for seed in config.seeds:
            models: dict[str, Job] = {}
            for method in config.methods:
                name, _, _ = config.method_options(method)
                spec = ModelJobSpec(
                    benchmark=label,
                    benchmark_hash=bench.hash,
                    method=method,
                    reward_method=name,
                    reward_config={**reward_configs[method], "seed": seed},
                    seed=seed,
                    heldout=HeldoutSpec(
                        per_user=config.lam.heldout_per_user, users=config.lam.heldout_users
                    ),
                )
                backbone = slug(spec.reward_config["backbone"])
                job_id = f"{label}__{method}__{backbone}__s{seed}"
                models[method] = Job(
                    job_id, "model", spec, str(bench.path), gpus=config.reward.gpus
                )
                jobs.append(models[method])
            for policy_name in config.policies:
                jobs += _policy_cells(config, label, bench, seed, policy_name, models, once)
    extra = {"threads": config.threads, "plugins": tuple(config.plugins), "verify": config.verify}
    return [dataclasses.replace(job, **extra) for job in jobs]


def _policy_cells(
    config: RunConfig,
    label: str,
    bench: PreparedBenchmark,
    seed: int,
    policy_name: str,
    models: dict[str, Job],
    once: dict[str, Job],
) -> list[Job]:
    """The baseline and method cells of one policy and seed. A baseline whose output cannot
    depend on the seed (greedy, and a decoder that draws nothing: zero-shot, ICL-RAG) is
    planned at the first seed only, kept in ``once``, and serves every seed (its cell id
    names the first seed); the method cells of later seeds read that zero-shot cell."""
    policy = config.policies[policy_name]
    common: dict[str, Any] = {
        "benchmark": label,
        "benchmark_hash": bench.hash,
        "policy": PolicySpec(
            **policy.model_dump(exclude={"scale"}), name=policy_name, scale=policy.label()
        ),
        "seed": seed,
        "generate": config.decoding.generate,
        "metrics": settings_json(metrics_settings(config)),
    }
    prefix = f"{label}__{policy_name}"
    path = str(bench.path)

    def cell(cell_id: str, needs: tuple[str, ...] = (), **fields: Any) -> Job:
        spec = CellJobSpec(**{**common, **fields})
        return Job(cell_id, "cell", spec, path, needs, policy.gpus)

    cells: list[Job] = []

    def baseline(name: str, decoder: str, settings: dict[str, Any], **fields: Any) -> Job:
        """The baseline's cell, planned once where its output is the same at every seed."""
        free = seed_free(decoder, settings)
        key = f"{prefix}__{name}"
        if free and key in once:
            return once[key]
        job = cell(
            f"{key}__s{seed}",
            kind="baseline",
            method=fields.pop("method", name),
            decoder=decoder,
            decoder_settings=settings,
            **fields,
        )
        cells.append(job)
        if free:
            once[key] = job
        return job

    zero_shot: Job | None = None
    if config.baselines.zero_shot:
        settings = decoder_settings(config, "zero-shot", seed)
        zero_shot = baseline("zero-shot", "zero-shot", settings)
    icl = config.baselines.model_dump(
        mode="json", include={"retrieval", "embedder", "max_prompt_tokens", "demonstrations"}
    )
    if config.baselines.max_text_tokens is not None:  # unset: earlier runs' specs unchanged
        icl["max_text_tokens"] = config.baselines.max_text_tokens
    for row in config.baselines.decoders:
        name, options = baseline_decoder(config, row)
        baseline(row, name, decoder_settings(config, name, seed, **options))
    for method in ("icl", "icl-rag"):
        for shots in getattr(config.baselines, method.replace("-", "_")):
            settings = decoder_settings(config, method, seed, shots=shots, **icl)
            baseline(f"{method}-{shots}", method, settings, method=method, shots=shots)
    zero_ref = JobRef(id=zero_shot.id, hash=zero_shot.spec_hash) if zero_shot else None
    oracle: Job | None = None  # the oracle's cell (sim benchmarks) comes first: others read it
    for method in sorted(models, key=lambda m: config.method_options(m)[0] != ORACLE):
        model = models[method]
        name, decoder, _ = config.method_options(method)
        needs = (model.id,) + ((zero_shot.id,) if zero_shot else ())
        needs += (oracle.id,) if oracle else ()
        generate, lam = method_cell(config, name, decoder)
        job = cell(
            f"{prefix}__{method}__s{seed}",
            needs,
            kind="method",
            method=method,
            reward_method=name,
            decoder=decoder,
            decoder_settings=decoder_settings(config, decoder, seed),
            model=JobRef(id=model.id, hash=model.spec_hash),
            zero_shot=zero_ref,
            oracle=JobRef(id=oracle.id, hash=oracle.spec_hash) if oracle else None,
            lam=config.lam if lam else None,
            generate=generate,
        )
        cells.append(job)
        if name == ORACLE and oracle is None and generate:
            oracle = job
    return cells


def method_cell(config: RunConfig, method: str, decoder: str) -> tuple[bool, bool]:
    """(generate, choose lambda) of a method cell, from the method's and decoder's attributes.

    An RGD decoder (the base policy writes, the reward model guides: ARGS) needs a method that
    supports RGD; the cell chooses lambda when its policy accuracy is an RGD score.
    """
    reward_class, decoder_class = METHODS.get(method), DECODERS.get(decoder)
    guided = decoder_class.needs_policy
    runs = reward_class.supports_rgd or not guided
    score = metrics_settings(config)["policy_accuracy"].personalized_policy_score
    scorer = method_scorer(reward_class, decoder_class, score)
    choose = scorer in RGD_SCORERS or (runs and decoder_class.takes("lam"))
    return config.decoding.generate and runs, choose
