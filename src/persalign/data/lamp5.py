"""LaMP-5 (personalized scholarly title generation) -> an author corpus (Pref-LaMP).

    corpus = load_lamp5("data/LaMP_5", split="dev")
    corpus.authors["lamp5:310"][:3]        # paper ids of question 310's user
    corpus = load_lamp5(None, split="train", variant="time")   # downloaded into the cache

The official files: ``{split}_questions.json``, a JSON list of ``{"id", "input", "profile"}``
(``input`` = the LaMP-5 instruction + the abstract; ``profile`` = ``[{"id", "title", "abstract"},
...]``), and ``{split}_outputs.json``, ``{"task": "LaMP_5", "golds": [{"id", "output"}, ...]}``.
A local ``source`` is a folder holding them (directly, under ``{split}/`` or under
``LaMP_5/{split}/``) or the questions file itself; the outputs file is optional. Without a source
(and without ``$PERSALIGN_LAMP5_DIR``) the files are downloaded once into
``$PERSALIGN_CACHE/lamp5/`` from ``base_url`` (else ``$PERSALIGN_LAMP5_URL``, else the official
host; ``variant="time"`` takes the time-based split), with the HTML-error-page check.

Users and papers: one user per question, keyed ``lamp5:<question id>``; the user's papers are the
profile items (``Paper.id`` = item id, so an id in several profiles is one paper with several
authors). The question itself becomes one more paper of its user when its gold title is known
(outputs file): ``id`` = question id, ``abstract`` = ``input`` without the instruction, ``title``
= the gold, except when that title is already in the user's profile (LaMP's gold leakage).
A profile item's ``date`` (some variants) gives the year, else ``year=None``.

Empty titles or abstracts, and a paper id reused with different text, are skipped and counted.
A missing field or a wrong type raises DataError naming the file and the list index (``item N``).
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from persalign.data.corpus import Corpus, Paper
from persalign.data.download import fetch_once
from persalign.errors import ConfigError, DataError
from persalign.io import read_json
from persalign.logs import progress_bar
from persalign.models.cache import cache_dir, sanitize_key

log = logging.getLogger(__name__)

LAMP5_DIR_ENV = "PERSALIGN_LAMP5_DIR"
LAMP5_URL_ENV = "PERSALIGN_LAMP5_URL"
DEFAULT_LAMP5_URL = "https://ciir.cs.umass.edu/downloads/LaMP"
LAMP5_INSTRUCTION = "Generate a title for the following abstract of a paper: "
SPLITS = ("train", "dev", "test")  # test golds are withheld by LaMP
VARIANTS = {"user": "LaMP_5", "time": "time/LaMP_5"}  # user-based and time-based splits
KNOWN_SIZES = {("user", "dev_questions.json"): 272_410_629, ("user", "dev_outputs.json"): 248_614}


def question_abstract(text: str) -> str | None:
    """The abstract inside a LaMP-5 ``input`` (None when the instruction is not there)."""
    if text.startswith(LAMP5_INSTRUCTION):
        return text[len(LAMP5_INSTRUCTION) :]
    marker = "abstract of a paper:"
    at = text.find(marker)
    return text[at + len(marker) :] if at >= 0 else None


def parse_year(value: Any) -> int | None:
    """A year from a ``date`` field: an int, or the first plausible 4-digit year in a string."""
    if isinstance(value, int) and not isinstance(value, bool) and 1000 <= value <= 2999:
        return value
    if isinstance(value, str):
        found = re.search(r"(?<!\d)(1[5-9]\d\d|20\d\d)(?!\d)", value)
        return int(found.group(1)) if found else None
    return None


def _clean(value: Any, field: str, path: Path, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} must be a string", path)
    return " ".join(value.split())


def _require(obj: Any, fields: tuple[str, ...], path: Path, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}", path)
    missing = [key for key in fields if key not in obj]
    if missing:
        raise DataError(f"{where} is missing field(s): {', '.join(missing)}", path)
    return obj


def find_files(source: Path, split: str) -> tuple[Path, Path | None]:
    """(questions file, outputs file or None) for a folder or a questions file."""
    if source.is_file():
        questions = source
        outputs = source.with_name(source.name.replace("_questions", "_outputs"))
    elif source.is_dir():
        name = f"{split}_questions.json"
        folders = [source, source / split, source / "LaMP_5" / split]
        found = [folder / name for folder in folders if (folder / name).is_file()]
        if not found:
            looked = f"{name}, {split}/{name}, LaMP_5/{split}/{name}"
            raise DataError(
                f"no LaMP-5 questions file in this folder (looked for {looked})", source
            )
        questions = found[0]
        outputs = questions.with_name(f"{split}_outputs.json")
    else:
        raise DataError("no such file or folder (expected the LaMP-5 questions file)", source)
    return questions, (outputs if outputs != questions and outputs.is_file() else None)


def read_golds(path: Path) -> dict[str, str]:
    """Question id -> gold title, from ``{split}_outputs.json``."""
    data = _require(read_json(path), ("golds",), path, "the outputs file")
    task = data.get("task")
    if task is not None and str(task).replace("-", "_") != "LaMP_5":
        raise DataError(f"outputs are for task {task!r}, not LaMP_5", path)
    if not isinstance(data["golds"], list):
        raise DataError("field 'golds' must be a list", path)
    golds = {}
    for index, gold in enumerate(data["golds"]):
        where = f"golds item {index}"
        gold = _require(gold, ("id", "output"), path, where)
        golds[str(gold["id"])] = _clean(gold["output"], "output", path, where)
    return golds


def _add(corpus: Corpus, paper: Paper, user: str) -> bool:
    known = corpus.papers.get(paper.id)
    if known is not None and (known.title, known.abstract) != (paper.title, paper.abstract):
        corpus.skips.add("paper id reused with a different title or abstract", paper.id)
        return False
    corpus.add_paper(paper, [user])
    return True


def _read_question(
    corpus: Corpus, question: Any, index: int, path: Path, golds: dict[str, str] | None
) -> int:
    """Add one question's user and papers; returns the number of profile items read."""
    where = f"item {index}"
    question = _require(question, ("id", "input", "profile"), path, where)
    qid = str(question["id"])
    user = f"lamp5:{qid}"
    if user in corpus.authors:
        raise DataError(f"{where}: question id {qid!r} appears twice", path)
    profile = question["profile"]
    if not isinstance(profile, list):
        raise DataError(f"{where}: field 'profile' must be a list", path)
    skips = corpus.skips
    own_titles = set()
    for number, item in enumerate(profile):
        at = f"{where} (question {qid!r}), profile item {number}"
        item = _require(item, ("id", "title", "abstract"), path, at)
        title = _clean(item["title"], "title", path, at)
        abstract = _clean(item["abstract"], "abstract", path, at)
        example = f"{qid}/{item['id']}"
        if not title:
            skips.add("profile item with empty title", example)
        elif not abstract:
            skips.add("profile item with empty abstract", example)
        else:
            own_titles.add(title.casefold())
            _add(
                corpus, Paper(str(item["id"]), title, abstract, parse_year(item.get("date"))), user
            )
    if golds is not None:
        gold = golds.get(qid, "")
        text = _clean(question["input"], "input", path, where)
        abstract = question_abstract(text)
        if not gold:
            skips.add("question without a gold title", qid)
        elif abstract is None or not abstract.strip():
            skips.add("question input without the LaMP-5 instruction and abstract", qid)
        elif gold.casefold() in own_titles:
            skips.add("question whose gold title is already in its profile", qid)
        else:
            _add(corpus, Paper(qid, gold, abstract.strip(), parse_year(question.get("date"))), user)
    corpus.authors.setdefault(user, [])  # a user even when all of their items were skipped
    return len(profile)


