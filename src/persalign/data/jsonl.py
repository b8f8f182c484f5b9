"""Your own users' preferences from JSON-lines files: the ``jsonl`` builder.

    persalign data build jsonl --source prefs.jsonl --completions completions.jsonl --out out/own

    data = load_own_data("prefs.jsonl", "completions.jsonl")    # docs/own-data.md's files
    data.preferences[0].id, data.skips.to_json()["chosen equals rejected"]
    # ('ana/0', {'count': 1, 'examples': ['prefs.jsonl:4']})
    BUILDERS.get("jsonl")(BuildOptions(source="prefs.jsonl", min_items=3), "out/own")

Preference records, one JSON object a line: ``user`` (a string or an integer), ``prompt``,
``chosen`` and ``rejected`` (strings; ``chosen`` is the response the user preferred). Optional:
``id`` (a unique string; default ``{user}/{n}``, ``n`` counting that user's records in file order
from 0) and ``time`` (a number such as a Unix time, or an ISO 8601 date or date-time, read as UTC
without an offset; kept in ``meta["time"]``, strings as UTC ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``).
``--split time`` needs a ``time`` on every record and puts each user's latest items in query.
Other keys are ignored. User ids are stripped of surrounding whitespace; texts are kept exactly
as written. ``meta["line"]`` of a preference (and of its completion) is its line in its file.

Completion records (``--completions``): ``user``, ``prompt``, ``completion``: the user's own
response to that prompt. It becomes the ground truth (a :class:`Completion`) of each of that user's
query preferences with exactly that prompt; completions of train users or of support prompts are
not written.

Errors (DataError naming the file and line; nothing is written): a line that is not JSON or not
an object, a missing field, a wrong type, a ``time`` that is neither a finite number nor an ISO
8601 string, numbers and strings mixed as ``time``, a repeated ``id``, a second completion for the
same user and prompt, a record without ``time`` under ``--split time``, an empty file.

Skipped, counted in the manifest's ``skipped`` and on the console (examples are ``file:line``):
an empty (or whitespace-only) user id, prompt, chosen, rejected or completion text, chosen equal to
rejected (ignoring surrounding whitespace), an exact repeat of an earlier record (same user,
prompt, chosen and rejected: ``write_preference_benchmark`` keeps the first), users below
``--min-items`` (default 10), completions
of a user with no preference, completions of a prompt the user has no preference on.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from persalign.data.registry import BUILDERS, BuildOptions, with_defaults
from persalign.data.splits import write_preference_benchmark
from persalign.errors import ConfigError, DataError
from persalign.io import SkipReport, read_jsonl, sha256_file
from persalign.logs import track
from persalign.types import Completion, Preference

log = logging.getLogger(__name__)

PREFERENCE_FIELDS = ("user", "prompt", "chosen", "rejected")
COMPLETION_FIELDS = ("user", "prompt", "completion")
DEFAULT_MIN_ITEMS = 10  # as TL;DR and Pref-LaMP
EMPTY_REASONS = {
    "prompt": "empty prompt",
    "chosen": "empty chosen response",
    "rejected": "empty rejected response",
}


@dataclass
class OwnData:
    """What the two files hold: preferences, completions keyed by preference id, skips, source."""

    preferences: list[Preference] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)
    skips: SkipReport = field(default_factory=SkipReport)
    source: dict[str, Any] = field(default_factory=dict)


@BUILDERS.register("jsonl", summary="Your own users: {user, prompt, chosen, rejected} JSON lines")
def build_jsonl(options: BuildOptions, out: str | Path) -> dict[str, Any]:
    """A benchmark from your own preference file (and completions file), split like the others."""
    options = with_defaults(options, min_items=DEFAULT_MIN_ITEMS)
    if options.source is None:
        raise ConfigError(
            "jsonl needs --source: a JSON-lines file of {user, prompt, chosen, rejected} records"
        )
    data = load_own_data(options.source, options.completions, need_time=options.split == "time")
    return write_preference_benchmark(
        "jsonl",
        data.preferences,
        data.skips,
        options,
        out,
        source=data.source,
        completions=data.completions,
    )


def load_own_data(
    source: str | Path,
    completions: str | Path | None = None,
    *,
    need_time: bool = False,
    progress: bool = True,
) -> OwnData:
    """Read the preference file and, if given, the completions file (see the module docstring)."""
    path = _file(source, "preferences")
    data = OwnData()
    reader = _PreferenceReader(path, data.skips, need_time)
    records = 0
    rows = read_jsonl(path, PREFERENCE_FIELDS, kind="preference", empty_ok=False)
    for line, row in track(rows, f"reading {path.name}", None, progress):
        records += 1
        pref = reader.convert(row, line)
        if pref is not None:
            data.preferences.append(pref)
    data.source = {
        "kind": "jsonl",
        "path": str(source),
        "files": [_file_info(path, records, preferences=len(data.preferences))],
    }
    if completions is not None:
        cpath = _file(completions, "completions")
        data.completions, info = _read_completions(cpath, data.preferences, data.skips)
        data.source["completions"] = info
    log.info(
        "jsonl: %d preferences (%d with a completion)", len(data.preferences), len(data.completions)
    )
    return data


def _file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise DataError(f"is a folder; expected a JSON-lines file of {what}", path)
    return path


def _file_info(path: Path, records: int, **kept: int) -> dict[str, Any]:
    return {"name": path.name, "sha256": sha256_file(path), "records": records, **kept}


class _PreferenceReader:
    """Checks and converts preference records; remembers ids and the kind of ``time`` seen."""

    def __init__(self, path: Path, skips: SkipReport, need_time: bool):
        self.path, self.skips, self.need_time = path, skips, need_time
        self.per_user: Counter[str] = Counter()
        self.ids: dict[str, int] = {}
        self.time_kind: tuple[str, int] | None = None  # ("number" | "string", first line)

    def convert(self, row: dict[str, Any], line: int) -> Preference | None:
        where = f"{self.path.name}:{line}"
        user = _user(row["user"], self.path, line)
        texts = {k: _text(row, k, self.path, line) for k in PREFERENCE_FIELDS[1:]}
        when = self._time(row, line)
        if not user:
            self.skips.add("empty user id", where)
            return None
        pref_id = self._id(row, user, line)
        empty = next((k for k, text in texts.items() if not text.strip()), None)
        if empty is not None:
            self.skips.add(EMPTY_REASONS[empty], where)
            return None
        if texts["chosen"].strip() == texts["rejected"].strip():
            self.skips.add("chosen equals rejected", where)
            return None
        meta: dict[str, Any] = {"line": line}
        if when is not None:
            meta["time"] = when
        return Preference(pref_id, user, meta=meta, **texts)

    def _id(self, row: dict[str, Any], user: str, line: int) -> str:
        n = self.per_user[user]
        self.per_user[user] += 1
        pref_id = row.get("id", f"{user}/{n}")
        if not isinstance(pref_id, str) or not pref_id.strip():
            raise DataError("field 'id' must be a non-empty string", self.path, line)
        if pref_id in self.ids:
            first = self.ids[pref_id]
            raise DataError(f"id {pref_id!r} repeats (first at line {first})", self.path, line)
        self.ids[pref_id] = line
        return pref_id

    def _time(self, row: dict[str, Any], line: int) -> float | int | str | None:
        value = row.get("time")
        if value is None:
            if self.need_time:
                raise DataError("--split time needs a 'time' on every record", self.path, line)
            return None
        when = parse_time(value, self.path, line)
        kind = "string" if isinstance(when, str) else "number"
        if self.time_kind is None:
            self.time_kind = (kind, line)
        elif self.time_kind[0] != kind:
            first_kind, first_line = self.time_kind
            raise DataError(
                f"'time' is a {kind} here but a {first_kind} at line {first_line}; use one kind",
                self.path,
                line,
            )
        return when


def parse_time(value: Any, path: Path, line: int) -> float | int | str:
    """A finite number as is, or an ISO 8601 string as a fixed-width UTC ISO string (which sorts
    chronologically); DataError otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise DataError(f"field 'time' must be finite, got {value!r}", path, line)
        return value
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            raise DataError(
                f"field 'time' is not an ISO 8601 date or date-time: {value!r}", path, line
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.astimezone(UTC).isoformat(timespec="microseconds")
    kind = type(value).__name__
    raise DataError(f"field 'time' must be a number or an ISO 8601 string, got {kind}", path, line)


def _user(value: Any, path: Path, line: int) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        kind = type(value).__name__
        raise DataError(f"field 'user' must be a string or an integer, got {kind}", path, line)
    return value.strip()


def _text(row: dict[str, Any], key: str, path: Path, line: int) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise DataError(f"field {key!r} must be a string, got {type(value).__name__}", path, line)
    return value


def _read_completions(
    path: Path, prefs: list[Preference], skips: SkipReport
) -> tuple[list[Completion], dict[str, Any]]:
    """One Completion per preference whose (user, prompt) a completion record answers."""
    by_prompt: dict[tuple[str, str], list[Preference]] = {}
    for pref in prefs:
        by_prompt.setdefault((pref.user, pref.prompt), []).append(pref)
    users = {pref.user for pref in prefs}
    seen: dict[tuple[str, str], int] = {}
    out: list[Completion] = []
    records = matched = 0
    for line, row in read_jsonl(path, COMPLETION_FIELDS, kind="completion", empty_ok=False):
        records += 1
        where = f"{path.name}:{line}"
        user = _user(row["user"], path, line)
        prompt, text = (_text(row, k, path, line) for k in COMPLETION_FIELDS[1:])
        key = (user, prompt)
        if key in seen:
            raise DataError(
                f"a second completion for user {user!r} and this prompt (first at line "
                f"{seen[key]})",
                path,
                line,
            )
        seen[key] = line
        if not text.strip():
            skips.add("empty completion", where)
        elif user not in users:
            skips.add("completion of a user with no preference", where)
        elif key not in by_prompt:
            skips.add("completion of a prompt its user has no preference on", where)
        else:
            matched += 1
            out += [Completion(p.id, user, prompt, text, {"line": line}) for p in by_prompt[key]]
    return out, _file_info(path, records, matched=matched)
