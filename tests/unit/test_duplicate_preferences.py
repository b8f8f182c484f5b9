"""Duplicate preferences never leak from a user's support set into its query set (issue 26).

Every builder's input gets exact duplicates (same user, prompt, chosen and rejected), written the
way that builder's own tests write its input: ``jsonl`` rows; TL;DR's shared batch with rows
repeated; PRISM conversations in the real schema, repeated under another id; LaMP-5 profiles and
an ACL Anthology collection (shared data) copied under another collection id, each paper then
twice per author with the same mined negative (``negatives_top_k=1``). The build must drop every
copy but the first, count them in the manifest's ``skipped``, and leave no pair in both the
support and the query set of any user (nor twice anywhere in the benchmark).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from persalign.data import BUILDERS, BuildOptions
from persalign.data.benchmark_folder import load_benchmark
from persalign.data.lamp5 import LAMP5_INSTRUCTION
from persalign.data.splits import DUPLICATE_REASON
from persalign.data.tldr import load_tldr
from persalign.types import Preference

from .test_builder import fake_embedder  # noqa: F401 - the fixture, used by name
from .test_jsonl_builder import own_rows, write_rows
from .test_prism import _conversation
from .test_prism import _write as write_prism


def key(pref: Preference) -> tuple[str, str, str, str]:
    return (pref.user, pref.prompt, pref.chosen, pref.rejected)


def check_no_leak(out: Path, manifest: dict[str, Any], dropped: int | None = None) -> None:
    """No pair in a user's support and query sets, none twice anywhere; copies counted."""
    bench = load_benchmark(out)
    support = {key(p) for p in bench.support}
    query = {key(p) for p in bench.query}
    assert bench.support and bench.query
    assert not support & query, sorted(support & query)[:2]
    everything = Counter(key(p) for p in [*bench.train, *bench.support, *bench.query])
    assert max(everything.values()) == 1
    skipped = manifest["skipped"][DUPLICATE_REASON]
    assert skipped["count"] > 0
    if dropped is not None:
        assert skipped["count"] == dropped
    assert "repeats" in skipped["examples"][0]


def test_jsonl_duplicates_are_dropped_counted_and_logged(tmp_path: Path, caplog) -> None:
    rows = own_rows(users=6, items=4)
    rows += rows[:12] + rows[:3]  # 15 copies: every user has some, three users twice over
    source = write_rows(tmp_path / "prefs.jsonl", rows)
    options = BuildOptions(source=str(source), min_items=2, adapt_users=3, seed=1)
    with caplog.at_level("WARNING"):
        manifest = BUILDERS.get("jsonl")(options, tmp_path / "out")
    check_no_leak(tmp_path / "out", manifest, dropped=15)
    assert (
        manifest["counts"]["train_preferences"]
        + manifest["counts"]["support_preferences"]
        + (manifest["counts"]["query_preferences"])
        == len(rows) - 15
    )
    assert f"skipped 15: {DUPLICATE_REASON}" in caplog.text


def test_tldr_repeated_comparisons(shared_data: Path, tmp_path: Path) -> None:
    batch = (shared_data / "tldr" / "comparisons_batch13.jsonl").read_text(encoding="utf-8")
    lines = batch.splitlines(keepends=True)
    (tmp_path / "tldr").mkdir()
    (tmp_path / "tldr" / "comparisons_batch13.jsonl").write_text(
        "".join(lines + lines[::7]), encoding="utf-8"
    )
    prefs, _, _ = load_tldr(shared_data / "tldr" / "comparisons_batch13.jsonl", progress=False)
    already = len(prefs) - len({key(p) for p in prefs})  # raters do repeat themselves
    options = BuildOptions(source=str(tmp_path / "tldr"), min_items=5, seed=0)
    manifest = BUILDERS.get("tldr")(options, tmp_path / "out")
    check_no_leak(tmp_path / "out", manifest, dropped=already + len(lines[::7]))


