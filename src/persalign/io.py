"""The ground floor's files: JSON lines, atomic writes, hashes and counted skips.

    for line_no, obj in read_jsonl("train.jsonl", required=("user", "prompt")):
        ...
    write_json("out/manifest.json", {"source": ...})      # temporary file, fsync, rename
    digest = sha256_file("out/train.jsonl")

Every problem in a file raises :class:`~persalign.errors.DataError` naming the file and line.
Things that are skipped on purpose (an empty title, a user below a threshold) go through a
:class:`SkipReport`, which counts them and ends up in the manifest and on the console.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from persalign.errors import DataError

log = logging.getLogger(__name__)
INTERRUPT_ENV = "PERSALIGN_TEST_INTERRUPT_AT"


def read_jsonl(
    path: str | Path,
    required: Sequence[str] = (),
    *,
    kind: str = "record",
    empty_ok: bool = True,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; DataError on any bad line, and
    (``empty_ok=False``: a source file) on a file without a single record."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file (expected a JSON-lines file of {kind}s)", path=path)
    records = 0
    with path.open("rb") as handle:  # bytes, decoded per line: a bad byte names its line
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                    path,
                    line_no,
                ) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"malformed JSON ({exc.msg} at column {exc.colno})", path, line_no
                ) from None
            if not isinstance(obj, dict):
                raise DataError(f"expected a JSON object, got {type(obj).__name__}", path, line_no)
            missing = [key for key in required if key not in obj]
            if missing:
                raise DataError(f"{kind} is missing field(s): {', '.join(missing)}", path, line_no)
            records += 1
            yield line_no, obj
    if not records and not empty_ok:
        raise DataError(f"the file is empty; expected JSON lines of {kind}s", path)


def read_json(path: str | Path) -> Any:
    """Parse a whole JSON file; DataError with the line of a syntax error."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    text = read_text(path)
    if not text.strip():
        raise DataError("the file is empty; expected JSON", path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"malformed JSON ({exc.msg} at column {exc.colno})", path, exc.lineno
        ) from None


def read_text(path: str | Path) -> str:
    """A whole UTF-8 text file; DataError naming the line of the first byte that is not UTF-8."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column})", path, line
        ) from None


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dumps(obj: Any) -> str:
    """The one JSON encoding persalign writes: stable key order, UTF-8, no spaces to vary."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Atomically write one JSON object per line; returns the number written."""
    count = 0
    with atomic_write(path) as handle:
        for rec in records:
            handle.write(dumps(rec) + "\n")
            count += 1
    return count


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_write(path) as handle:
        handle.write(json.dumps(obj, ensure_ascii=False, sort_keys=True, indent=2) + "\n")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class SkipReport:
    """Counts what a loader or builder skipped on purpose, with a few examples of each reason.

    skips = SkipReport()
    skips.add("empty abstract", "P16-1001")
    skips.to_json()
    # {'empty abstract': {'count': 1, 'examples': ['P16-1001']}}
    """

    MAX_EXAMPLES = 5

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, example: str | None = None, count: int = 1) -> None:
        self.counts[reason] += count
        if example is not None:
            ex = self.examples.setdefault(reason, [])
            if len(ex) < self.MAX_EXAMPLES:
                ex.append(example)

    def merge(self, other: SkipReport) -> None:
        for reason, count in other.counts.items():
            self.counts[reason] += count
            for ex in other.examples.get(reason, []):
                mine = self.examples.setdefault(reason, [])
                if len(mine) < self.MAX_EXAMPLES:
                    mine.append(ex)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, dict[str, Any]]:
        return {
            reason: {"count": self.counts[reason], "examples": self.examples.get(reason, [])}
            for reason in sorted(self.counts)
        }

    def log(self, logger: logging.Logger = log, what: str = "skipped") -> None:
        """Report every reason on the console (warnings, so they are never silent)."""
        for reason in sorted(self.counts):
            examples = ", ".join(self.examples.get(reason, [])[:3])
            more = f" (e.g. {examples})" if examples else ""
            logger.warning("%s %d: %s%s", what, self.counts[reason], reason, more)


@contextmanager
def folder_in_place(dest: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``dest`` that replaces ``dest`` whole when the block
    ends without an error: a build that fails or is killed leaves ``dest`` as it was (or
    absent), never half-written. Stale temporary folders of killed builds are removed first.

        with folder_in_place("out/pref-acl") as tmp:
            build(tmp)                       # out/pref-acl is replaced only now
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in [
        *dest.parent.glob(f".{dest.name}.tmp-*"),
        *dest.parent.glob(f".{dest.name}.old-*"),
    ]:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    tmp.mkdir()
    try:
        yield tmp
        interrupt_point("folder-whole")
        if dest.exists():
            os.replace(dest, old)  # the old folder steps aside only once the new one is whole
        os.replace(tmp, dest)
    except BaseException:  # an error or Ctrl-C, even between the two renames: as it was
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not dest.exists():
            os.replace(old, dest)
        raise
    try:
        interrupt_point("folder-in-place")
    finally:
        shutil.rmtree(old, ignore_errors=True)


def interrupt_point(name: str) -> None:
    """A Ctrl-C that tests can place: SIGINT to this process, here, when the environment
    variable ``PERSALIGN_TEST_INTERRUPT_AT`` is ``name`` (nothing otherwise).

    Points: ``starting`` (the command's modules still being imported), ``split`` (a
    preference build, before anything is written), ``folder-whole`` (the temporary folder
    complete, not yet in place), ``folder-in-place`` (just renamed into place), ``atexit`` (the
    command line's exit handlers, where torch's run).
    """
    if os.environ.get(INTERRUPT_ENV) == name:
        os.kill(os.getpid(), signal.SIGINT)
