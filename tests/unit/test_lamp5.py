"""LaMP-5 loader on fixtures written here in the official schema (questions + outputs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from persalign.data.lamp5 import LAMP5_INSTRUCTION, load_lamp5, parse_year, question_abstract
from persalign.errors import ConfigError, DataError, DownloadError


def _item(pid: str, title: str = "", abstract: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "title": title or f"Title {pid}",
        "abstract": abstract or f"Abstract {pid}.",
        "id": pid,
        **extra,
    }


QUESTIONS = [
    {
        "id": "310",
        "input": LAMP5_INSTRUCTION + "We study  personalized\ntitles.",
        "profile": [
            _item("3100"),
            _item("3101"),
            _item("9999", "Shared Paper", "Shared abstract."),
        ],
    },
    {
        "id": "311",
        "input": LAMP5_INSTRUCTION + "Another abstract.",
        "profile": [
            _item("3110"),
            _item("9999", "Shared Paper", "Shared abstract."),
            _item("3111", title=" ", abstract="Has no title."),
            _item("3112", "Dated", "Has a date.", date="2019-05-01"),
        ],
    },
    {
        "id": "312",
        "input": LAMP5_INSTRUCTION + "Leaked abstract.",
        "profile": [_item("3120", "Gold Title Leak", "Old abstract.")],
    },
]
GOLDS = {
    "task": "LaMP_5",
    "golds": [
        {"id": "310", "output": "Personalized Titles"},
        {"id": "311", "output": "Another Title"},
        {"id": "312", "output": "gold title leak"},
    ],
}


def _write(
    folder: Path, split: str = "dev", questions: Any = QUESTIONS, golds: Any = GOLDS
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}_questions.json").write_text(json.dumps(questions), encoding="utf-8")
    if golds is not None:
        (folder / f"{split}_outputs.json").write_text(json.dumps(golds), encoding="utf-8")
    return folder


def test_load_users_papers_and_question_papers(tmp_path: Path):
    corpus = load_lamp5(_write(tmp_path / "lamp"), progress=False)
    assert sorted(corpus.authors) == ["lamp5:310", "lamp5:311", "lamp5:312"]
    assert corpus.authors["lamp5:310"] == ["3100", "3101", "9999", "310"]
    question = corpus.papers["310"]
    assert question.title == "Personalized Titles"
    assert question.abstract == "We study personalized titles."  # instruction stripped
    assert corpus.papers["3100"].title == "Title 3100"
    assert corpus.papers["3112"].year == 2019
    assert corpus.papers["3100"].year is None
    assert corpus.source["questions_read"] == 3
    assert corpus.source["profile_items_read"] == 8
    assert corpus.source["outputs"].endswith("dev_outputs.json")


def test_shared_profile_item_is_one_paper_with_two_authors(tmp_path: Path):
    corpus = load_lamp5(_write(tmp_path), progress=False)
    assert corpus.writers()["9999"] == {"lamp5:310", "lamp5:311"}
    assert list(corpus.papers).count("9999") == 1


def test_empty_title_and_gold_leak_are_skipped_and_counted(tmp_path: Path):
    corpus = load_lamp5(_write(tmp_path), progress=False)
    skips = corpus.skips.to_json()
    assert skips["profile item with empty title"] == {"count": 1, "examples": ["311/3111"]}
    assert "3111" not in corpus.papers
    # question 312's gold title is already in its profile (case aside): not added twice
    assert skips["question whose gold title is already in its profile"]["examples"] == ["312"]
    assert corpus.authors["lamp5:312"] == ["3120"]


def test_without_outputs_questions_are_not_papers(tmp_path: Path):
    corpus = load_lamp5(_write(tmp_path, golds=None), progress=False)
    assert "310" not in corpus.papers
    assert corpus.authors["lamp5:310"] == ["3100", "3101", "9999"]
    assert corpus.source["outputs"] is None


def test_reused_id_with_different_text_is_skipped(tmp_path: Path):
    questions = [
        {"id": "1", "input": LAMP5_INSTRUCTION + "x", "profile": [_item("7", "One", "A.")]},
        {"id": "2", "input": LAMP5_INSTRUCTION + "y", "profile": [_item("7", "Other", "B.")]},
    ]
    corpus = load_lamp5(_write(tmp_path, questions=questions, golds=None), progress=False)
    assert corpus.papers["7"].title == "One"
    assert corpus.authors["lamp5:2"] == []
    assert corpus.skips.counts["paper id reused with a different title or abstract"] == 1


@pytest.mark.parametrize(
    ("questions", "message"),
    [
        ([QUESTIONS[0], {"id": "9", "input": "x"}], r"item 1 is missing field\(s\): profile"),
        (
            [{"id": "9", "input": "x", "profile": [_item("1"), {"id": "2", "title": "T"}]}],
            r"item 0 \(question '9'\), profile item 1 is missing field\(s\): abstract",
        ),
        (
            [{"id": "9", "input": "x", "profile": {"a": 1}}],
            "item 0: field 'profile' must be a list",
        ),
        ({"questions": []}, "expected a JSON list of questions"),
        ([QUESTIONS[0], QUESTIONS[0]], "item 1: question id '310' appears twice"),
    ],
)
def test_bad_questions_name_file_and_item(tmp_path: Path, questions: Any, message: str):
    folder = _write(tmp_path, questions=questions, golds=None)
    with pytest.raises(DataError, match=message) as info:
        load_lamp5(folder, progress=False)
    assert info.value.path == str(folder / "dev_questions.json")


def test_syntax_error_and_bad_outputs(tmp_path: Path):
    folder = _write(tmp_path)
    (folder / "dev_questions.json").write_text('[\n{"id": "1",\n "input": }\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"dev_questions\.json:3: malformed JSON"):
        load_lamp5(folder, progress=False)
    _write(folder, golds={"task": "LaMP_5", "golds": [{"id": "310"}]})
    with pytest.raises(DataError, match=r"dev_outputs\.json: golds item 0 is missing"):
        load_lamp5(folder, progress=False)
    _write(folder, golds={"task": "LaMP_4", "golds": []})
    with pytest.raises(DataError, match="not LaMP_5"):
        load_lamp5(folder, progress=False)


def test_folder_layouts_and_errors(tmp_path: Path):
    _write(tmp_path / "release" / "LaMP_5" / "train", split="train")
    corpus = load_lamp5(tmp_path / "release", split="train", progress=False)
    assert corpus.source["split"] == "train" and len(corpus.authors) == 3
    questions_file = tmp_path / "release" / "LaMP_5" / "train" / "train_questions.json"
    assert load_lamp5(questions_file, progress=False).source["questions"] == str(questions_file)
    with pytest.raises(DataError, match="no LaMP-5 questions file") as info:
        load_lamp5(tmp_path / "release", split="dev", progress=False)
    assert info.value.path == str(tmp_path / "release")
    with pytest.raises(ConfigError, match="unknown LaMP-5 split"):
        load_lamp5(tmp_path, split="validation", progress=False)


def test_download_into_the_cache_from_a_file_url(tmp_path: Path, monkeypatch):
    host = tmp_path / "host"
    _write(host / "time" / "LaMP_5" / "dev")
    monkeypatch.setenv("PERSALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PERSALIGN_LAMP5_DIR", raising=False)
    corpus = load_lamp5(None, variant="time", base_url=host.as_uri(), progress=False)
    assert corpus.source["url"] == host.as_uri()
    assert Path(corpus.source["questions"]).is_relative_to(tmp_path / "cache" / "lamp5")
    assert "310" in corpus.papers
    # the user-based files are not on this host: the error names the URL
    with pytest.raises(DownloadError, match=r"LaMP_5/dev/dev_questions\.json: download failed"):
        load_lamp5(None, base_url=host.as_uri(), progress=False)


def test_download_rejects_an_html_error_page(tmp_path: Path, monkeypatch):
    host = tmp_path / "host" / "LaMP_5" / "dev"
    host.mkdir(parents=True)
    (host / "dev_questions.json").write_text("<!DOCTYPE html><p>Moved</p>", encoding="utf-8")
    monkeypatch.setenv("PERSALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PERSALIGN_LAMP5_URL", (tmp_path / "host").as_uri())
    monkeypatch.delenv("PERSALIGN_LAMP5_DIR", raising=False)
    with pytest.raises(DownloadError, match="returned an HTML page, not data"):
        load_lamp5(None, progress=False)
    assert not list((tmp_path / "cache").rglob("dev_questions.json"))


def test_helpers():
    assert question_abstract(LAMP5_INSTRUCTION + "Body.") == "Body."
    assert (
        question_abstract("Generate a title for the following abstract of a paper:Body") == "Body"
    )
    assert question_abstract("Summarize: x") is None
    assert parse_year("May 2017") == 2017
    assert parse_year(2020) == 2020
    assert parse_year("12345") is None
    assert parse_year(None) is None