def test_prism_repeated_conversations(tmp_path: Path) -> None:
    records = []
    for u in range(5):
        for c in range(3):
            cells = [(t, i) for t in range(2) for i in (-1, 0, 1, 2)]
            texts = {(t, i): f"u{u} c{c} turn {t} text {i}" for t, i in cells}
            conv = _conversation(f"u{u}c{c}", f"user{u}", [3, 2], texts=texts)
            records.append(conv)
            records.append({**conv, "conversation_id": f"u{u}c{c}-again"})  # same texts
    write_prism(tmp_path / "prism", records)
    options = BuildOptions(source=str(tmp_path / "prism"), min_items=3, adapt_users=2, seed=0)
    manifest = BUILDERS.get("prism")(options, tmp_path / "out")
    check_no_leak(tmp_path / "out", manifest, dropped=5 * 3 * 3)  # 3 pairs a conversation


def _lamp_questions(users: int, papers: int) -> list[dict[str, Any]]:
    """LaMP-5 questions (official schema) whose profiles list every paper twice, under two ids."""
    questions = []
    for u in range(users):
        profile = []
        for i in range(papers):
            topic = ("parsing", "speech", "translation")[(u + i) % 3]
            item = {"title": f"Study {u}-{i} of {topic}", "abstract": f"We study {topic} {u} {i}."}
            profile += [{**item, "id": f"{u}{i:02d}0"}, {**item, "id": f"{u}{i:02d}1"}]
        questions.append(
            {"id": f"q{u}", "input": LAMP5_INSTRUCTION + f"Question {u}.", "profile": profile}
        )
    return questions


@pytest.mark.usefixtures("fake_embedder")
def test_pref_lamp_twice_listed_papers(tmp_path: Path) -> None:
    lamp = tmp_path / "lamp"
    lamp.mkdir()
    (lamp / "dev_questions.json").write_text(json.dumps(_lamp_questions(6, 3)), encoding="utf-8")
    golds = {"task": "LaMP_5", "golds": [{"id": f"q{u}", "output": f"Gold {u}"} for u in range(6)]}
    (lamp / "dev_outputs.json").write_text(json.dumps(golds), encoding="utf-8")
    options = BuildOptions(source=str(lamp), min_items=3, adapt_users=2, negatives_top_k=1, seed=0)
    manifest = BUILDERS.get("pref-lamp")(options, tmp_path / "out")
    check_no_leak(tmp_path / "out", manifest, dropped=6 * 3)


@pytest.mark.usefixtures("fake_embedder")
def test_pref_acl_collection_copied_under_another_id(shared_data: Path, tmp_path: Path) -> None:
    real = shared_data / "acl_anthology"
    (tmp_path / "acl" / "xml").mkdir(parents=True)
    shutil.copytree(real / "yaml", tmp_path / "acl" / "yaml")
    text = (real / "xml" / "2018.eamt.xml").read_text(encoding="utf-8")
    (tmp_path / "acl" / "xml" / "2018.eamt.xml").write_text(text, encoding="utf-8")
    copy = text.replace('<collection id="2018.eamt">', '<collection id="2018.eamtcopy">', 1)
    assert copy != text
    (tmp_path / "acl" / "xml" / "2018.eamtcopy.xml").write_text(copy, encoding="utf-8")
    # users with 2+ papers (4+ with the copies): 29 in this collection
    options = BuildOptions(
        source=str(tmp_path / "acl"), min_items=4, adapt_users=8, negatives_top_k=1, seed=0
    )
    manifest = BUILDERS.get("pref-acl")(options, tmp_path / "out")
    check_no_leak(tmp_path / "out", manifest)
    written = manifest["counts"]
    kept = written["train_preferences"] + written["support_preferences"]
    kept += written["query_preferences"]
    assert manifest["skipped"][DUPLICATE_REASON]["count"] == kept  # every paper came twice
