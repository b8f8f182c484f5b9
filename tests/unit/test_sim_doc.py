"""docs/simulated-users.md runs as written at toy size: its build command (from the suite's toy
source) prints what the doc shows, its Python recomputes r_u as the builder did, and its config
snippet is a valid run config."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from persalign.data import load_benchmark
from persalign.report.ceilings import ROWS
from persalign.runs.config import load_config

from .sim_source import write_source
from .test_cli import run
from .test_experiment_config import raw_config, write

DOC = Path(__file__).resolve().parents[2] / "docs" / "simulated-users.md"
BLOCK = re.compile(r"<!-- (?P<tag>[\w:. -]+) -->\n```\w*\n(?P<body>.*?)```", re.S)


def blocks() -> dict[str, str]:
    return {m["tag"]: m["body"] for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))}


def test_the_docs_example_builds_what_it_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    doc = blocks()
    assert sorted(doc) == ["ceilings", "config", "output", "python", "run"]
    monkeypatch.chdir(tmp_path)
    write_source(tmp_path / "out" / "source")
    argv = shlex.split(doc["run"].replace("\\\n", " "))
    assert argv[:4] == ["persalign", "data", "build", "sim"]
    code, out, err = run(argv[1:], capsys)
    assert code == 0, err
    assert " ".join(out.split()) == " ".join(doc["output"].split())

    argv = shlex.split(doc["ceilings"].split("#")[0])
    assert argv[:3] == ["persalign", "data", "ceilings"]
    code, out, err = run([*argv[1:], "--json"], capsys)
    assert code == 0, err
    ceilings = json.loads(out)
    assert set(ceilings["rows"]) == set(ROWS) and ceilings["users"] == 5

    namespace: dict = {}
    exec(doc["python"], namespace)  # the doc's own recomputation of r_u
    bench = load_benchmark(tmp_path / "out" / "sim")
    for q in bench.query:
        for y in (q.chosen, q.rejected):
            expected = bench.true_reward.rewards([q.prompt], [y], [q.user])[0]
            assert namespace["true_reward"](q.user, q.prompt, y) == pytest.approx(expected)

    snippet = yaml.safe_load(doc["config"])
    raw = raw_config(seeds=[0], **snippet)
    raw["benchmarks"]["sim"]["path"] = str(tmp_path / "out" / "sim")
    config = load_config(write(tmp_path, raw))
    assert "oracle" in config.methods


def test_study_sim_config_is_valid_with_every_method_the_oracle_and_48_users(tmp_path: Path):
    from persalign.rewards import METHODS, RewardConfig

    raw = yaml.safe_load((DOC.parents[1] / "configs" / "study_sim.yaml").read_text())
    settings = raw["reward"]["settings"]
    assert settings["backbone_training"] == "frozen" and settings["epochs"] == 1
    assert "max_steps" not in settings
    if "backbone_training" not in RewardConfig.model_fields:  # frozen mode lands with issue 23
        del settings["backbone_training"]
    raw["benchmarks"]["sim"]["path"] = str(tmp_path / "sim")
    config = load_config(write(tmp_path, raw))
    names = {config.method_options(m)[0] for m in config.methods}
    assert names == set(METHODS.names()) and len(config.seeds) >= 1  # 3 do not fit an hour
    assert config.baselines.zero_shot and config.baselines.icl and config.baselines.icl_rag
    header = (DOC.parents[1] / "configs" / "study_sim.yaml").read_text()
    assert "--adapt-users 48" in header
