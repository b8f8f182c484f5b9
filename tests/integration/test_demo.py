"""The demo config end to end on real data and the bundled model (a smaller grid, one seed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from persalign.data import load_benchmark
from persalign.report.writer import report_html
from persalign.runs.config import parse_config
from persalign.runs.runner import run_experiment

pytestmark = pytest.mark.integration
DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def test_the_demo_config_runs_end_to_end(shared_data: Path, tmp_path: Path):
    raw = yaml.safe_load(DEMO.read_text())
    raw["seeds"] = [0]
    raw["methods"] = {"global-rm": None, "lore": raw["methods"]["lore"]}
    raw["benchmarks"]["pref-acl"]["source"] = str(shared_data / "acl_anthology")
    config = parse_config(raw, base_dir=DEMO.parent)
    summary = run_experiment(config, tmp_path, reporter=report_html)
    cells = sorted(p.name for p in (summary.run_dir / "cells").iterdir())
    assert cells == sorted(
        f"pref-acl__smollm2-135m__{c}__s0"
        for c in ("zero-shot", "icl-1", "icl-rag-1", "global-rm", "lore")
    )
    queries = len(load_benchmark(summary.run_dir / "benchmarks" / "pref-acl").query)
    assert queries == 6  # 3 adaptation users x 2 query items (demo.yaml)
    for cell in cells:
        metrics = json.loads((summary.run_dir / "cells" / cell / "metrics.json").read_text())
        generation = metrics["generation"]
        assert generation["n"] == queries and 0 <= generation["rouge1"]["mean"] <= 1
        assert generation["bertscore_model"] == "bundled:all-minilm-l6-v2"
        gens = (summary.run_dir / "cells" / cell / "generations.jsonl").read_text().splitlines()
        texts = [json.loads(line)["text"] for line in gens]
        assert len(texts) == queries and not any("\n" in t for t in texts)  # stopped at the newline
    assert summary.report is not None and summary.report.is_file()
