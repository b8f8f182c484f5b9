"""``persalign report``: the paper's tables and figures and one HTML page, from a run's results.

    files = write_report("runs/demo")                # into runs/demo/report/
    files["report.html"]
    # PosixPath('runs/demo/report/report.html')

Reads only ``runs/<name>/manifest.json`` and ``runs/<name>/cells/*/metrics.json`` and writes:

    report/report.html                          everything below on one self-contained page:
                                                findings and meta-evaluation first, run
                                                metadata last (see content.py)
    report/report.md                            the same page in Markdown (figures linked)
    report/results.csv                          every aggregate: one row per benchmark x policy x
                                                row x report column (mean, std, seeds), raw
                                                fractions; columns: schema.report_columns();
                                                BERTScore rows name the model and the scale
                                                (rescaled or raw)
    report/<benchmark>/<table>.{md,tex,csv}     findings (findings.py), meta_evaluation
                                                (meta_evaluation.py), ranking, win_rate,
                                                rouge1_correlation, correlations,
                                                policy_<name>, metrics (tables.py), cost
                                                (cost.py)
    report/<benchmark>/<figure>.png             fig1_rm_vs_policy, fig2_generation_vs_scale,
                                                fig3_icl_shots (figures.py), fig4_quality_cost
                                                (cost.py)

The returned dict maps each file's path relative to the report folder to its path. Output is
deterministic (sorted rows and columns, fixed float formats, seeded bootstraps, no timestamps),
so the same metrics.json files give byte-identical files. Only the cost table and figure (and
report.md / report.html, which hold them) read wall-clock measurements (each cell's ``cost``), so
they differ between two runs of the same config; the cell's total ``seconds`` is never read.
Missing data shows as "--" and is logged; a run without any finished cell raises DataError naming
the folder.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from persalign.io import atomic_write
from persalign.report.content import benchmark_report
from persalign.report.formatting import slug
from persalign.report.html_page import render_page
from persalign.report.markdown import render_markdown
from persalign.report.reading import load_run
from persalign.report.results import RunResults
from persalign.report.tabular import to_csv, to_latex, to_markdown

log = logging.getLogger(__name__)

RENDERERS = {"md": to_markdown, "tex": to_latex, "csv": to_csv}


def results_csv(results: RunResults) -> str:
    """Every aggregate in long form (fractions, not %), for analysis outside the report."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["benchmark", "policy", "scale", "scale_params", "kind", "method", "shots", "row",
         "metric", "mean", "std", "n_seeds", "bertscore_model", "bertscore_scale"]
    )  # fmt: skip
    for benchmark in results.benchmarks():
        for column in results.policies(benchmark):
            models = ";".join(results.bertscore_models(benchmark, column.policy))
            scales = results.bertscore_scales(benchmark, column.policy)
            scale = ";".join(sorted({"rescaled" if rescaled else "raw" for _, rescaled in scales}))
            for row in results.rows(benchmark):
                for metric in (c.key for c in results.columns):
                    stat = results.stat(benchmark, column.policy, row.label, metric)
                    if stat is None:
                        continue
                    writer.writerow(
                        [
                            benchmark,
                            column.policy,
                            column.scale,
                            "" if column.scale_params is None else f"{column.scale_params:g}",
                            row.kind,
                            row.method,
                            "" if row.shots is None else row.shots,
                            row.label,
                            metric,
                            f"{stat.mean:.6f}",
                            f"{stat.std:.6f}",
                            stat.n,
                            models if metric == "bertscore_f1" else "",
                            scale if metric == "bertscore_f1" else "",
                        ]
                    )
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    n_boot: int = 1000,
    all_cells: bool = False,
) -> dict[str, Path]:
    """Write every table, figure and report.html; returns {relative path: path}.

    ``out_dir`` defaults to ``<run_dir>/report``; ``n_boot`` is the number of bootstrap resamples
    (over users) for the correlation and findings CIs (0: no CIs, every finding inconclusive);
    ``all_cells`` also reads cells that the current plan no longer lists.
    """
    results = load_run(run_dir, all_cells=all_cells)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "report"
    written: dict[str, Path] = {}

    def emit(relative: str, content: str | bytes) -> None:
        path = out / relative
        if isinstance(content, bytes):
            _write_bytes(path, content)
        else:
            _write_text(path, content)
        written[relative] = path

    parts = [benchmark_report(results, b, n_boot=n_boot) for b in results.benchmarks()]
    for part in parts:
        folder = slug(part.benchmark)
        for table in part.all_tables:
            for ext, render in RENDERERS.items():
                emit(f"{folder}/{table.key}.{ext}", render(table))
        for figure in part.figures.values():
            emit(f"{folder}/{figure.key}.png", figure.png)
    emit("results.csv", results_csv(results))
    emit("report.md", render_markdown(results, parts))
    emit("report.html", render_page(results, parts))
    log.info("report: %d files in %s", len(written), out)
    return written


def report_html(run_dir: str | Path) -> Path:
    """Write the whole report of ``run_dir`` into ``run_dir/report``; the path of report.html."""
    return write_report(run_dir)["report.html"]
