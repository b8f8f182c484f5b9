"""Reddit TL;DR summary comparisons with labeler ids (Stiennon et al. 2020): loader and builder.

    prefs, skips, source = load_tldr("../shared/data/tldr")     # folder of batch files
    prefs[0].prompt.splitlines()[0]
    # 'SUBREDDIT: r/relationships'
    prefs, skips, source = load_tldr(None)   # hub: openai/summarize_from_feedback, comparisons
    BUILDERS.get("tldr")(BuildOptions(source="../shared/data/tldr",
        split_file="../shared/data/tldr/pal_worker_ids.json"), "out/tldr")

The user is the labeler (``worker``). Each comparison becomes one :class:`Preference`: the prompt
is the standard TL;DR prompt (:func:`tldr_prompt`), ``chosen`` is ``summaries[choice].text`` and
``rejected`` the other summary, both stripped of surrounding whitespace (the originals start with
a space: join prompt and response with a space, or use a chat template). Ids are
``{batch}:{post id}:{worker}:{n}``, ``n`` counting earlier comparisons of the same post by the same
worker in the same batch (workers do rate a post more than once), so ids are stable and unique.

A local folder is read in file-name order: the files whose names contain ``batch`` and end in
``.jsonl`` or ``.json`` (the originals are JSON lines named ``batchN.json``), or those matching
``include`` globs. Other files (e.g. ``pal_worker_ids.json``) are ignored.

A missing field or a wrong layout raises DataError with file and line (hub: split and row index).
An empty value is skipped and counted: empty worker id, a comparison of a news article rather than
a Reddit post (CNN/DM), an empty summary, identical summaries, a choice other than 0 or 1. TL;DR
has no per-worker written summaries, so the benchmark has no completions.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from persalign.data.registry import BUILDERS, BuildOptions, with_defaults
from persalign.data.splits import write_preference_benchmark
from persalign.errors import DataError
from persalign.io import SkipReport, read_jsonl, sha256_file
from persalign.logs import track
from persalign.types import Preference

log = logging.getLogger(__name__)

HUB_ID = "openai/summarize_from_feedback"
HUB_CONFIG = "comparisons"
PAPER_SHAPE = (10, 31)  # TL;DR in the paper (PAL's split): 10 train, 31 adaptation workers
REQUIRED = ("info", "summaries", "choice", "worker", "batch")
INFO_REQUIRED = ("id", "post", "title", "subreddit")
FILE_PATTERNS = ("*batch*.jsonl", "*batch*.json")

Where = tuple[str, int]  # (file or hub split, line or row number) for error messages


def tldr_prompt(subreddit: str, title: str, post: str) -> str:
    """The standard TL;DR summarization prompt; the summary follows ``TL;DR:``."""
    return f"SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:"


def load_tldr(
    source: str | Path | None, *, progress: bool = True, include: Sequence[str] = ()
) -> tuple[list[Preference], SkipReport, dict[str, Any]]:
    """Preferences, what was skipped, and where they came from (for the manifest).

    ``source``: a folder of batch files, one JSON-lines file, or None for the hub.
    """
    skips = SkipReport()
    converter = _Converter(skips)
    if source is None:
        hub_prefs, hub_info = _load_hub(converter, progress=progress)
        return hub_prefs, skips, hub_info
    files = _source_files(Path(source), include)
    prefs: list[Preference] = []
    file_info = []
    for file in files:
        before = len(prefs)
        rows = read_jsonl(file, REQUIRED, kind="comparison", empty_ok=False)
        desc = f"reading {file.name}"
        for line_no, row in track(rows, desc, None, progress):
            pref = converter.convert(row, (str(file), line_no))
            if pref is not None:
                prefs.append(pref)
        kept = len(prefs) - before
        file_info.append({"name": file.name, "sha256": sha256_file(file), "preferences": kept})
    log.info("TL;DR: %d comparisons from %d file(s)", len(prefs), len(files))
    return prefs, skips, {"kind": "tldr", "path": str(source), "files": file_info}


@BUILDERS.register(
    "tldr", summary="Reddit TL;DR summary comparisons, one user per labeler (PAL's split)"
)
def build_tldr(options: BuildOptions, out: str | Path) -> dict[str, Any]:
    """TL;DR benchmark: users from ``split_file`` (PAL's seen/unseen) or a seeded split."""
    options = with_defaults(options, min_items=10)
    prefs, skips, source = load_tldr(options.source, include=options.include)
    return write_preference_benchmark(
        "tldr", prefs, skips, options, out, source=source, paper_shape=PAPER_SHAPE
    )


def _source_files(path: Path, include: Sequence[str]) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError("no such file or folder (expected TL;DR comparison batches)", path)
    patterns = include or FILE_PATTERNS
    files = sorted({f for pattern in patterns for f in path.glob(pattern) if f.is_file()})
    if not files:
        raise DataError(
            f"no comparison files matching {', '.join(patterns)} (JSON lines, one per batch)", path
        )
    return files


class _Converter:
    """Turns raw comparison rows into preferences, counting repeats for unique ids."""

    def __init__(self, skips: SkipReport):
        self.skips = skips
        self.seen: Counter[tuple[str, str, str]] = Counter()

    def convert(self, row: dict[str, Any], where: Where) -> Preference | None:
        info = _field(row, "info", dict, where)
        if info.get("post") is None and info.get("article") is not None:
            self.skips.add("not a Reddit post (a CNN/DM news article)", str(info.get("id")))
            return None
        for key in INFO_REQUIRED:
            if key not in info:
                raise DataError(f"comparison is missing field: info.{key}", *where)
        summaries = _field(row, "summaries", list, where)
        if len(summaries) != 2 or not all(isinstance(s, dict) for s in summaries):
            raise DataError("field 'summaries' must be a list of two objects", *where)
        for i, summary in enumerate(summaries):
            if "text" not in summary:
                raise DataError(f"comparison is missing field: summaries[{i}].text", *where)
        batch = str(row["batch"])
        post_id = str(info["id"])
        worker = _text(row["worker"], "worker", where)
        key = (batch, post_id, worker)
        pref_id = f"{batch}:{post_id}:{worker}:{self.seen[key]}"
        self.seen[key] += 1

        choice = row["choice"]
        post = _text(info["post"], "info.post", where)
        texts = [_text(s["text"], f"summaries[{i}].text", where) for i, s in enumerate(summaries)]
        reason = None
        if not worker:
            reason = "empty worker id"
        elif not post:
            reason = "empty post text"
        elif type(choice) is not int or choice not in (0, 1):
            reason = "choice is not 0 or 1"
        elif not all(texts):
            reason = "empty summary text"
        elif texts[0] == texts[1]:
            reason = "identical chosen and rejected summaries"
        if reason is not None:
            self.skips.add(reason, pref_id)
            return None

        subreddit = _text(info["subreddit"], "info.subreddit", where)
        title = _text(info["title"], "info.title", where)
        extra = row.get("extra")
        return Preference(
            id=pref_id,
            user=worker,
            prompt=tldr_prompt(subreddit, title, post),
            chosen=texts[choice],
            rejected=texts[1 - choice],
            meta={
                "post_id": post_id,
                "subreddit": subreddit,
                "batch": batch,
                "split": row.get("split"),
                "policies": {
                    "chosen": summaries[choice].get("policy"),
                    "rejected": summaries[1 - choice].get("policy"),
                },
                "confidence": extra.get("confidence") if isinstance(extra, dict) else None,
            },
        )


def _field(row: dict[str, Any], key: str, kind: type, where: Where) -> Any:
    value = row[key]
    if not isinstance(value, kind):
        raise DataError(f"field {key!r} must be a JSON {kind.__name__}", *where)
    return value


def _text(value: Any, name: str, where: Where) -> str:
    """A string field, stripped; None reads as empty (the hub's missing values)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"field {name!r} must be a string, got {type(value).__name__}", *where)
    return value.strip()


def _load_hub(converter: _Converter, *, progress: bool) -> tuple[list[Preference], dict[str, Any]]:
    import datasets  # imported here: only the hub path needs it

    dataset = datasets.load_dataset(HUB_ID, HUB_CONFIG)
    prefs = []
    rows_per_split = {}
    for split in sorted(dataset):
        name = f"{HUB_ID}[{split}]"
        rows = dataset[split]
        rows_per_split[split] = len(rows)
        for index, row in enumerate(track(rows, f"reading {name}", len(rows), progress)):
            missing = [key for key in REQUIRED if key not in row]
            if missing:
                raise DataError(
                    f"comparison is missing field(s): {', '.join(missing)}", name, index
                )
            pref = converter.convert(row, (name, index))
            if pref is not None:
                prefs.append(pref)
    log.info("TL;DR: %d comparisons from the hub (%s)", len(prefs), HUB_ID)
    return prefs, {"kind": "tldr", "hub": HUB_ID, "config": HUB_CONFIG, "rows": rows_per_split}
