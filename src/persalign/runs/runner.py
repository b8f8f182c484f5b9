"""Run an experiment config: the grid benchmark x method x policy x seed, plus baselines.

    config = load_config("configs/demo.yaml")
    summary = run_experiment(config, out="runs")                 # local backend
    summary = run_experiment(config, backend="ray", address="auto")
    summary = run_experiment(config, reporter=report_html)         # persalign.report.writer
    summary.run_dir, summary.report                               # runs/demo, .../report.html

Layout of ``<out>/<name>/`` (docs/runs.md): ``manifest.json``, ``benchmarks/<label>/`` (when built
here), ``models/<benchmark>__<method>__<backbone>__s<seed>/`` and ``cells/<cell id>/``
(``metrics.json``, written last, ``generations.jsonl``, ``log.txt``). Rerunning skips what is
finished with the same inputs; ``force`` redoes every model and cell. Every step is seeded, so a
run killed at any moment and started again ends with the same results as an uninterrupted run.
At the end ``reporter(run_dir)`` writes the report, when given (the report room sits above this
one, so the caller passes it in: ``persalign run`` passes ``persalign.report.writer.report_html``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persalign.errors import PersalignError
from persalign.runs.backends import Outcome, make_backend
from persalign.runs.benchmark_builds import prepare_benchmark
from persalign.runs.config import RunConfig
from persalign.runs.manifest import write_manifest
from persalign.runs.plan import Job, make_plan

log = logging.getLogger(__name__)


class RunFailed(PersalignError):
    """Some jobs of a run failed (the others finished; rerun to retry the failed ones)."""


@dataclass
class RunSummary:
    run_dir: Path
    jobs: list[Job]
    outcome: Outcome
    report: Path | None


def run_experiment(
    config: RunConfig,
    out: str | Path = "runs",
    *,
    force: bool = False,
    backend: str = "local",
    address: str | None = None,
    reporter: Callable[[Path], Path | None] | None = None,
    ray_init: dict[str, Any] | None = None,
) -> RunSummary:
    """Run (or resume) ``config`` into ``<out>/<config.name>``; RunFailed if any job failed."""
    executor = make_backend(backend, address, **(ray_init or {}))
    run_dir = Path(out) / config.name
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("run %s: results in %s", config.name, run_dir)
    benches = {
        label: prepare_benchmark(label, bench, run_dir, verify=config.verify)
        for label, bench in config.benchmarks.items()
    }
    jobs = make_plan(config, benches)
    write_manifest(
        run_dir,
        config,
        backend={"name": backend, "address": address},
        cells=[j.id for j in jobs if j.kind == "cell"],
        models=[j.id for j in jobs if j.kind == "model"],
    )
    n_cells = sum(j.kind == "cell" for j in jobs)
    log.info("%d reward models and %d cells (%s backend)", len(jobs) - n_cells, n_cells, backend)
    outcome = executor.execute(jobs, run_dir, force)
    log.info(
        "%d jobs run, %d reused, %d failed, %d blocked",
        len(outcome.done),
        len(outcome.reused),
        len(outcome.failed),
        len(outcome.blocked),
    )
    report_path = None
    if reporter is not None:
        try:
            report_path = reporter(run_dir)
        except PersalignError as exc:  # e.g. no finished cell at all
            if not outcome.failed:
                raise
            log.warning("no report: %s", exc)
    summary = RunSummary(run_dir, jobs, outcome, report_path)
    if outcome.failed:
        lines = "; ".join(f"{k}: {v}" for k, v in list(outcome.failed.items())[:3])
        raise RunFailed(
            f"{len(outcome.failed)} job(s) failed ({len(outcome.blocked)} blocked by them); "
            f"see their log.txt in {run_dir}: {lines}"
        )
    return summary
