"""What one cell does: a baseline decoder (zero-shot, ICL, ICL-RAG) or a reward method's decoder
(ARGS), for one (benchmark, policy, seed), written to ``cells/<id>/`` with ``metrics.json`` last.

    run_cell_job("runs/demo", job.to_json())
    # {'id': 'pref-acl__smol__lore__s0', 'hash': '...', 'reused': False}

A method cell whose spec carries lambda settings (an RGD cell; see ``plan.method_cell``) first
chooses lambda on the train users' held-out items (appendix F.2); its decoder gets it when it
takes one. Other method cells (P-DPO's own policy, PAL without RGD) have lambda null. Then
every cell that generates (``spec.generate``; not PAL under ARGS) writes for the query prompts
with its decoder (resumable) and hands the rest to the metric plugins
(``persalign.metrics.compute_cell_metrics``): each registered metric that applies to the cell
writes its key. No cell asks which decoder or which metric it is running.
Wall-clock time goes only to ``seconds`` and ``cost`` (training and adaptation time of its
model, decoding time, forward passes per generated token and peak memory, measured by
``persalign.runs.cost``); every other field is deterministic.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from persalign.decoding import DECODERS, GenerationRequest, create_decoder
from persalign.io import read_json, write_json
from persalign.metrics import METRICS, CellContext, ZeroShot, compute_cell_metrics
from persalign.metrics.schema import METRICS_FILE
from persalign.rewards import RewardModel
from persalign.rewards.engine.sequence_memo import remember_sequences
from persalign.runs import workspace
from persalign.runs.cost import CostMeter, current_clock, model_costs
from persalign.runs.lambda_selection import select_lambda, split_train_heldout
from persalign.runs.plan import Job
from persalign.runs.specs import CellJobSpec, JobRef
from persalign.runs.workspace import GENERATIONS, PARTIAL, job_log
from persalign.types import Benchmark

log = logging.getLogger(__name__)
MODEL_RESULTS = ("rm_accuracy", "prefix_accuracy")  # files a model job writes for the metrics


def cell_finished(folder: Path, spec_hash: str) -> bool:
    return workspace.marker_matches(folder / METRICS_FILE, "spec_hash", spec_hash)


def run_cell_job(run_dir: str | Path, job_json: dict[str, Any], force: bool = False) -> dict:
    """Run one cell (skipped when finished with the same spec, unless force)."""
    job = Job.from_json(job_json)
    folder = job.folder(run_dir)
    if not force and cell_finished(folder, job.spec_hash):
        return {"id": job.id, "hash": job.spec_hash, "reused": True}
    _reset(folder, job, force)
    spec: CellJobSpec = job.spec
    started = time.perf_counter()
    meter = CostMeter()
    meter.clock = current_clock()  # the job's start / compute split (backends.run_job)
    with job_log(folder / "log.txt"), meter.peak_memory():
        log.info("cell %s", job.id)
        torch.manual_seed(spec.seed)
        result = evaluate_cell(Path(run_dir), job, folder, meter)
    metrics = {
        "cell": job.id,
        "kind": spec.kind,
        "benchmark": spec.benchmark,
        "policy": spec.policy.name,
        "scale": spec.policy.scale,
        "scale_params": spec.policy.params_m,
        "seed": spec.seed,
        "method": spec.method,
        "shots": spec.shots,
        "personalized": None,
        "lambda": None,
        "lambda_curve": None,
        **dict.fromkeys(METRICS.names()),
        **result,
        "spec_hash": job.spec_hash,
        "seconds": round(time.perf_counter() - started, 2),
        "cost": meter.cost(),
    }
    write_json(folder / METRICS_FILE, _clean(metrics))
    return {"id": job.id, "hash": job.spec_hash, "reused": False}


def _reset(folder: Path, job: Job, force: bool) -> None:
    """Start a cell: outputs of another spec (or all, with force) are removed."""
    spec_path = folder / "spec.json"
    same = spec_path.is_file() and read_json(spec_path).get("hash") == job.spec_hash
    if folder.exists() and (force or not same):
        for name in (METRICS_FILE, GENERATIONS, PARTIAL, "log.txt"):
            (folder / name).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    if not same:
        write_json(spec_path, {"id": job.id, "hash": job.spec_hash, "spec": job.spec.to_json()})


def _clean(value: Any) -> Any:
    """NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _requests(bench: Benchmark) -> list[GenerationRequest]:
    return [GenerationRequest(q.id, q.user, q.prompt) for q in bench.query]


def _support(bench: Benchmark) -> dict[str, list]:
    return {u.user: list(u.support) for u in bench.adapt_users()}