def download_lamp5(
    split: str = "dev", *, variant: str = "user", base_url: str | None = None, progress: bool = True
) -> Path:
    """The folder in the cache holding ``{split}_questions.json`` (and outputs, except test)."""
    base = (base_url or os.environ.get(LAMP5_URL_ENV) or DEFAULT_LAMP5_URL).rstrip("/")
    folder = cache_dir() / "lamp5" / sanitize_key(base) / variant / split
    names = [f"{split}_questions.json"] + ([f"{split}_outputs.json"] if split != "test" else [])
    for name in names:
        fetch_once(
            f"{base}/{VARIANTS[variant]}/{split}/{name}",
            folder / name,
            kind="json",
            expected_size=KNOWN_SIZES.get((variant, name)) if base == DEFAULT_LAMP5_URL else None,
            progress=progress,
        )
    return folder


def load_lamp5(
    source: str | Path | None = None,
    *,
    split: str = "dev",
    variant: str = "user",
    base_url: str | None = None,
    progress: bool = True,
) -> Corpus:
    """Read LaMP-5 questions (+ outputs when present) into a Corpus; see the module docstring."""
    if split not in SPLITS:
        raise ConfigError(f"unknown LaMP-5 split {split!r} (known: {', '.join(SPLITS)})")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown LaMP-5 variant {variant!r} (known: {', '.join(VARIANTS)})")
    url = None
    if source is None:
        source = os.environ.get(LAMP5_DIR_ENV) or None
    if source is None:
        url = (base_url or os.environ.get(LAMP5_URL_ENV) or DEFAULT_LAMP5_URL).rstrip("/")
        source = download_lamp5(split, variant=variant, base_url=url, progress=progress)
    questions_path, outputs_path = find_files(Path(source), split)
    golds = read_golds(outputs_path) if outputs_path is not None else None
    questions = read_json(questions_path)
    if not isinstance(questions, list):
        raise DataError("expected a JSON list of questions", questions_path)
    corpus = Corpus(source={})
    items = 0
    bar = progress_bar(transient=True) if progress else None
    with bar or nullcontext():
        task = bar.add_task("reading LaMP-5 profiles", total=len(questions)) if bar else None
        for index, question in enumerate(questions):
            items += _read_question(corpus, question, index, questions_path, golds)
            if bar is not None and task is not None:
                bar.advance(task)
    if golds is None:
        log.warning("no outputs file beside %s: questions are not added as papers", questions_path)
    corpus.source = {
        "kind": "lamp5",
        "split": split,
        "variant": variant,
        "questions": str(questions_path),
        "outputs": None if outputs_path is None else str(outputs_path),
        "url": url,
        "questions_read": len(questions),
        "profile_items_read": items,
    }
    log.info(
        "read %d LaMP-5 questions: %d papers, %d users",
        len(questions),
        len(corpus.papers),
        len(corpus.authors),
    )
    return corpus
