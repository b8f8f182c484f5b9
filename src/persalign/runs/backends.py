"""Where jobs run: ``local`` (in this process, in plan order) or ``ray`` (every job a Ray task
with its resources, model jobs before the cells that need them).

    outcome = LocalBackend().execute(jobs, Path("runs/demo"), force=False)
    outcome = RayBackend(address="auto").execute(jobs, Path("runs/demo"), force=False)
    outcome.failed          # {job id: "ErrorType: message"}

Both skip finished jobs (same spec hash) unless ``force``. A job whose dependency failed is not
run (``blocked``). Ray tasks get plain data only (the run folder, the job as JSON); results are
files in the run folder, which therefore must be on storage every node can see. Each job runs
under a ``cost.JobClock`` (starting vs computing seconds); loaded models stay in the process
between jobs (``workspace.MODELS``), the local process or a reused Ray worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from persalign.errors import ConfigError
from persalign.registry import load_plugins
from persalign.runs.cells import cell_finished, run_cell_job
from persalign.runs.cost import job_clock, starting
from persalign.runs.model_jobs import model_finished, run_model_job
from persalign.runs.plan import Job

log = logging.getLogger(__name__)
BACKENDS = ("local", "ray")


@dataclass
class Outcome:
    """What happened to the jobs of a run."""

    done: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)


def run_job(
    run_dir: str | Path, job_json: dict[str, Any], force: bool = False, worker: bool = False
) -> dict:
    """Run one job given as plain data (what a Ray task receives, ``worker`` True: its first
    job counts the worker's start); its starting and computing seconds go to ``cost.JobClock``."""
    previous = torch.get_num_threads()
    with job_clock(worker):
        with starting():
            load_plugins(job_json.get("plugins", ()))  # a Ray worker has not imported them yet
        if job_json.get("threads"):
            torch.set_num_threads(job_json["threads"])
        try:
            if job_json["kind"] == "model":
                return run_model_job(run_dir, job_json, force)

            return run_cell_job(run_dir, job_json, force)
        finally:
            torch.set_num_threads(previous)


def job_finished(run_dir: Path, job: Job) -> bool:
    if job.kind == "model":
        return model_finished(job.folder(run_dir), job.spec_hash)

    return cell_finished(job.folder(run_dir), job.spec_hash)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:500]


class LocalBackend:
    """Every job in this process, one after the other, in plan order."""

    name = "local"

    def execute(self, jobs: list[Job], run_dir: Path, force: bool = False) -> Outcome:
        outcome = Outcome()
        bad: set[str] = set()
        total = len(jobs)
        for index, job in enumerate(jobs, start=1):
            if bad.intersection(job.needs):
                outcome.blocked.append(job.id)
                bad.add(job.id)
                log.warning("[%d/%d] %s skipped: a job it needs failed", index, total, job.id)
                continue
            if not force and job_finished(run_dir, job):
                outcome.reused.append(job.id)
                log.info("[%d/%d] %s already finished", index, total, job.id)
                continue
            log.info("[%d/%d] %s ...", index, total, job.id)
            started = time.perf_counter()
            try:
                run_job(run_dir, job.to_json(), force)
            except Exception as exc:
                log.exception("[%d/%d] %s failed", index, total, job.id)
                outcome.failed[job.id] = _describe(exc)
                bad.add(job.id)
                continue
            outcome.done.append(job.id)
            seconds = time.perf_counter() - started
            log.info("[%d/%d] %s done in %.1f s", index, total, job.id, seconds)
        return outcome


def _ray_job(run_dir: str, job_json: dict[str, Any], force: bool, *needs: Any) -> dict:
    """A Ray task: ``needs`` are the results of the jobs it depends on (only waited for)."""
    return run_job(run_dir, job_json, force, worker=True)


