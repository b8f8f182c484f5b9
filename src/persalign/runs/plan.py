"""The jobs of a run: one model job per (benchmark, method, backbone, seed), one cell per
(benchmark, policy, method or baseline, seed), in an order where dependencies come first.

    jobs = make_plan(config, {"pref-acl": prepared})
    [j.id for j in jobs][:3]
    # ['pref-acl__global-rm__bundled-smollm2-135m-instruct__s0', 'pref-acl__smol__zero-shot__s0', ...]
    jobs[2].needs       # a method cell needs its model and its zero-shot cell

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

from persalign.io import dumps
from persalign.runs.benchmark_builds import PreparedBenchmark
from persalign.runs.config import RunConfig, check_methods

BASELINE_METHODS = ("zero-shot", "icl", "icl-rag")


@dataclass(frozen=True)
class Job:
    """A model to train or a cell to evaluate."""

    id: str
    kind: str  # "model" | "cell"
    spec: dict[str, Any]
    bench_path: str
    needs: tuple[str, ...] = ()
    gpus: float = 0.0
    threads: int | None = None  # torch CPU threads of the job process (not in the spec)
    spec_hash: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(dumps(self.spec).encode()).hexdigest()
        object.__setattr__(self, "spec_hash", digest)

    def folder(self, run_dir: str | Path) -> Path:
        return Path(run_dir) / ("models" if self.kind == "model" else "cells") / self.id

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "spec": self.spec,
            "bench_path": self.bench_path,
            "needs": list(self.needs),
            "gpus": self.gpus,
            "threads": self.threads,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Job:
        return cls(
            obj["id"],
            obj["kind"],
            obj["spec"],
            obj["bench_path"],
            tuple(obj["needs"]),
            obj["gpus"],
            obj.get("threads"),
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
        bench_ref = {"benchmark": label, "benchmark_hash": bench.hash}
        for seed in config.seeds:
            models: dict[str, Job] = {}
            for method in config.methods:
                name, _, _ = config.method_options(method)
                reward_config = {**reward_configs[method], "seed": seed}
                spec = {
                    **bench_ref,
                    "kind": "model",
                    "method": method,
                    "reward_method": name,
                    "reward_config": reward_config,
                    "seed": seed,
                    "heldout": _heldout(config),
                }
                job_id = f"{label}__{method}__{slug(reward_config['backbone'])}__s{seed}"
                models[method] = Job(
                    job_id, "model", spec, str(bench.path), gpus=config.reward.gpus
                )
                jobs.append(models[method])
            for policy_name in config.policies:
                jobs += _policy_cells(config, label, bench, bench_ref, seed, policy_name, models)
    if config.threads is not None:
        jobs = [dataclasses.replace(job, threads=config.threads) for job in jobs]
    return jobs


def _heldout(config: RunConfig) -> dict[str, Any]:
    return {"per_user": config.lam.heldout_per_user, "users": config.lam.heldout_users}


def _policy_cells(
    config: RunConfig,
    label: str,
    bench: PreparedBenchmark,
    bench_ref: dict[str, Any],
    seed: int,
    policy_name: str,
    models: dict[str, Job],
) -> list[Job]:
    policy = config.policies[policy_name]
    decoding = config.decoding.model_dump(mode="json")
    common = {
        **bench_ref,
        "kind": "baseline",
        "policy": {"name": policy_name, **policy.model_dump(mode="json"), "scale": policy.label()},
        "seed": seed,
        "decoding": {k: v for k, v in decoding.items() if k != "k"},
        "metrics": config.metrics.model_dump(mode="json"),
    }
    prefix = f"{label}__{policy_name}"
    cells: list[Job] = []
    zero_shot: Job | None = None
    if config.baselines.zero_shot:
        spec = {**common, "method": "zero-shot", "shots": None}
        zero_shot = Job(
            f"{prefix}__zero-shot__s{seed}", "cell", spec, str(bench.path), (), policy.gpus
        )
        cells.append(zero_shot)
    icl = config.baselines.model_dump(
        mode="json", include={"retrieval", "embedder", "max_prompt_tokens"}
    )
    for method in ("icl", "icl-rag"):
        for shots in getattr(config.baselines, method.replace("-", "_")):
            spec = {**common, "method": method, "shots": shots, "icl": icl}
            if method == "icl":
                spec["icl"] = {"max_prompt_tokens": icl["max_prompt_tokens"]}
            cell_id = f"{prefix}__{method}-{shots}__s{seed}"
            cells.append(Job(cell_id, "cell", spec, str(bench.path), (), policy.gpus))
    for method, model in models.items():
        name, decoder, _ = config.method_options(method)
        spec = {
            **common,
            "kind": "method",
            "decoding": decoding,
            "method": method,
            "reward_method": name,
            "decoder": decoder,
            "shots": None,
            "model": {"id": model.id, "hash": model.spec_hash},
            "zero_shot": {"id": zero_shot.id, "hash": zero_shot.spec_hash} if zero_shot else None,
            "lambda": config.lam.model_dump(mode="json"),
        }
        needs = (model.id,) + ((zero_shot.id,) if zero_shot else ())
        cells.append(
            Job(f"{prefix}__{method}__s{seed}", "cell", spec, str(bench.path), needs, policy.gpus)
        )
    return cells
