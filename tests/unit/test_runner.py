"""``persalign run``: the grid on tiny models, resume and --force, kill -9 and rerun, Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from persalign.errors import ConfigError
from persalign.metrics.schema import COST_FIELDS
from persalign.report.writer import report_html
from persalign.runs.config import config_hash, parse_config
from persalign.runs.runner import RunFailed, run_experiment

from .rewards_synthetic import write_two_group_benchmark
from .test_cli import run as run_cli

SEEDS = (0, 1)
METHODS = ("global-rm", "lore")
BASELINES = ("zero-shot", "icl-1", "icl-rag-1")
CONTRACT_KEYS = {
    "cell",
    "kind",
    "benchmark",
    "policy",
    "scale",
    "scale_params",
    "seed",
    "method",
    "shots",
    "personalized",
    "rm_accuracy",
    "policy_accuracy",
    "base_policy_accuracy",
    "lambda",
    "lambda_curve",
    "generation",
    "win_rate",
    "perplexity",
    "seconds",
    "cost",
    "steering_accuracy",
    "ground_truth_rank",
    "prefix_accuracy",
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 train users x 4 preferences, 2 adaptation users x (2 support, 3 query + completions)."""
    return write_two_group_benchmark(tmp_path_factory.mktemp("bench") / "toy")


def raw_config(bench: Path, lm: str, name: str = "tiny") -> dict:
    return {
        "name": name,
        "seeds": list(SEEDS),
        "threads": 1,
        "benchmarks": {"toy": {"path": str(bench)}},
        "reward": {
            "backbone": lm,
            "settings": {"max_steps": 2, "batch_size": 4, "adapt_steps": 3},
        },
        "methods": {"global-rm": None, "lore": {"latent_dim": 2}},
        "policies": {"tiny": {"spec": lm, "params_m": 0.1, "scale": "tiny"}},
        "baselines": {"icl": [1], "icl_rag": [1], "retrieval": "bm25"},
        "decoding": {"max_new_tokens": 4, "k": 3, "batch_size": 2},
        "lambda": {"grid": [0.0, 1.0], "heldout_per_user": 1},
        "metrics": {"generation": {"bertscore_model": None}},
    }


SEED_FREE = ("zero-shot", "icl-rag-1")  # greedy and no draw: planned at the first seed only


