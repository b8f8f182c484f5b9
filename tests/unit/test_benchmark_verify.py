"""A benchmark folder is whole or refused: every file is checked against its manifest's sha256.

Loading needs ``manifest.json`` and each file the manifest lists, with the bytes it recorded;
``verify=False`` / ``--no-verify`` loads a folder edited by hand; ``persalign data verify``
names every file that differs. Unwritable outputs are refused before anything loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from persalign.cli import checks
from persalign.data.benchmark_folder import (
    benchmark_differences,
    load_benchmark,
    verify_benchmark,
)
from persalign.errors import ConfigError, DataError
from persalign.runs.config import parse_config
from persalign.runs.runner import run_experiment

from .rewards_synthetic import write_two_group_benchmark
from .test_cli import run, toy_benchmark
from .test_runner import raw_config


def _rewrite(file: Path, old: str, new: str) -> None:
    file.write_text(file.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")


def test_a_whole_folder_loads_and_verifies(tmp_path: Path, capsys) -> None:
    bench = toy_benchmark(tmp_path / "b")
    assert benchmark_differences(bench) == []
    assert len(load_benchmark(bench).train) == 8
    code, out, err = run(["data", "verify", str(bench)], capsys)
    assert code == 0, err
    assert "every file matches its manifest" in out


@pytest.mark.parametrize(
    ("damage", "file", "problem"),
    [
        # a valid edit: only the hash can tell (the old loader accepted it)
        (lambda b: _rewrite(b / "train.jsonl", '"c"', '"C"'), "train.jsonl", "sha256 differs"),
        # a build killed before its manifest (the old loader accepted it)
        (lambda b: (b / "manifest.json").unlink(), "manifest.json", "missing"),
        # a new train.jsonl beside an old manifest, from a half-finished rebuild
        (lambda b: (b / "query.jsonl").write_text(""), "query.jsonl", "sha256 differs"),
        (lambda b: (b / "completions.jsonl").unlink(), "completions.jsonl", "missing"),
        (
            lambda b: _rewrite(b / "manifest.json", '"files"', '"filez"'),
            "manifest.json",
            "no file hashes",
        ),
    ],
)
def test_a_damaged_folder_is_refused_naming_the_file(tmp_path: Path, damage, file, problem):
    bench = toy_benchmark(tmp_path / "b")
    damage(bench)
    with pytest.raises(DataError, match=problem) as info:
        load_benchmark(bench)
    assert info.value.path == str(bench / file)
    assert "--no-verify" in str(info.value) and "\n" not in str(info.value)


def test_no_verify_loads_a_folder_edited_by_hand(tmp_path: Path, capsys) -> None:
    bench = toy_benchmark(tmp_path / "b")
    _rewrite(bench / "train.jsonl", '"c"', '"C"')
    (bench / "manifest.json").unlink()
    assert {p.chosen for p in load_benchmark(bench, verify=False).train} == {"C"}
    code, out, err = run(["data", "stats", str(bench), "--no-verify", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["train"]["users"] == 2


def test_data_verify_names_every_file_that_differs(tmp_path: Path, capsys) -> None:
    bench = toy_benchmark(tmp_path / "b")
    _rewrite(bench / "train.jsonl", '"c"', '"C"')
    _rewrite(bench / "support.jsonl", '"r"', '"R"')
    (bench / "extra.jsonl").write_text("{}\n")  # not a benchmark file: ignored
    (bench / "completions.jsonl").unlink()
    differences = benchmark_differences(bench)
    assert [p.name for p, _ in differences] == ["completions.jsonl", "support.jsonl", "train.jsonl"]
    with pytest.raises(DataError, match=r"sha256|missing") as info:
        verify_benchmark(bench)
    assert "(and 2 more)" in str(info.value)
    code, out, err = run(["data", "verify", str(bench)], capsys)
    assert code == 2 and err.count("\n") == 1 and "3 file(s) differ" in err
    flat = " ".join(out.split())
    for name in ("completions.jsonl: missing", "support.jsonl: sha256", "train.jsonl: sha256"):
        assert name in flat


def test_a_file_the_manifest_does_not_list_is_refused(tmp_path: Path) -> None:
    bench = toy_benchmark(tmp_path / "b")
    manifest = json.loads((bench / "manifest.json").read_text())
    del manifest["files"]["completions.jsonl"]
    (bench / "manifest.json").write_text(json.dumps(manifest))
    assert benchmark_differences(bench) == [
        (bench / "completions.jsonl", "not listed in manifest.json")
    ]
    (bench / "completions.jsonl").unlink()  # absent and unlisted: a benchmark without any
    assert benchmark_differences(bench) == []


def test_unwritable_output_is_refused_by_permissions(tmp_path: Path, monkeypatch) -> None:
    """The chmod 0o555 case without depending on who runs the test (root passes chmod)."""
    (tmp_path / "ro").mkdir()
    real = os.access
    monkeypatch.setattr(
        checks.os, "access", lambda p, mode: Path(p) != tmp_path / "ro" and real(p, mode)
    )
    with pytest.raises(ConfigError, match=r"--out .*ro/x/out: cannot write there .*not writable"):
        checks.check_writable(tmp_path / "ro" / "x" / "out")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is not a folder"):
        checks.check_writable(tmp_path / "file" / "out")
    checks.check_writable(tmp_path / "new" / "deeper" / "out")  # creatable: fine


def test_a_run_refuses_a_changed_benchmark_folder_before_any_model_loads(tmp_path: Path) -> None:
    bench = write_two_group_benchmark(tmp_path / "toy")
    _rewrite(bench / "query.jsonl", "alpha", "ALPHA")
    config = parse_config(raw_config(bench, str(tmp_path / "no-such-model")))
    with pytest.raises(DataError, match=r"query\.jsonl: sha256 differs.*persalign data build"):
        run_experiment(config, tmp_path / "runs")
    assert not (tmp_path / "runs" / "tiny" / "models").exists()