def choose_lambda(
    spec: CellJobSpec, bench: Benchmark, policy, rm: RewardModel
) -> tuple[float, dict | None]:
    """(lam, its selection curve): the one grid value (no curve), or the best on held-out train
    items."""
    lam = spec.lam
    if len(lam.grid) == 1:
        return float(lam.grid[0]), None
    _, heldout = split_train_heldout(bench, lam.heldout_per_user, lam.heldout_users, spec.seed)
    selection = select_lambda(
        policy,
        rm,
        heldout,
        lam.grid,
        objective=lam.objective,
        decode_settings=dict(spec.decoder_settings),  # the cell's decoder settings, seed included
        batch_size=int(spec.metrics["policy_accuracy"]["batch_size"]),  # it scores the grid
        progress=False,
    )
    return selection["lam"], selection["curve"]


def _zero_shot(run_dir: Path, spec: CellJobSpec) -> ZeroShot | None:
    """The finished zero-shot cell a method cell compares with (None when the run has none)."""
    return _finished_cell(run_dir, spec.zero_shot, "zero-shot")


def _finished_cell(run_dir: Path, ref: JobRef | None, what: str) -> ZeroShot | None:
    """A finished cell's metrics and generations (the zero-shot or the oracle cell)."""
    if ref is None:
        return None
    folder = run_dir / "cells" / ref.id
    if not cell_finished(folder, ref.hash):
        raise RuntimeError(f"the {what} cell {ref.id} has not finished")
    gens = folder / GENERATIONS
    return ZeroShot(
        read_json(folder / METRICS_FILE),
        workspace.read_generations(gens) if gens.is_file() else None,
    )


def evaluate_cell(
    run_dir: Path, job: Job, folder: Path, meter: CostMeter | None = None
) -> dict[str, Any]:
    """Lambda (when the decoder takes one), generations, then every metric plugin that applies.

    ``meter`` times and counts the generation and keeps the generations and the model job's
    times for ``CostMeter.cost``.
    """
    meter = meter or CostMeter()
    spec: CellJobSpec = job.spec
    bench = workspace.benchmark(job.bench_path, verify=job.verify)
    policy = workspace.policy_for(spec.policy)
    decoder_class = DECODERS.get(spec.decoder)
    out: dict[str, Any] = {}
    rm, model_results, model_dir = None, {}, None
    if spec.model is not None:
        model_dir = run_dir / "models" / spec.model.id
        rm = workspace.reward_model(model_dir, spec.model.hash)
        rm.use_benchmark(bench)  # the oracle reads the simulated users' true reward
        remember_sequences(rm)  # frozen from here: metrics scoring one text again read it back
        out["personalized"] = bool(rm.personalized)
        for name in MODEL_RESULTS:
            if (model_dir / f"{name}.json").is_file():
                model_results[name] = read_json(model_dir / f"{name}.json")
    settings = dict(spec.decoder_settings)
    lam = None
    if rm is not None and spec.lam is not None:  # the RGD scorer of policy accuracy uses it too
        lam, curve = choose_lambda(spec, bench, policy, rm)
        out["lambda"] = lam  # the metrics.json column
        if curve is not None:
            out["lambda_curve"] = curve
        if decoder_class.takes("lam"):
            settings["lam"] = lam
    gens = None
    if spec.generate:
        decoder = create_decoder(
            spec.decoder, policy, reward_model=rm, support=_support(bench), **settings
        )
        # the model that writes: the base policy, or the method's own (P-DPO)
        writer = policy if decoder_class.needs_policy else getattr(rm, "backbone", None)
        guide = getattr(rm, "backbone", None) if decoder_class.needs_policy else None
        with meter.counting(decoder, writer=writer, reward=guide):
            gens = workspace.generate_resumable(
                decoder,
                _requests(bench),
                folder,
                decoder.settings.batch_size,
                f"{spec.decoder} {job.id}",
            )
        if hasattr(decoder, "demonstration_fit"):  # ICL, ICL-RAG: the demonstrations shown
            out["demonstrations"] = decoder.demonstration_fit(_requests(bench))
    ctx = CellContext(
        kind=spec.kind,
        method=spec.method,
        decoder=spec.decoder,
        seed=spec.seed,
        settings=dict(spec.metrics),
        benchmark=bench,
        policy=policy,
        reward_model=rm,
        lam=lam,
        shots=spec.shots,
        icl=dict(spec.decoder_settings) if decoder_class.needs_support else None,
        generations=gens,
        zero_shot=_zero_shot(run_dir, spec) if spec.kind == "method" else None,
        oracle=_finished_cell(run_dir, spec.oracle, "oracle"),
        model_results=model_results,
    )
    out.update(compute_cell_metrics(ctx))
    meter.generations, meter.models = gens, model_costs(model_dir)
    return out
