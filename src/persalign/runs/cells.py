"""What one cell does: a baseline (zero-shot, ICL, ICL-RAG) or a reward method under ARGS, for
one (benchmark, policy, seed), written to ``cells/<id>/`` with ``metrics.json`` last.

    run_cell_job("runs/demo", job.to_json())
    # {'id': 'pref-acl__smol__lore__s0', 'hash': '...', 'reused': False}

Method cell: choose lambda on the train users' held-out items (appendix F.2), read the model's
RM accuracy, policy accuracy with the personal (or, for a global model, the global) RGD scorer,
the base scorer's accuracy (from the zero-shot cell), ARGS generations for the query prompts at
the chosen lambda, behavioural alignment against the users' completions, win rate against the
zero-shot generations, perplexity. Baseline cell: generations, behavioural alignment,
perplexity, and policy accuracy with the base (zero-shot) or ICL scorer (same demonstrations as
generation). Wall-clock time goes only to ``seconds``; every other field is deterministic.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from persalign.io import read_json, write_json
from persalign.runs import workspace
from persalign.runs.plan import Job
from persalign.runs.workspace import GENERATIONS, PARTIAL, job_log

log = logging.getLogger(__name__)
METRICS = "metrics.json"


def cell_finished(folder: Path, spec_hash: str) -> bool:
    return workspace.marker_matches(folder / METRICS, "spec_hash", spec_hash)


def run_cell_job(run_dir: str | Path, job_json: dict[str, Any], force: bool = False) -> dict:
    """Run one cell (skipped when finished with the same spec, unless force)."""
    import torch

    job = Job.from_json(job_json)
    folder = job.folder(run_dir)
    if not force and cell_finished(folder, job.spec_hash):
        return {"id": job.id, "hash": job.spec_hash, "reused": True}
    _reset(folder, job, force)
    spec = job.spec
    started = time.perf_counter()
    with job_log(folder / "log.txt"):
        log.info("cell %s", job.id)
        torch.manual_seed(spec["seed"])
        body = method_cell if spec["kind"] == "method" else baseline_cell
        result = body(Path(run_dir), job, folder)
    policy = spec["policy"]
    metrics = {
        "cell": job.id,
        "kind": spec["kind"],
        "benchmark": spec["benchmark"],
        "policy": policy["name"],
        "scale": policy["scale"],
        "scale_params": policy["params_m"],
        "seed": spec["seed"],
        "method": spec["method"],
        "shots": spec["shots"],
        "personalized": None,
        "rm_accuracy": None,
        "policy_accuracy": None,
        "base_policy_accuracy": None,
        "lambda": None,
        "lambda_curve": None,
        "generation": None,
        "win_rate": None,
        "perplexity": None,
        **result,
        "spec_hash": job.spec_hash,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(folder / METRICS, _clean(metrics))
    return {"id": job.id, "hash": job.spec_hash, "reused": False}


def _reset(folder: Path, job: Job, force: bool) -> None:
    """Start a cell: outputs of another spec (or all, with force) are removed."""
    spec_path = folder / "spec.json"
    same = spec_path.is_file() and read_json(spec_path).get("hash") == job.spec_hash
    if folder.exists() and (force or not same):
        for name in (METRICS, GENERATIONS, PARTIAL, "log.txt"):
            (folder / name).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    if not same:
        write_json(spec_path, {"id": job.id, "hash": job.spec_hash, "spec": job.spec})


def _clean(value: Any) -> Any:
    """NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _decode_settings(spec: dict[str, Any]) -> dict[str, Any]:
    dec = spec["decoding"]
    return {
        "max_new_tokens": dec["max_new_tokens"],
        "stop": tuple(dec["stop"]),
        "mode": dec["mode"],
        "temperature": dec["temperature"],
        "batch_size": dec["batch_size"],
        "seed": spec["seed"],
    }


def _requests(bench) -> list:
    from persalign.decoding import GenerationRequest

    return [GenerationRequest(q.id, q.user, q.prompt) for q in bench.query]


def _support(bench) -> dict[str, list]:
    return {u.user: list(u.support) for u in bench.adapt_users()}


def _generation_metrics(spec, policy, bench, gens: list[dict]) -> dict[str, Any]:
    """Behavioural alignment (when the benchmark has completions) and perplexity."""
    from persalign.metrics.generation import behavioural_alignment, per_user_mean, rouge

    out: dict[str, Any] = {}
    metrics = spec["metrics"]
    if bench.completions:
        if metrics["bertscore_model"]:
            out["generation"] = behavioural_alignment(
                gens,
                bench.completions,
                metrics["bertscore_model"],
                num_layers=metrics["bertscore_num_layers"],
            )
        else:  # ROUGE only
            refs = {(c.user, c.id): c.reference for c in bench.completions}
            scored = [g for g in gens if (g["user"], g["id"]) in refs]
            pairs = rouge([g["text"] for g in scored], [refs[g["user"], g["id"]] for g in scored])
            users = [g["user"] for g in scored]
            out["generation"] = {
                name: per_user_mean(users, [p[name] for p in pairs])
                for name in ("rouge1", "rougeL")
            }
            out["generation"].update(bertscore_f1=None, bertscore_model=None, n=len(scored))
    if metrics["perplexity"]:
        from persalign.metrics.perplexity import perplexity

        prompts = {(q.user, q.id): q.prompt for q in bench.query}
        result = perplexity(
            policy,
            [prompts[g["user"], g["id"]] for g in gens],
            [g["text"] for g in gens],
            users=[g["user"] for g in gens],
            batch_size=metrics["batch_size"],
            progress=False,
        )
        out["perplexity"] = {k: v for k, v in result.items() if k != "values"}
    return out


