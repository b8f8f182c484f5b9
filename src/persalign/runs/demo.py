"""The embedded default run (``make demo`` / ``persalign demo``): configs/demo.yaml, end to end.

    summary = run_demo("runs/demo")              # reads configs/demo.yaml
    summary.report                                 # runs/demo/report/report.html

A small Pref-ACL (ACL Anthology abstracts and titles from ``PERSALIGN_ACL_DIR``, downloaded into
the cache on a connected machine when unset), the bundled SmolLM2-135M-Instruct as policy and
reward backbone, five reward methods against zero-shot, ICL and ICL-RAG, two seeds: everything
``persalign run`` does, sized to finish within minutes on a laptop CPU. Rerunning resumes.
"""

from __future__ import annotations

from pathlib import Path

from persalign.runs.runner import RunSummary

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def run_demo(
    out: str | Path = "runs/demo", config: str | Path | None = None, *, force: bool = False
) -> RunSummary:
    """Run the demo config into the run folder ``out`` (its name is the folder's name)."""
    from persalign.runs.config import load_config
    from persalign.runs.runner import run_experiment

    out = Path(out)
    cfg = load_config(config or DEFAULT_CONFIG, [f"name={out.name}"])
    return run_experiment(cfg, out.parent, force=force)