def expected_long(job: Job) -> bool:
    """A model job that trains its backbone (LoRA: GenARM, P-DPO, any method not frozen), the
    longest jobs of a run: they and the cells waiting on them decide when it ends."""
    if job.kind != "model":
        return False
    config = getattr(job.spec, "reward_config", None) or {}
    return config.get("backbone_training", "lora") != "frozen"


def submission_order(jobs: list[Job]) -> list[Job]:
    """Ray starts ready tasks in about the order they are submitted: the model jobs that train
    a backbone first, then the other model jobs, then the cells of the first (their reward model
    is scored through the backbone: a GenARM or P-DPO cell takes 3 to 4 frozen cells' time),
    then the other cells, each group in plan order. Longest first keeps a worker from idling at
    the end while the last long cell runs alone. A job a long cell needs (the zero-shot and
    oracle cells it reads) moves up with it; the plan lists every job after the jobs it needs,
    so each job is still submitted after them."""
    long_models = {job.id for job in jobs if expected_long(job)}

    def group(job: Job) -> int:
        if job.kind == "model":
            return 0 if job.id in long_models else 1
        return 2 if long_models & set(job.needs) else 3

    rank = {job.id: group(job) for job in jobs}
    for job in reversed(jobs):  # dependents first: a need takes the earliest group of its users
        for need in job.needs:
            if need in rank:
                rank[need] = min(rank[need], rank[job.id])
    return sorted(jobs, key=lambda job: rank[job.id])  # stable: plan order within a group


class RayBackend:
    """Every job a Ray task (``num_gpus`` from the config); dependencies as object refs."""

    name = "ray"

    def __init__(self, address: str | None = None, **init_kwargs: Any):
        self.address = address
        self.init_kwargs = init_kwargs

    def execute(self, jobs: list[Job], run_dir: Path, force: bool = False) -> Outcome:
        import ray  # heavy and optional: only for --backend ray

        if not ray.is_initialized():
            ray.init(
                address=self.address,
                include_dashboard=False,
                ignore_reinit_error=True,
                **self.init_kwargs,
            )
        log.info("ray cluster resources: %s", ray.cluster_resources())
        # max_calls=0: workers live on between tasks (Ray's default ends a GPU task's worker),
        # so the models they loaded stay in workspace.MODELS for the next job
        task = ray.remote(max_retries=0, max_calls=0)(_ray_job)
        outcome = Outcome()
        refs: dict[str, Any] = {}
        for job in submission_order(jobs):
            if not force and job_finished(run_dir, job):
                outcome.reused.append(job.id)
                continue
            needs = [refs[n] for n in job.needs if n in refs]
            options = {"num_gpus": job.gpus, "num_cpus": 1, "name": job.id}
            refs[job.id] = task.options(**options).remote(
                str(run_dir.resolve()), job.to_json(), force, *needs
            )
        log.info("%d jobs submitted to ray (%d already finished)", len(refs), len(outcome.reused))
        names = {ref: job_id for job_id, ref in refs.items()}
        pending = list(refs.values())
        needs_of = {job.id: set(job.needs) for job in jobs}
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                job_id = names[ref]
                try:
                    ray.get(ref)
                except Exception as exc:
                    if needs_of[job_id] & (set(outcome.failed) | set(outcome.blocked)):
                        outcome.blocked.append(job_id)
                    else:
                        outcome.failed[job_id] = _describe(getattr(exc, "cause", None) or exc)
                        log.error("%s failed: %s", job_id, outcome.failed[job_id])
                    continue
                outcome.done.append(job_id)
                finished = len(outcome.done) + len(outcome.failed) + len(outcome.blocked)
                log.info("[%d/%d] %s done", finished, len(refs), job_id)
        return outcome


def make_backend(name: str, address: str | None = None, **init_kwargs: Any):
    if name == "local":
        if address is not None:
            raise ConfigError("--address is for the ray backend")
        return LocalBackend()
    if name == "ray":
        return RayBackend(address, **init_kwargs)
    raise ConfigError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
