"""docs/own-data.md runs as written: its two files are written to a folder, its command is run
there through the CLI, and what it prints, the manifest's skips it shows, the users and query
items its prose names and its run-config snippet are checked against what persalign does."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from persalign.data.benchmark_folder import load_benchmark
from persalign.runs.benchmark_builds import benchmark_hash, prepare_benchmark
from persalign.runs.config import load_config

from .test_cli import run
from .test_experiment_config import raw_config

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "own-data.md"
BLOCK = re.compile(r"<!-- (?P<tag>[\w:. -]+) -->\n```\w*\n(?P<body>.*?)```", re.S)


def doc_blocks(doc: Path = DOC) -> dict[str, str]:
    """tag -> body of every ``<!-- tag -->`` fenced block of ``doc`` (docs/own-data.md)."""
    return {m["tag"]: m["body"] for m in BLOCK.finditer(doc.read_text(encoding="utf-8"))}


def test_the_doc_has_its_files_command_output_skips_and_config():
    assert sorted(doc_blocks()) == [
        "config",
        "file: completions.jsonl",
        "file: prefs.jsonl",
        "manifest: skipped",
        "output",
        "run",
    ]


def test_the_worked_example_builds_what_the_doc_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    blocks = doc_blocks()
    for tag, body in blocks.items():
        if tag.startswith("file: "):
            (tmp_path / tag.removeprefix("file: ")).write_text(body, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(blocks["run"].replace("\\\n", " "))
    assert argv[:4] == ["persalign", "data", "build", "jsonl"]
    code, out, err = run(argv[1:], capsys)
    assert code == 0, err
    assert " ".join(out.split()) == " ".join(blocks["output"].split())

    built = tmp_path / "out" / "own"
    manifest = json.loads((built / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["skipped"] == json.loads(blocks["manifest: skipped"])
    # the prose: ben and caro adapt, their latest item is query and has its completion
    assert manifest["adapt_user_ids"] == ["ben", "caro"]
    assert manifest["train_user_ids"] == ["ana", "dev"]
    bench = load_benchmark(built)
    assert [q.id for q in bench.query] == ["ben/3", "caro/2"]
    assert [c.id for c in bench.completions] == ["ben/3", "caro/2"]
    assert bench.completions[0].reference == "DB migration done, no errors"

    # the config snippet: paths relative to the config's folder, not the working directory
    benchmarks = yaml.safe_load(blocks["config"])["benchmarks"]
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw_config(benchmarks=benchmarks)), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(config_path)
    assert config.benchmarks["own"].completions == str(tmp_path / "completions.jsonl")
    prepared = prepare_benchmark("own", config.benchmarks["own"], tmp_path / "runs")
    assert benchmark_hash(prepared.path) == benchmark_hash(built)
