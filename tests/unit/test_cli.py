"""The command line: listing, stats, and one-line errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persalign.cli import main
from persalign.data.benchmark_folder import write_benchmark
from persalign.types import Completion, Preference


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def toy_benchmark(path: Path, *, same: bool = False) -> Path:
    """Two train users, one adaptation user; ``same``: every chosen equals its rejected."""

    def pref(user: str, i: int) -> Preference:
        return Preference(f"{user}/{i}", user, f"prompt {user} {i}", "c", "c" if same else "r")

    query = [pref("a", 2), pref("a", 3)]
    write_benchmark(
        path,
        train=[pref("t", i) for i in range(5)] + [pref("s", i) for i in range(3)],
        support=[pref("a", 0), pref("a", 1)],
        query=query,
        completions=[Completion(q.id, q.user, q.prompt, "gt") for q in query],
        manifest={"name": "toy", "skipped": {"empty title": {"count": 2, "examples": []}}},
    )
    return path


def test_ls_lists_every_dataset_builder(capsys):
    code, out, _ = run(["ls", "datasets"], capsys)
    assert code == 0
    for name in ("tldr", "prism", "pref-lamp", "pref-acl"):
        assert name in out


def test_data_stats_json(tmp_path: Path, capsys):
    toy_benchmark(tmp_path / "b")
    code, out, _ = run(["data", "stats", str(tmp_path / "b"), "--json"], capsys)
    assert code == 0
    stats = json.loads(out)
    assert stats["train"]["users"] == 2
    assert stats["train"]["preferences_per_user"] == {
        "min": 3,
        "median": 4.0,
        "mean": 4.0,
        "max": 5,
    }
    assert stats["adapt"]["users"] == 1 and stats["adapt"]["preferences"] == 4
    assert stats["prompts"] == 12 and stats["completions"] == 2
    assert stats["skipped"] == {"empty title": 2}


def test_data_stats_table(tmp_path: Path, capsys):
    toy_benchmark(tmp_path / "b")
    code, out, _ = run(["data", "stats", str(tmp_path / "b")], capsys)
    assert code == 0
    assert "train" in out and "adapt" in out and "skipped 2: empty title" in out


def test_user_errors_are_one_line_exit_2(tmp_path: Path, capsys):
    bad = tmp_path / "b"
    toy_benchmark(bad)
    (bad / "query.jsonl").write_text('{"id": "x"\n', encoding="utf-8")
    code, out, err = run(["data", "stats", str(bad), "--no-verify"], capsys)  # edited by hand
    assert code == 2
    assert "Traceback" not in err and "Traceback" not in out
    assert err.strip().startswith("error: ")
    assert f"{bad / 'query.jsonl'}:1: malformed JSON" in " ".join(err.split())
    code, _, err = run(["data", "build", "pref-acll", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "did you mean 'pref-acl'" in err
    code, _, err = run(["ls", "gizmos"], capsys)
    assert code == 2 and "unknown kind 'gizmos'" in err


def test_data_build_tldr_from_the_cli(tmp_path: Path, shared_data: Path, capsys):
    out_dir = tmp_path / "tldr"
    code, out, err = run(
        [
            "data",
            "build",
            "tldr",
            "--source",
            str(shared_data / "tldr"),
            "--out",
            str(out_dir),
            "--split-file",
            str(shared_data / "tldr" / "pal_worker_ids.json"),
        ],
        capsys,
    )
    assert code == 0, err
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["counts"]["train_users"] == 7 and manifest["counts"]["adapt_users"] == 20
    assert "7 train users" in " ".join(out.split())


def test_ctrl_c_prints_one_line_and_exits_130(capsys, monkeypatch):
    from persalign.cli import ls

    def interrupt(plugins):
        raise KeyboardInterrupt

    monkeypatch.setattr(ls, "load_plugins", interrupt)
    code, _, err = run(["ls"], capsys)
    assert code == 130
    assert err.strip() == "interrupted"


def test_data_build_refuses_to_replace_a_benchmark_without_force_and_then_replaces_it_whole(
    tmp_path, capsys, monkeypatch
):
    from persalign.data import tldr

    from .test_tldr import _row, _write

    rows = [_row(f"w{w:02d}", f"t3_{w}_{i}") for w in range(12) for i in range(3)]
    source = _write(tmp_path / "batch1.jsonl", rows)
    out = tmp_path / "bench"
    argv = ["data", "build", "tldr", "--source", str(source), "--min-items", "2"]
    argv += ["--train-users", "8", "--adapt-users", "4", "--out", str(out)]
    assert run(argv, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run([*argv, "--seed", "1"], capsys)
    assert code == 2 and "holds a benchmark; --force replaces it whole" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    # a build that fails half-way leaves the old benchmark whole, and no temporary folder
    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tldr, "write_preference_benchmark", broken)
    assert run([*argv, "--seed", "1", "--force"], capsys)[0] == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch1.jsonl", "bench"]
    monkeypatch.undo()
    assert run([*argv, "--seed", "1", "--force"], capsys)[0] == 0
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(after) == set(before) and after["train.jsonl"] != before["train.jsonl"]
