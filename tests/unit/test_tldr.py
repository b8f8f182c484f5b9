"""TL;DR loader and builder: the real shared batches, PAL's split, bad input, the hub path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from persalign.data.benchmark_folder import load_benchmark
from persalign.data.registry import BUILDERS, BuildOptions
from persalign.data.tldr import HUB_CONFIG, HUB_ID, build_tldr, load_tldr, tldr_prompt
from persalign.errors import DataError

BENCHMARK_FILES = ("train.jsonl", "support.jsonl", "query.jsonl", "completions.jsonl")


def _row(
    worker: str,
    post_id: str,
    texts: tuple[str, str] = (" first summary", " second summary"),
    choice: int = 0,
    batch: str = "batch1",
) -> dict[str, Any]:
    return {
        "info": {
            "id": post_id,
            "post": f"Post {post_id} body.",
            "title": "A title",
            "subreddit": "r1",
        },
        "split": "train",
        "summaries": [
            {"text": texts[0], "policy": "sup", "note": None},
            {"text": texts[1], "policy": "ref", "note": None},
        ],
        "choice": choice,
        "worker": worker,
        "batch": batch,
        "extra": {"confidence": 7},
    }


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))
    return path


def _raw_rows(folder: Path) -> list[dict[str, Any]]:
    files = sorted(folder.glob("comparisons_batch*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line]


def test_real_batches_load(shared_data: Path) -> None:
    folder = shared_data / "tldr"
    prefs, skips, source = load_tldr(folder, progress=False)
    raw = _raw_rows(folder)
    assert len(prefs) == len(raw) == 1771
    assert len({p.user for p in prefs}) == 30
    assert len({p.id for p in prefs}) == 1771
    assert skips.total == 0
    assert [f["name"] for f in source["files"]] == [
        "comparisons_batch13.jsonl",
        "comparisons_batch18.jsonl",
    ]
    for pref, row in zip(prefs, raw, strict=True):
        choice = row["choice"]
        assert pref.user == row["worker"]
        assert pref.chosen == row["summaries"][choice]["text"].strip()
        assert pref.rejected == row["summaries"][1 - choice]["text"].strip()
        info = row["info"]
        assert pref.prompt == tldr_prompt(info["subreddit"], info["title"], info["post"].strip())
        assert pref.meta["post_id"] == info["id"]
        assert pref.meta["policies"]["chosen"] == row["summaries"][choice]["policy"]
        assert pref.meta["confidence"] == row["extra"]["confidence"]


def test_prompt_format() -> None:
    assert (
        tldr_prompt("aww", "Cute", "My cat.")
        == "SUBREDDIT: r/aww\nTITLE: Cute\nPOST: My cat.\nTL;DR:"
    )


def test_pal_split_build(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "tldr"
    split_file = folder / "pal_worker_ids.json"
    split = json.loads(split_file.read_text())
    prefs, _, _ = load_tldr(folder, progress=False)
    workers = {p.user for p in prefs}
    seen = sorted(set(split["summary_uids"]) & workers)
    unseen = sorted(set(split["summary_unseen_uids"]) & workers)
    assert (len(seen), len(unseen)) == (7, 20)  # SOURCE.md

    options = BuildOptions(source=str(folder), split_file=str(split_file), seed=0)
    manifest = BUILDERS.get("tldr")(options, tmp_path / "tldr")
    assert manifest["train_user_ids"] == seen
    assert manifest["adapt_user_ids"] == unseen
    absent = len(split["summary_uids"]) + len(split["summary_unseen_uids"]) - 27
    assert manifest["skipped"]["split-file user not in the data"]["count"] == absent == 14
    assert manifest["skipped"]["user not in the split file"]["count"] == 30 - 27

    bench = load_benchmark(tmp_path / "tldr")
    assert {p.user for p in bench.train} == set(seen)
    assert not {p.user for p in bench.train} & {p.user for p in bench.support + bench.query}
    assert bench.completions == ()
    by_user: dict[str, set[str]] = {}
    for pref in prefs:
        by_user.setdefault(pref.user, set()).add(pref.id)
    for user in seen:
        assert {p.id for p in bench.train if p.user == user} == by_user[user]
    for data in bench.adapt_users():
        support, query = {p.id for p in data.support}, {p.id for p in data.query}
        assert support and query
        assert not support & query
        assert support | query == by_user[data.user]


def test_build_is_byte_identical_for_same_seed(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "tldr"
    split_file = str(folder / "pal_worker_ids.json")
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        build_tldr(
            BuildOptions(source=str(folder), split_file=split_file, seed=seed), tmp_path / name
        )
    for file in (*BENCHMARK_FILES, "manifest.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    # the seed does reach the support/query split
    assert (tmp_path / "a" / "support.jsonl").read_bytes() != (
        tmp_path / "c" / "support.jsonl"
    ).read_bytes()


def test_paper_shape_without_split_file(tmp_path: Path) -> None:
    rows = [_row(f"w{w:02d}", f"t3_{w}_{i}") for w in range(45) for i in range(2)]
    source = _write(tmp_path / "batch1.jsonl", rows)
    options = BuildOptions(source=str(source), min_items=2, seed=0)
    manifest = build_tldr(options, tmp_path / "out")
    assert (len(manifest["train_user_ids"]), len(manifest["adapt_user_ids"])) == (10, 31)
    assert not set(manifest["train_user_ids"]) & set(manifest["adapt_user_ids"])


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "file.jsonl", [_row("w1", "t3_a"), _row("w1", "t3_b"), "{oops\n"])
    with pytest.raises(DataError) as err:
        load_tldr(path, progress=False)
    assert "file.jsonl:3" in str(err.value)


@pytest.mark.parametrize(
    ("drop", "field"), [("worker", "worker"), ("choice", "choice"), ("info.title", "info.title")]
)
def test_missing_field_is_an_error(tmp_path: Path, drop: str, field: str) -> None:
    bad = _row("w1", "t3_b")
    if drop.startswith("info."):
        del bad["info"][drop.removeprefix("info.")]
    else:
        del bad[drop]
    path = _write(tmp_path / "batch1.jsonl", [_row("w1", "t3_a"), bad])
    with pytest.raises(DataError) as err:
        load_tldr(path, progress=False)
    assert field in str(err.value)
    assert "batch1.jsonl:2" in str(err.value)


def test_wrong_layout_is_an_error(tmp_path: Path) -> None:
    bad = _row("w1", "t3_a")
    bad["summaries"] = bad["summaries"][:1]
    with pytest.raises(DataError, match="two objects"):
        load_tldr(_write(tmp_path / "batch1.jsonl", [bad]), progress=False)


def test_empty_values_are_skipped_and_counted(tmp_path: Path) -> None:
    cnn = _row("w1", "cnn-1")
    cnn["info"] = {"id": "cnn-1", "article": "News.", "site": "cnn"}
    no_worker = _row("w1", "t3_w")
    no_worker["worker"] = ""
    rows = [
        _row("w1", "t3_a"),
        _row("w1", "t3_b", texts=(" kept", "   ")),
        _row("w1", "t3_c", texts=(" same", "same ")),
        _row("w1", "t3_d", choice=2),
        cnn,
        no_worker,
        _row("w2", "t3_e", choice=1),
    ]
    prefs, skips, _ = load_tldr(_write(tmp_path / "batch1.jsonl", rows), progress=False)
    assert [p.id for p in prefs] == ["batch1:t3_a:w1:0", "batch1:t3_e:w2:0"]
    assert prefs[1].chosen == "second summary" and prefs[1].rejected == "first summary"
    assert skips.counts == {
        "empty summary text": 1,
        "identical chosen and rejected summaries": 1,
        "choice is not 0 or 1": 1,
        "not a Reddit post (a CNN/DM news article)": 1,
        "empty worker id": 1,
    }


def test_repeated_post_by_a_worker_gets_distinct_ids(tmp_path: Path) -> None:
    rows = [_row("w1", "t3_a"), _row("w1", "t3_a", texts=(" x", " y")), _row("w2", "t3_a")]
    prefs, _, _ = load_tldr(_write(tmp_path / "batch1.jsonl", rows), progress=False)
    assert [p.id for p in prefs] == ["batch1:t3_a:w1:0", "batch1:t3_a:w1:1", "batch1:t3_a:w2:0"]


def test_folder_reads_batch_files_only_in_name_order(tmp_path: Path) -> None:
    _write(tmp_path / "batch2.json", [_row("w2", "t3_b", batch="batch2")])
    _write(tmp_path / "batch1.jsonl", [_row("w1", "t3_a")])
    (tmp_path / "pal_worker_ids.json").write_text('{\n "summary_uids": []\n}\n')
    prefs, _, source = load_tldr(tmp_path, progress=False)
    assert [p.user for p in prefs] == ["w1", "w2"]
    assert [f["name"] for f in source["files"]] == ["batch1.jsonl", "batch2.json"]
    with pytest.raises(DataError, match="no comparison files"):
        load_tldr(tmp_path, progress=False, include=("*.csv",))


def test_hub_path_converts_rows_like_local_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    cnn = _row("w3", "cnn-1")
    cnn["info"] = {"id": "cnn-1", "post": None, "title": None, "subreddit": None}
    cnn["info"]["article"] = "News."
    rows = [_row("w1", "t3_a"), _row("w2", "t3_b", choice=1), _row("w1", "t3_c")]
    for row in rows:
        row["info"]["article"] = None
    calls = []

    def fake_load_dataset(path: str, name: str | None = None, **kwargs: Any) -> Any:
        calls.append((path, name))
        return datasets.DatasetDict(
            {
                "validation": datasets.Dataset.from_list([rows[2], cnn]),
                "train": datasets.Dataset.from_list(rows[:2]),
            }
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub_prefs, skips, source = load_tldr(None, progress=False)
    assert calls == [(HUB_ID, HUB_CONFIG)]
    assert source["hub"] == HUB_ID and source["rows"] == {"train": 2, "validation": 2}
    assert skips.counts == {"not a Reddit post (a CNN/DM news article)": 1}

    local_prefs, _, _ = load_tldr(_write(tmp_path / "batch1.jsonl", rows), progress=False)
    assert [p.to_json() for p in hub_prefs] == [p.to_json() for p in local_prefs]


def test_builder_is_registered() -> None:
    assert BUILDERS.get("tldr") is build_tldr