def baseline_cell(run_dir: Path, job: Job, folder: Path) -> dict[str, Any]:
    """Zero-shot, ICL or ICL-RAG: policy accuracy, generations and their metrics."""
    from persalign.decoding import create_decoder
    from persalign.metrics.policy_accuracy import policy_accuracy

    spec = job.spec
    bench = workspace.benchmark(job.bench_path)
    policy = workspace.policy_for(spec["policy"])
    method, batch = spec["method"], spec["metrics"]["batch_size"]
    out: dict[str, Any] = {}
    settings = _decode_settings(spec)
    if method == "zero-shot":
        accuracy = policy_accuracy(policy, bench.query, scorer="base", batch_size=batch)
        out["base_policy_accuracy"] = accuracy
    else:
        icl = dict(spec["icl"])
        settings.update(shots=spec["shots"], **icl)
        accuracy = policy_accuracy(
            policy,
            bench.query,
            scorer="icl",
            support=_support(bench),
            shots=spec["shots"],
            seed=spec["seed"],
            batch_size=batch,
            icl_decoder=method,
            icl_settings=icl,
        )
    out["policy_accuracy"] = accuracy
    if spec["decoding"]["generate"]:
        decoder = create_decoder(method, policy, support=_support(bench), **settings)
        gens = workspace.generate_resumable(
            decoder, _requests(bench), folder, settings["batch_size"], f"{method} {job.id}"
        )
        out.update(_generation_metrics(spec, policy, bench, gens))
    return out


def method_cell(run_dir: Path, job: Job, folder: Path) -> dict[str, Any]:
    """A reward method under ARGS (or P-DPO's own policy) at the lambda chosen for it."""
    from persalign.decoding import create_decoder
    from persalign.metrics.lambda_selection import select_lambda, split_train_heldout
    from persalign.metrics.policy_accuracy import policy_accuracy

    spec = job.spec
    bench = workspace.benchmark(job.bench_path)
    policy = workspace.policy_for(spec["policy"])
    model_dir = run_dir / "models" / spec["model"]["id"]
    rm = workspace.reward_model(model_dir, spec["model"]["hash"])
    batch, lam_spec = spec["metrics"]["batch_size"], spec["lambda"]
    settings = {**_decode_settings(spec), "k": spec["decoding"]["k"]}
    out: dict[str, Any] = {
        "personalized": bool(rm.personalized),
        "rm_accuracy": read_json(model_dir / "rm_accuracy.json"),
    }
    if len(lam_spec["grid"]) == 1:
        out["lambda"] = float(lam_spec["grid"][0])
    else:
        _, heldout = split_train_heldout(
            bench, lam_spec["heldout_per_user"], lam_spec["heldout_users"], spec["seed"]
        )
        selection = select_lambda(
            policy,
            rm,
            heldout,
            lam_spec["grid"],
            objective=lam_spec["objective"],
            decode_settings=settings,
            batch_size=batch,
            progress=False,
        )
        out["lambda"], out["lambda_curve"] = selection["lam"], selection["curve"]
    scorer = "personal-rgd" if rm.personalized else "global-rgd"
    out["policy_accuracy"] = policy_accuracy(
        policy, bench.query, scorer=scorer, reward_model=rm, lam=out["lambda"], batch_size=batch
    )
    zero_shot = spec["zero_shot"]
    zs_folder = run_dir / "cells" / zero_shot["id"] if zero_shot else None
    if zs_folder is not None:
        if not cell_finished(zs_folder, zero_shot["hash"]):
            raise RuntimeError(f"the zero-shot cell {zero_shot['id']} has not finished")
        out["base_policy_accuracy"] = read_json(zs_folder / METRICS)["policy_accuracy"]
    else:
        out["base_policy_accuracy"] = policy_accuracy(
            policy, bench.query, scorer="base", batch_size=batch
        )
    if not spec["decoding"]["generate"]:
        return out
    if spec["decoder"] == "args":
        settings["lam"] = out["lambda"]
    else:
        settings.pop("k")
    decoder = create_decoder(spec["decoder"], policy, reward_model=rm, **settings)
    gens = workspace.generate_resumable(
        decoder, _requests(bench), folder, settings["batch_size"], f"{spec['decoder']} {job.id}"
    )
    out.update(_generation_metrics(spec, policy, bench, gens))
    if zs_folder is not None and spec["metrics"]["win_rate"]:
        from persalign.metrics.winrate import win_rate

        prompts = {(q.user, q.id): q.prompt for q in bench.query}
        zs_gens = workspace.read_generations(zs_folder / GENERATIONS)
        out["win_rate"] = win_rate(rm, gens, zs_gens, prompts)
    return out
