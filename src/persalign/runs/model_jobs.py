"""A model job: train one reward model per (benchmark, method, backbone, seed), shared by every
policy's cells.

    run_model_job("runs/demo", job.to_json())
    # {'id': 'pref-acl__lore__bundled-smollm2-135m-instruct__s0', 'hash': '...', 'reused': False}

Fit on the train users' preferences (minus the items held out for choosing lambda), adapt every
adaptation user from their support set (sorted by user), save, and measure RM accuracy (Eq. 2)
and prefix accuracy on the adaptation users' query preferences, both from one prefix-reward pass
(``rm_accuracy.json``, ``prefix_accuracy.json``; not for a method with ``has_rm_accuracy``
False, P-DPO). ``run_model.json`` records the wall-clock ``train_seconds`` (the fit, model
loading aside) and ``adapt_seconds`` over ``adapt_users`` (the cells' ``cost``), and the job's
``start_seconds`` / ``compute_seconds`` / ``start_share`` (``cost.JobClock``). Everything is
written to a temporary folder that is renamed into ``models/<id>/`` when complete: a
half-trained model is never reused. The folder's ``run_model.json`` (written last) records the
job's spec hash; a folder with another hash is retrained.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from persalign.errors import validated
from persalign.io import write_json
from persalign.metrics.prefix_accuracy import accuracies
from persalign.rewards import METHODS, RewardModel
from persalign.runs.cost import current_clock, starting
from persalign.runs.lambda_selection import split_train_heldout
from persalign.runs.plan import Job
from persalign.runs.specs import ModelJobSpec
from persalign.runs.workspace import (
    MODEL_MARKER,
    benchmark,
    frozen_backbone,
    job_log,
    marker_matches,
)
from persalign.types import Benchmark

log = logging.getLogger(__name__)


def model_finished(folder: Path, spec_hash: str) -> bool:
    return marker_matches(folder / MODEL_MARKER, "hash", spec_hash)


def heldout_split(bench: Benchmark, spec: ModelJobSpec) -> tuple[list, list]:
    """(preferences to fit on, held-out train-user preferences) of a model spec."""
    per_user, users = spec.heldout.per_user, spec.heldout.users
    if per_user < 1:
        return list(bench.train), []
    return split_train_heldout(bench, per_user=per_user, max_users=users, seed=spec.seed)


def build_reward_model(method: str, settings: dict[str, Any]) -> RewardModel:
    """A fresh reward model (its load counted as starting time); a frozen-mode model gets the
    process's shared adapter-free backbone (``workspace.frozen_backbone``)."""
    cls = METHODS.get(method)
    config = validated(cls.config_class, settings, head=f"invalid config for {method}")
    if config.backbone_training == "frozen" and cls.reads_hidden_states:
        backbone = frozen_backbone(config)
        with starting():
            return cls(config, backbone)
    with starting():
        return cls(config)


def run_model_job(run_dir: str | Path, job_json: dict[str, Any], force: bool = False) -> dict:
    """Train, adapt, save and score one reward model (skipped when finished, unless force)."""
    job = Job.from_json(job_json)
    folder = job.folder(run_dir)
    if not force and model_finished(folder, job.spec_hash):
        return {"id": job.id, "hash": job.spec_hash, "reused": True}
    spec = job.spec
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{job.id}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = folder.parent / f".{job.id}.tmp-{os.getpid()}"
    tmp.mkdir()
    started = time.perf_counter()
    with job_log(tmp / "log.txt"):
        log.info("training %s", job.id)
        bench = benchmark(job.bench_path, verify=job.verify)
        train, heldout = heldout_split(bench, spec)
        torch.manual_seed(spec.seed)
        rm = build_reward_model(spec.reward_method, spec.reward_config)
        rm.use_benchmark(bench)  # the oracle reads the simulated users' true reward
        fit_started = time.perf_counter()  # model loading aside
        history = rm.fit(train, log_path=tmp / "train_log.jsonl")
        adapt_started = time.perf_counter()
        train_seconds = adapt_started - fit_started
        adapt_users = bench.adapt_users()
        for user in adapt_users:
            rm.adapt(user.user, user.support)
        adapt_seconds = time.perf_counter() - adapt_started
        rm.save(str(tmp))
        seconds = time.perf_counter() - started
        if rm.has_rm_accuracy:
            accuracy, prefix = accuracies(rm, bench.query)
            write_json(tmp / "rm_accuracy.json", accuracy)
            write_json(tmp / "prefix_accuracy.json", prefix)
            seconds = time.perf_counter() - started
            shown = "no pairs" if accuracy["mean"] is None else f"{accuracy['mean']:.4f}"
            log.info("trained %s in %.1f s; RM accuracy %s", job.id, seconds, shown)
        else:
            log.info("trained %s in %.1f s (%s: no RM accuracy)", job.id, seconds, rm.name)
    write_json(
        tmp / MODEL_MARKER,
        {
            "id": job.id,
            "hash": job.spec_hash,
            "spec": spec.to_json(),
            "train_pairs": len(train),
            "heldout_pairs": len(heldout),
            "steps": len(history),
            "final_loss": history[-1]["loss"] if history else None,
            "seconds": round(seconds, 2),
            "train_seconds": round(train_seconds, 2),
            "adapt_seconds": round(adapt_seconds, 3),
            "adapt_users": len(adapt_users),
            **(clock.record() if (clock := current_clock()) else {}),
        },
    )
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    del rm
    return {"id": job.id, "hash": job.spec_hash, "reused": False}
