"""A run's benchmark builds are reused only while their inputs are unchanged, and the run
config's ``verify`` reaches every place a benchmark loads.

A benchmark built into the run folder is reused when its options (``run_build.json``) and the
fingerprint of its local input files (``run_inputs.json``) are unchanged: an in-place edit of
the user's prefs.jsonl rebuilds it on the next run. ``verify: false`` (or ``persalign run
--no-verify``) loads a benchmark folder edited by hand, before the run and in every job.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from persalign.cli import run as run_command
from persalign.data.benchmark_folder import load_benchmark
from persalign.errors import DataError
from persalign.runs import workspace
from persalign.runs.backends import run_job
from persalign.runs.benchmark_builds import (
    INPUTS_MARKER,
    changed_inputs,
    input_fingerprint,
    prepare_benchmark,
)
from persalign.runs.config import BenchmarkConfig, parse_config
from persalign.runs.plan import Job, make_plan
from persalign.runs.runner import run_experiment

from .rewards_synthetic import write_two_group_benchmark
from .test_cli import run as run_cli
from .test_jsonl_builder import own_rows, write_rows
from .test_runner import raw_config

LOG = "persalign.runs.benchmark_builds"


def _own_benchmark(tmp_path: Path) -> tuple[BenchmarkConfig, Path, Path]:
    """A jsonl benchmark entry (prefs.jsonl, completions.jsonl) and its folder in a run."""
    rows = own_rows(users=6, items=4)
    prefs = write_rows(tmp_path / "prefs.jsonl", rows)
    comps = write_rows(
        tmp_path / "completions.jsonl",
        [{"user": r["user"], "prompt": r["prompt"], "completion": "mine"} for r in rows],
    )
    config = BenchmarkConfig(
        dataset="jsonl",
        source=str(prefs),
        completions=str(comps),
        min_items=3,
        train_users=3,
        adapt_users=3,
    )
    return config, prefs, tmp_path / "run" / "benchmarks" / "own"


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def _prompts(folder: Path) -> set[str]:
    bench = load_benchmark(folder)
    return {p.prompt for p in (*bench.train, *bench.support, *bench.query)}


def test_an_in_place_edit_of_prefs_rebuilds_and_an_unchanged_one_reuses(tmp_path, caplog):
    config, prefs, folder = _own_benchmark(tmp_path)
    run_dir = tmp_path / "run"
    first = prepare_benchmark("own", config, run_dir)
    assert (folder / INPUTS_MARKER).is_file()
    stamps = _stamps(folder)
    loaded = workspace.benchmark(folder)  # a job of this process loads it

    caplog.set_level(logging.INFO, logger=LOG)
    caplog.clear()  # only what the second prepare logs (an earlier test may have set INFO)
    again = prepare_benchmark("own", config, run_dir)  # nothing changed: reused as it is
    assert again.hash == first.hash and _stamps(folder) == stamps
    assert "reusing the built benchmark own" in caplog.text and "building" not in caplog.text

    caplog.clear()
    new_pair = {"user": "u1", "prompt": "A brand new note", "chosen": "u1 new", "rejected": "x"}
    with prefs.open("a", encoding="utf-8") as handle:  # in place: same path, same options
        handle.write(json.dumps(new_pair) + "\n")
    rebuilt = prepare_benchmark("own", config, run_dir)
    assert "A brand new note" in _prompts(folder)
    assert rebuilt.hash != first.hash and _stamps(folder) != stamps
    assert f"rebuilding benchmark own: input changed since its build: source {prefs}" in (
        caplog.text
    )
    assert "completions" not in caplog.text.split("input changed")[1].splitlines()[0]
    # a job of the same process sees the rebuilt folder, not the one it loaded before
    fresh = workspace.benchmark(folder)
    assert fresh is not loaded
    assert "A brand new note" in {p.prompt for p in (*fresh.train, *fresh.support, *fresh.query)}

    caplog.clear()
    stamps = _stamps(folder)
    assert prepare_benchmark("own", config, run_dir).hash == rebuilt.hash  # reused again
    assert _stamps(folder) == stamps and "rebuilding" not in caplog.text


def test_an_edited_completions_file_or_a_folder_without_fingerprint_rebuilds(tmp_path, caplog):
    config, _, folder = _own_benchmark(tmp_path)
    run_dir = tmp_path / "run"
    prepare_benchmark("own", config, run_dir)
    caplog.set_level(logging.INFO, logger=LOG)
    comps = Path(config.completions)
    comps.write_text(comps.read_text().replace('"mine"', '"my own words"'))
    prepare_benchmark("own", config, run_dir)
    assert f"completions {comps} (content changed)" in caplog.text
    assert "my own words" in (folder / "completions.jsonl").read_text()

    caplog.clear()
    (folder / INPUTS_MARKER).unlink()  # built by an older persalign: unknown inputs
    stamps = _stamps(folder)
    prepare_benchmark("own", config, run_dir)
    assert "records no input fingerprint" in caplog.text
    assert (folder / INPUTS_MARKER).is_file() and _stamps(folder) != stamps


def test_a_source_folder_is_fingerprinted_by_its_files_stats(tmp_path):
    source = tmp_path / "acl" / "data"
    (source / "xml").mkdir(parents=True)
    for name in ("2023.acl.xml", "2024.acl.xml"):
        (source / "xml" / name).write_text("<collection/>")
    (source / ".cache").mkdir()
    (source / ".cache" / "x").write_text("ignored")
    config = BenchmarkConfig(dataset="pref-acl", source=str(tmp_path / "acl")).build_options()
    before = input_fingerprint(config)
    assert before["source"]["kind"] == "folder" and before["source"]["files"] == 2
    assert input_fingerprint(config) == before  # stable
    (source / ".cache" / "x").write_text("still ignored: hidden")
    assert input_fingerprint(config) == before
    edited = source / "xml" / "2024.acl.xml"
    edited.write_text("<collection>edited</collection>")
    stat = edited.stat()
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    after = input_fingerprint(config)
    assert after["source"]["digest"] != before["source"]["digest"]
    assert changed_inputs(before, after) == [
        f"source {tmp_path / 'acl'} (data/xml/2024.acl.xml changed)"
    ]
    (source / "xml" / "2025.acl.xml").write_text("<collection/>")  # a new file counts too
    assert "data/xml/2025.acl.xml" in changed_inputs(after, input_fingerprint(config))[0]


def _tampered(tmp_path: Path) -> Path:
    bench = write_two_group_benchmark(tmp_path / "toy")
    query = bench / "query.jsonl"
    query.write_text(query.read_text(encoding="utf-8").replace("alpha", "ALPHA"), encoding="utf-8")
    return bench


def test_verify_false_reaches_the_run_and_every_job(tmp_path):
    bench = _tampered(tmp_path)
    raw = raw_config(bench, str(tmp_path / "no-such-model"))
    default = parse_config(raw)
    assert default.verify is True
    with pytest.raises(DataError, match=r"query\.jsonl: sha256 differs") as info:
        run_experiment(default, tmp_path / "runs")
    assert info.value.path == str(bench / "query.jsonl")

    config = parse_config({**raw, "verify": False})
    prepared = prepare_benchmark("toy", config.benchmarks["toy"], tmp_path, verify=False)
    jobs = make_plan(config, {"toy": prepared})
    assert {job.kind for job in jobs} == {"model", "cell"}
    for job in jobs:  # as a Ray task or a subprocess gets it: plain JSON
        sent = json.loads(json.dumps(job.to_json()))
        assert sent["verify"] is False and Job.from_json(sent).verify is False
    strict = make_plan(default, {"toy": prepared})
    assert all(Job.from_json(json.loads(json.dumps(j.to_json()))).verify for j in strict)
    # a job with the default refuses the tampered folder before any model loads
    for job in (strict[0], next(j for j in strict if j.kind == "cell")):
        with pytest.raises(DataError, match=r"query\.jsonl: sha256 differs") as info:
            run_job(tmp_path / "jobs", job.to_json())
        assert info.value.path == str(bench / "query.jsonl")
    loose = workspace.benchmark(bench, verify=False)
    assert any("ALPHA" in p.prompt + p.chosen + p.rejected for p in loose.query)
    with pytest.raises(DataError, match=r"query\.jsonl"):  # verified on request, even if cached
        workspace.benchmark(bench)


def test_a_run_with_verify_false_loads_a_tampered_folder_in_its_jobs(tmp_path, tiny_lm):
    bench = _tampered(tmp_path)
    raw = raw_config(bench, tiny_lm, name="loose")
    raw.update(
        seeds=[0],
        verify=False,
        methods={"global-rm": None},
        baselines={"icl": [], "icl_rag": []},
        decoding={"max_new_tokens": 2, "k": 2, "batch_size": 2},
        metrics={"generation": {"bertscore_model": None}, "perplexity": False},
    )
    raw["lambda"] = {"grid": [0.0], "heldout_per_user": 0}
    summary = run_experiment(parse_config(raw), tmp_path / "runs")
    assert not summary.outcome.failed and len(summary.outcome.done) == 3


@pytest.mark.parametrize(
    ("in_config", "flag", "expected"),
    [
        (None, [], True),
        (False, [], False),
        (None, ["--no-verify"], False),
        (False, ["--verify"], True),
    ],
)
def test_the_cli_flag_overrides_the_config_key(
    tmp_path, capsys, monkeypatch, in_config, flag, expected
):
    seen = {}

    def fake_run(config, out, **kwargs):
        seen["verify"] = config.verify
        raise DataError("stop here")

    monkeypatch.setattr(run_command, "run_experiment", fake_run)
    raw = raw_config(write_two_group_benchmark(tmp_path / "toy"), str(tmp_path / "no-model"))
    if in_config is not None:
        raw["verify"] = in_config
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(raw))  # JSON is YAML
    code, _, err = run_cli(["run", str(config), "--out", str(tmp_path / "runs"), *flag], capsys)
    assert code == 2 and "stop here" in err
    assert seen["verify"] is expected