def cell_ids() -> set[str]:
    every = {f"toy__tiny__{c}__s{s}" for c in (*BASELINES, *METHODS) for s in SEEDS}
    return every - {f"toy__tiny__{c}__s{s}" for c in SEED_FREE for s in SEEDS[1:]}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def results(run_dir: Path) -> dict[str, object]:
    """What the tables are made of: metrics and generations without wall-clock fields, and
    the report's table files byte for byte."""
    out: dict[str, object] = {}
    for path in sorted(run_dir.glob("cells/*/metrics.json")):
        metrics = load(path)
        metrics.pop("seconds")
        metrics.pop("cost")  # wall-clock and memory
        out[str(path.relative_to(run_dir))] = metrics
    for path in sorted(run_dir.glob("cells/*/generations.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        out[str(path.relative_to(run_dir))] = [{**r, "seconds": None} for r in rows]
    for path in sorted((run_dir / "report").rglob("*")):
        # cost.* and report.md (which embeds the cost table) hold wall-clock figures
        if path.suffix in (".csv", ".md", ".tex") and path.stem not in ("cost", "report"):
            out[str(path.relative_to(run_dir))] = path.read_bytes()
    return out


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, bench, tiny_lm):
    config = parse_config(raw_config(bench, tiny_lm))
    out = tmp_path_factory.mktemp("runs")
    return config, run_experiment(config, out, reporter=report_html)


def test_the_local_grid_writes_every_cell_and_model(local_run):
    config, summary = local_run
    run_dir = summary.run_dir
    assert {p.name for p in (run_dir / "cells").iterdir()} == cell_ids()
    models = {p.name for p in (run_dir / "models").iterdir()}
    assert len(models) == 4 and all(
        m.startswith(("toy__global-rm__", "toy__lore__")) for m in models
    )
    assert not summary.outcome.failed and len(summary.outcome.done) == 12
    manifest = load(run_dir / "manifest.json")
    assert manifest["config_hash"] == config_hash(config)
    assert manifest["config"]["lambda"]["grid"] == [0.0, 1.0]
    assert {"git_commit", "versions", "hardware", "created"} <= set(manifest)
    assert manifest["versions"]["torch"] and manifest["hardware"]["cpus"]
    assert sorted(manifest["cells"]) == sorted(cell_ids())
    for cell in cell_ids():
        folder = run_dir / "cells" / cell
        metrics = load(folder / "metrics.json")
        assert set(metrics) >= CONTRACT_KEYS, cell
        assert (
            metrics["cell"] == cell and metrics["policy"] == "tiny" and metrics["scale"] == "tiny"
        )
        gens = [
            json.loads(line) for line in (folder / "generations.jsonl").read_text().splitlines()
        ]
        assert sorted(g["id"] for g in gens) == [f"new{u}/{i}" for u in range(2) for i in (2, 3, 4)]
        assert all(len(g["tokens"]) <= 4 for g in gens)
        assert set(metrics["generation"]["rouge1"]["per_user"]) == {"new0", "new1"}
        assert metrics["perplexity"]["mean"] > 1
        assert (folder / "log.txt").read_text().strip()
        if metrics["kind"] == "method":
            assert metrics["method"] in METHODS and metrics["shots"] is None
            assert metrics["lambda"] in (0.0, 1.0) and len(metrics["lambda_curve"]) == 2
            scorer = "personal-rgd" if metrics["method"] == "lore" else "global-rgd"
            assert metrics["policy_accuracy"]["scorer"] == scorer
            assert metrics["personalized"] is (metrics["method"] == "lore")
            assert metrics["policy_accuracy"]["lam"] == metrics["lambda"]
            assert metrics["rm_accuracy"]["pairs"] == 6
            assert metrics["base_policy_accuracy"]["scorer"] == "base"
            assert metrics["win_rate"]["n"] == 6
            assert metrics["steering_accuracy"]["pairs"] == 6
            assert metrics["prefix_accuracy"]["users"] == 2
            assert metrics["ground_truth_rank"]["scorer"] == scorer
            assert metrics["cost"]["train_seconds"] >= 0
            assert metrics["cost"]["adapt_seconds_per_user"] >= 0
            assert metrics["cost"]["reward_forwards_per_token"] > 0
        else:
            assert metrics["rm_accuracy"] is None and metrics["win_rate"] is None
            assert metrics["personalized"] is None
            scorer = "base" if metrics["method"] == "zero-shot" else "icl"
            assert metrics["policy_accuracy"]["scorer"] == scorer
            assert metrics["shots"] == (None if scorer == "base" else 1)
            assert metrics["steering_accuracy"] is None and metrics["prefix_accuracy"] is None
            assert metrics["ground_truth_rank"]["scorer"] == scorer
            assert metrics["cost"]["train_seconds"] is None
            assert metrics["cost"]["reward_forwards_per_token"] == 0
        cost = metrics["cost"]
        assert set(cost) == set(COST_FIELDS) and cost["peak_rss_mib"] > 0
        assert cost["tokens_generated"] == sum(len(g["tokens"]) for g in gens)
        assert cost["policy_forwards_per_token"] >= 1 and cost["decode_seconds_per_token"] > 0
    zero = load(run_dir / "cells/toy__tiny__zero-shot__s0/metrics.json")
    lore = load(run_dir / "cells/toy__tiny__lore__s0/metrics.json")
    assert lore["base_policy_accuracy"] == zero["policy_accuracy"]
    assert (run_dir / "report" / "report.html").is_file() and summary.report is not None


def test_at_lambda_zero_args_is_the_greedy_policy_and_ties_zero_shot(bench, tiny_lm, tmp_path):
    # lambda fixed at 0 (a one-value grid: no selection), so this always holds, not only when
    # the selection happened to pick 0: ARGS' score is log pi alone, its output the zero-shot
    # greedy output, and every win-rate pair a tie.
    raw = raw_config(bench, tiny_lm, name="lam0")
    raw.update(
        seeds=[0],
        methods={"global-rm": None},
        baselines={"icl": [], "icl_rag": []},
        metrics={"generation": {"bertscore_model": None}, "perplexity": False},
    )
    raw["lambda"] = {"grid": [0.0], "heldout_per_user": 0}
    summary = run_experiment(parse_config(raw), tmp_path)
    assert not summary.outcome.failed

    def texts(cell: str) -> dict[str, str]:
        path = summary.run_dir / "cells" / cell / "generations.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return {r["id"]: r["text"] for r in rows}

    greedy = texts("toy__tiny__zero-shot__s0")
    assert len(greedy) == 6 and texts("toy__tiny__global-rm__s0") == greedy
    method = load(summary.run_dir / "cells/toy__tiny__global-rm__s0/metrics.json")
    assert method["lambda"] == 0.0
    wins = method["win_rate"]
    assert wins["n"] == wins["ties"] == 6 and wins["wins"] == 0 and wins["losses"] == 0


def test_a_rerun_reuses_everything_and_force_redoes_it(local_run):
    config, summary = local_run
    before = results(summary.run_dir)
    stamps = {p: p.stat().st_mtime_ns for p in summary.run_dir.glob("*/*/metrics.json")}
    again = run_experiment(config, summary.run_dir.parent)
    assert again.outcome.done == [] and len(again.outcome.reused) == 12
    assert stamps == {p: p.stat().st_mtime_ns for p in summary.run_dir.glob("*/*/metrics.json")}
    forced = run_experiment(config, summary.run_dir.parent, force=True, reporter=report_html)
    assert len(forced.outcome.done) == 12
    assert results(summary.run_dir) == before


def test_a_changed_setting_redoes_only_what_depends_on_it(local_run, tmp_path):
    config, summary = local_run
    shutil.copytree(summary.run_dir, tmp_path / config.name)
    run_dir = tmp_path / config.name
    markers = {p: p.read_bytes() for p in run_dir.glob("models/*/run_model.json")}
    update = {"decoding": config.decoding.model_copy(update={"max_new_tokens": 2})}
    redo = run_experiment(config.model_copy(update=update), tmp_path)
    assert set(redo.outcome.done) == cell_ids()  # every cell generates: all redone
    assert {p: p.read_bytes() for p in run_dir.glob("models/*/run_model.json")} == markers
    gens = (run_dir / "cells/toy__tiny__lore__s0/generations.jsonl").read_text()
    assert all(len(json.loads(line)["tokens"]) <= 2 for line in gens.splitlines())
    same = {"decoding": config.decoding.model_copy(update={"max_new_tokens": 2})}
    again = run_experiment(config.model_copy(update=same), tmp_path)
    assert again.outcome.done == []


def test_a_failing_model_blocks_only_its_cells(bench, tiny_lm, tmp_path):
    raw = raw_config(bench, tiny_lm, name="broken")
    raw["methods"]["lore"] = {"latent_dim": 2, "backbone": str(tmp_path / "missing-model")}
    raw["seeds"] = [0]
    raw["baselines"] = {"icl": [], "icl_rag": []}
    with pytest.raises(RunFailed, match="1 job"):
        run_experiment(parse_config(raw), tmp_path / "runs")
    cells = tmp_path / "runs" / "broken" / "cells"
    assert (cells / "toy__tiny__global-rm__s0" / "metrics.json").is_file()
    assert not (cells / "toy__tiny__lore__s0" / "metrics.json").exists()


def start_run(config: Path, out: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "persalign.cli", "-q", "run", str(config), "--out", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting to kill the run")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_run_killed_mid_grid_and_rerun_gives_the_same_tables(bench, tiny_lm, tmp_path):
    raw = raw_config(bench, tiny_lm)
    raw["baselines"] = {"icl": [], "icl_rag": []}  # 6 cells: zero-shot and 2 methods, 2 seeds
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    proc = start_run(config, whole)
    assert proc.wait() == 0, proc.stderr.read().decode()

    def finished() -> int:
        return len(list(broken.glob("tiny/cells/*/metrics.json")))

    proc = start_run(config, broken)  # killed once the first cell is finished ...
    kill_when(proc, lambda: finished() >= 1)
    first = finished()
    proc = start_run(config, broken)  # ... and again two cells later
    kill_when(proc, lambda: finished() >= first + 2)
    assert finished() < 6  # really interrupted mid-grid
    proc = start_run(config, broken)
    assert proc.wait() == 0, proc.stderr.read().decode()
    assert not list(broken.glob("tiny/models/.*"))  # no half-trained model left behind
    expected = results(whole / "tiny")
    assert any(key.endswith(".csv") for key in expected)
    assert results(broken / "tiny") == expected


def test_run_cli_reports_config_errors_by_key(bench, tiny_lm, tmp_path, capsys):
    raw = raw_config(bench, tiny_lm)
    raw["decoding"]["max_new_tokns"] = 3
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(raw))
    code, _, err = run_cli(["run", str(config), "--out", str(tmp_path)], capsys)
    assert code == 2 and "decoding.max_new_tokns: unknown key" in err
    del raw["decoding"]["max_new_tokns"]
    config.write_text(yaml.safe_dump(raw))
    code, _, err = run_cli(["run", str(config), "--set", "decoding.k=abc"], capsys)
    assert code == 2 and "decoding.k" in err
    code, _, err = run_cli(["run", str(config), "--backend", "slurm"], capsys)
    assert code == 2 and "unknown backend" in err
    assert not (tmp_path / "tiny").exists()
    code, _, err = run_cli(["run", str(config), "--set", "metrics.win_rate.tie=half"], capsys)
    assert code == 2 and "metrics.win_rate.tie: unknown option; did you mean 'ties'?" in err
    code, _, err = run_cli(["run", str(config), "--set", "metrics.win_rat=false"], capsys)
    assert (
        code == 2 and "metrics.win_rat: unknown metric 'win_rat'; did you mean 'win_rate'?" in err
    )
    with pytest.raises(ConfigError, match=r"lambda\.heldout_per_user"):
        parse_config({**raw, "lambda": {"grid": [0, 1], "heldout_per_user": 0}})


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=80 * 2**20,
        ignore_reinit_error=True,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()


def test_the_grid_runs_on_ray(ray_session, bench, tiny_lm, tmp_path):
    config = parse_config(raw_config(bench, tiny_lm, name="on-ray"))
    summary = run_experiment(config, tmp_path, backend="ray")
    assert not summary.outcome.failed and len(summary.outcome.done) == 12
    for cell in cell_ids():
        metrics = load(tmp_path / "on-ray" / "cells" / cell / "metrics.json")
        assert metrics["policy_accuracy"]["mean"] is not None
        if metrics["kind"] == "method":
            assert metrics["rm_accuracy"]["pairs"] == 6 and metrics["win_rate"]["n"] == 6
    again = run_experiment(config, tmp_path, backend="ray")
    assert again.outcome.done == [] and len(again.outcome.reused) == 12


def test_a_job_runs_with_its_threads_and_restores_them(monkeypatch):
    import torch

    from persalign.runs import backends

    monkeypatch.setattr(backends, "run_cell_job", lambda *a: {"threads": torch.get_num_threads()})
    before = torch.get_num_threads()
    assert backends.run_job("runs", {"kind": "cell", "threads": 1})["threads"] == 1
    assert torch.get_num_threads() == before
