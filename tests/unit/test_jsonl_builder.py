"""The ``jsonl`` builder (your own users' data): splits, completions, time order, determinism,
and every bad input: an error naming file and line, or a counted skip.

Expected values are computed here from the input rows, not from the builder's own helpers.
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from persalign.data import BUILDERS, BuildOptions
from persalign.data.benchmark_folder import load_benchmark
from persalign.data.jsonl import load_own_data
from persalign.errors import DataError
from persalign.io import sha256_file

from .test_cli import run

FILES = ("train.jsonl", "support.jsonl", "query.jsonl", "completions.jsonl", "manifest.json")


def write_rows(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build(tmp: Path, out: str = "out", **options: Any) -> dict[str, Any]:
    return BUILDERS.get("jsonl")(BuildOptions(**options), tmp / out)


def own_rows(users: int = 10, items: int = 6, seed: int = 0) -> list[dict[str, Any]]:
    """``users`` x ``items`` preferences, users interleaved in the file, some prompts shared."""
    rng = random.Random(seed)
    rows = []
    for i in range(items):
        for u in range(users):
            prompt = f"Title for note {i}" if u % 3 == 0 else f"Title for note {i} of u{u}"
            chosen = f"u{u} style {rng.randint(0, 999)}"
            rows.append({"user": f"u{u}", "prompt": prompt, "chosen": chosen, "rejected": "bland"})
    return rows


def test_build_splits_users_and_items_attaches_completions_and_is_byte_identical(tmp_path):
    rows = own_rows()
    prefs = write_rows(tmp_path / "prefs.jsonl", rows)
    own = {(r["user"], r["prompt"]): f"own {r['chosen']}" for r in rows if r["user"] != "u9"}
    comp_rows = [{"user": u, "prompt": p, "completion": t} for (u, p), t in own.items()]
    comps = write_rows(tmp_path / "comps.jsonl", comp_rows)
    opts = {"source": str(prefs), "completions": str(comps), "min_items": 3, "seed": 3}
    manifest = build(tmp_path, train_users=6, adapt_users=4, **opts)

    bench = load_benchmark(tmp_path / "out")
    train, adapt = manifest["train_user_ids"], manifest["adapt_user_ids"]
    assert len(train) == 6 and len(adapt) == 4
    assert sorted(train + adapt) == sorted(f"u{u}" for u in range(10))
    # ids are {user}/{n}, n counting the user's records in file order; texts as written
    expected = {}
    for row in rows:
        n = sum(1 for pref_id in expected if pref_id.startswith(row["user"] + "/"))
        expected[f"{row['user']}/{n}"] = row
    for pref in [*bench.train, *bench.support, *bench.query]:
        row = expected[pref.id]
        assert (pref.user, pref.prompt, pref.chosen, pref.rejected) == (
            row["user"],
            row["prompt"],
            row["chosen"],
            row["rejected"],
        )
    assert sorted(p.id for p in bench.train) == sorted(
        i for i in expected if i.split("/")[0] in train
    )
    for user in adapt:
        support = {p.id for p in bench.support if p.user == user}
        query = {p.id for p in bench.query if p.user == user}
        assert len(support) == len(query) == 3 and not support & query
        assert support | query == {i for i in expected if i.split("/")[0] == user}
    # one completion per query preference whose (user, prompt) has one, with that text
    want = {q.id: own[(q.user, q.prompt)] for q in bench.query if (q.user, q.prompt) in own}
    assert {c.id: c.reference for c in bench.completions} == want
    assert all(c.prompt == expected[c.id]["prompt"] for c in bench.completions)
    counts = manifest["counts"]
    assert counts["train_preferences"] == 36 and counts["query_preferences"] == 12
    files = manifest["source"]["files"]
    assert files == [
        {"name": "prefs.jsonl", "sha256": sha256_file(prefs), "records": 60, "preferences": 60}
    ]
    assert manifest["source"]["completions"]["sha256"] == sha256_file(comps)
    assert manifest["skipped"] == {}

    build(tmp_path, out="again", train_users=6, adapt_users=4, **opts)
    for name in FILES:
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    other = build(tmp_path, out="other", train_users=6, adapt_users=4, **{**opts, "seed": 4})
    query = (tmp_path / "out" / "query.jsonl").read_bytes()
    assert (
        other["adapt_user_ids"] != adapt or (tmp_path / "other/query.jsonl").read_bytes() != query
    )


def test_time_split_puts_each_users_latest_items_in_query_whatever_the_offsets(tmp_path):
    # file order and the raw strings' order both differ from the chronological order
    times = [
        "2024-01-01T10:00:00+05:00",
        "2024-01-01T06:00:00Z",
        "2024-01-01T07:00:00",
        "2024-01-01",
    ]
    rows = [
        {"user": f"u{u}", "prompt": f"p{u} {i}", "chosen": "c", "rejected": "r", "time": t}
        for u in range(5)
        for i, t in enumerate(times)
    ]
    prefs = write_rows(tmp_path / "prefs.jsonl", rows)
    build(tmp_path, source=str(prefs), min_items=2, adapt_users=2, split="time")
    bench = load_benchmark(tmp_path / "out")
    # UTC: 05:00, 06:00, 07:00, 00:00 -> the latest two are records 1 and 2
    assert sorted(q.id.split("/")[1] for q in bench.query) == ["1", "1", "2", "2"]
    assert {p.meta["time"] for p in bench.train} >= {"2024-01-01T05:00:00.000000+00:00"}

    numbers = [1_700_000_300, 1_700_000_100.5, 1_700_000_200, 1_600_000_000]
    for row, when in zip(rows, numbers * 5, strict=True):
        row["time"] = when
    write_rows(prefs, rows)
    build(tmp_path, out="numbers", source=str(prefs), min_items=2, adapt_users=2, split="time")
    bench = load_benchmark(tmp_path / "numbers")
    assert sorted(q.id.split("/")[1] for q in bench.query) == ["0", "0", "2", "2"]


@pytest.mark.parametrize(
    ("time", "words"),
    [
        ("yesterday", "not an ISO 8601 date or date-time: 'yesterday'"),
        (True, "must be a number or an ISO 8601 string, got bool"),
        (float("nan"), "must be finite"),
        (2024, "'time' is a number here but a string at line 1; use one kind"),
    ],
)
def test_a_bad_time_names_file_and_line(tmp_path, time, words):
    rows = [{"user": "a", "prompt": "p", "chosen": "c", "rejected": "r", "time": "2024-01-01"}] * 2
    rows = [rows[0], {**rows[1], "time": time}]
    prefs = write_rows(tmp_path / "prefs.jsonl", rows)
    with pytest.raises(DataError) as info:
        build(tmp_path, source=str(prefs), min_items=1)
    assert "prefs.jsonl:2: " in str(info.value) and words in str(info.value)


def test_skips_are_counted_with_file_and_line_and_logged(tmp_path, caplog):
    rows = own_rows(users=4, items=3)  # lines 1-12
    rows += [
        {"user": "", "prompt": "p", "chosen": "c", "rejected": "r"},  # 13
        {"user": "u0", "prompt": "  ", "chosen": "c", "rejected": "r"},  # 14
        {"user": "u0", "prompt": "p", "chosen": " \n", "rejected": "r"},  # 15
        {"user": "u1", "prompt": "p", "chosen": "c", "rejected": ""},  # 16
        {"user": "u1", "prompt": "p", "chosen": "same", "rejected": "same"},  # 17
        {"user": "u2", "prompt": "p", "chosen": " same ", "rejected": "same"},  # 18
        {"user": "lonely", "prompt": "p", "chosen": "c", "rejected": "r"},  # 19
        {"user": 7, "prompt": "p", "chosen": "c", "rejected": "r", "id": "seven"},  # 20
        {"user": 7, "prompt": "q", "chosen": "c", "rejected": "r"},  # 21
        {"user": 7, "prompt": "s", "chosen": "c", "rejected": "r"},  # 22
        {"user": " u3 ", "prompt": "t", "chosen": "c", "rejected": "r"},  # 23: user u3
    ]
    prefs = write_rows(tmp_path / "prefs.jsonl", rows)
    comps = write_rows(
        tmp_path / "comps.jsonl",
        [
            {"user": "u0", "prompt": rows[0]["prompt"], "completion": " "},
            {"user": "nobody", "prompt": rows[0]["prompt"], "completion": "t"},
            {"user": "u1", "prompt": "never asked", "completion": "t"},
            {"user": 7, "prompt": "q", "completion": "mine"},
        ],
    )
    with caplog.at_level(logging.WARNING):
        manifest = build(tmp_path, source=str(prefs), completions=str(comps), min_items=3)

    def skipped(count: int, *examples: str) -> dict[str, Any]:
        return {"count": count, "examples": list(examples)}

    assert manifest["skipped"] == {
        "empty user id": skipped(1, "prefs.jsonl:13"),
        "empty prompt": skipped(1, "prefs.jsonl:14"),
        "empty chosen response": skipped(1, "prefs.jsonl:15"),
        "empty rejected response": skipped(1, "prefs.jsonl:16"),
        "chosen equals rejected": skipped(2, "prefs.jsonl:17", "prefs.jsonl:18"),
        "user with fewer than 3 preferences": skipped(1, "lonely"),
        "empty completion": skipped(1, "comps.jsonl:1"),
        "completion of a user with no preference": skipped(1, "comps.jsonl:2"),
        "completion of a prompt its user has no preference on": skipped(1, "comps.jsonl:3"),
    }
    for reason in manifest["skipped"]:
        assert any(reason in rec.getMessage() for rec in caplog.records), reason
    bench = load_benchmark(tmp_path / "out")
    every = [*bench.train, *bench.support, *bench.query]
    assert len(every) == 16  # 12, three of user 7 (an integer, read as "7"), one more of u3
    assert {p.id for p in every if p.user == "7"} == {"seven", "7/1", "7/2"}
    assert {p.id for p in every if p.user == "u3"} == {"u3/0", "u3/1", "u3/2", "u3/3"}
    data = load_own_data(prefs, comps)  # before the split: the completion each preference gets
    assert [(c.id, c.prompt, c.reference) for c in data.completions] == [("7/1", "q", "mine")]


def _bad_prefs(tmp: Path, line2: str) -> None:
    good = json.dumps({"user": "a", "prompt": "p", "chosen": "c", "rejected": "r"})
    (tmp / "prefs.jsonl").write_text(f"{good}\n{line2}\n{good}\n", encoding="utf-8")


def _bad_comps(tmp: Path, line2: str) -> None:
    _bad_prefs(tmp, json.dumps({"user": "a", "prompt": "q", "chosen": "c", "rejected": "r"}))
    good = json.dumps({"user": "a", "prompt": "p", "completion": "own"})
    (tmp / "comps.jsonl").write_text(f"{good}\n{line2}\n", encoding="utf-8")


PREF = '{"user": "a", "prompt": "p", "chosen": "c", "rejected": "r"'
COMP = '{"user": "a", "prompt": "p", "completion": "own"'
BAD = {  # name: (what line 2 of a file is, the file, words of the error)
    "malformed-json": ('{"user": "a", "prompt": ', "prefs", ["prefs.jsonl:2:", "malformed JSON"]),
    "not-an-object": ("[1, 2]", "prefs", ["prefs.jsonl:2:", "expected a JSON object, got list"]),
    "missing-field": (
        '{"user": "a", "prompt": "p", "chosen": "c"}',
        "prefs",
        ["prefs.jsonl:2:", "missing field(s): rejected"],
    ),
    "chosen-not-a-string": (
        '{"user": "a", "prompt": "p", "chosen": 3, "rejected": "r"}',
        "prefs",
        ["prefs.jsonl:2:", "'chosen' must be a string, got int"],
    ),
    "user-a-list": (
        '{"user": ["a"], "prompt": "p", "chosen": "c", "rejected": "r"}',
        "prefs",
        ["prefs.jsonl:2:", "'user' must be a string or an integer, got list"],
    ),
    "id-repeats": (
        PREF + ', "id": "a/0"}',
        "prefs",
        ["prefs.jsonl:2:", "id 'a/0' repeats (first at line 1)"],
    ),
    "completion-malformed": ('{"user": ', "comps", ["comps.jsonl:2:", "malformed JSON"]),
    "completion-missing-field": (
        '{"user": "a", "prompt": "q"}',
        "comps",
        ["comps.jsonl:2:", "missing field(s): completion"],
    ),
    "completion-not-a-string": (
        '{"user": "a", "prompt": "q", "completion": null}',
        "comps",
        ["comps.jsonl:2:", "'completion' must be a string, got NoneType"],
    ),
    "completion-twice": (
        COMP + "}",
        "comps",
        ["comps.jsonl:2:", "a second completion for user 'a'", "first at line 1"],
    ),
}
ARGV = ["data", "build", "jsonl", "--source", "{tmp}/prefs.jsonl", "--out", "{tmp}/out"]
ARGV_COMPS = [*ARGV, "--completions", "{tmp}/comps.jsonl", "--min-items", "1"]


def _setup(name: str):
    line2, which, _ = BAD[name]
    return lambda tmp: (_bad_prefs if which == "prefs" else _bad_comps)(tmp, line2)


def _argv(name: str) -> list[str]:
    return ARGV if BAD[name][1] == "prefs" else ARGV_COMPS


OTHER_ERRORS = {  # name: (setup, extra argv, words)
    "split-time-without-time": (
        lambda tmp: _bad_prefs(tmp, PREF + ', "time": 1}'),
        ["--split", "time"],
        ["prefs.jsonl:1:", "--split time needs a 'time' on every record"],
    ),
    "no-such-file": (lambda tmp: None, [], ["prefs.jsonl", "no such file"]),
    "source-is-a-folder": (
        lambda tmp: (tmp / "prefs.jsonl").mkdir(),
        [],
        ["prefs.jsonl", "is a folder; expected a JSON-lines file"],
    ),
    "every-user-below-min-items": (
        lambda tmp: _bad_prefs(tmp, PREF + "}"),
        [],
        ["jsonl: the split leaves 0 train and 0 adaptation users", "--min-items"],
    ),
}


def cli(tmp: Path, argv: list[str], capsys) -> tuple[int, str, str]:
    return run(["-q", *(arg.replace("{tmp}", str(tmp)) for arg in argv)], capsys)


def check_one_line_error(tmp: Path, result: tuple[int, str, str], words: list[str]) -> None:
    """Exit 2, one ``error:`` line on stderr with ``words``, no traceback, no output folder."""
    code, out, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err and "Traceback" not in out
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]
    assert not (tmp / "out").exists() and not list(tmp.glob(".out.*"))


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_record_is_one_line_naming_file_and_line(name, tmp_path, capsys):
    _setup(name)(tmp_path)
    check_one_line_error(tmp_path, cli(tmp_path, _argv(name), capsys), BAD[name][2])


@pytest.mark.parametrize("name", list(OTHER_ERRORS))
def test_other_bad_inputs_are_one_line(name, tmp_path, capsys):
    setup, extra, words = OTHER_ERRORS[name]
    setup(tmp_path)
    check_one_line_error(tmp_path, cli(tmp_path, [*ARGV, *extra], capsys), words)


def test_no_source_is_one_line(tmp_path, capsys):
    result = cli(tmp_path, ["data", "build", "jsonl", "--out", "{tmp}/out"], capsys)
    check_one_line_error(tmp_path, result, ["jsonl needs --source"])


def test_a_bad_record_through_the_installed_cli(tmp_path):
    """The same check in a fresh interpreter, as a user runs it (one case: imports cost ~10 s)."""
    _setup("completion-not-a-string")(tmp_path)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in ARGV_COMPS]
    proc = subprocess.run(
        [sys.executable, "-m", "persalign.cli", "-q", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = (proc.returncode, proc.stdout, proc.stderr)
    check_one_line_error(tmp_path, result, BAD["completion-not-a-string"][2])
