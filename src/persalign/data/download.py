"""Downloads that never leave half a file, an HTML error page or an unsafe archive behind.

    fetch("https://example.org/dev_questions.json", cache / "dev_questions.json", kind="json")
    fetch_once(url, dest, kind="json")       # skips the download when dest exists (file lock)
    names = safe_extract(archive, folder, select=lambda parts: "/".join(parts[1:]))
    data_dir = download_acl()     # the Anthology's xml/ + yaml/name_variants.yaml, cached once

:func:`fetch` streams into a temporary file beside ``dest`` and renames it into place only after
every check passed: the HTTP status, the size (``Content-Length``, ``expected_size``,
``min_size``), that the body is not an HTML page (some hosts answer a wrong path with HTTP 200 and
an error page), and a content check for ``kind`` (``"json"``: parses; ``"tar.gz"``: gzip magic).
Any failure raises :class:`~persalign.errors.DownloadError` naming the URL. ``file://`` URLs work
too (that is how the tests exercise this module).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from filelock import FileLock
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from persalign.errors import DownloadError
from persalign.io import sha256_file
from persalign.logs import stderr
from persalign.models.cache import build_once, cache_dir

log = logging.getLogger(__name__)

ACL_URL_ENV = "PERSALIGN_ACL_URL"
DEFAULT_ACL_URL = "https://github.com/acl-org/acl-anthology/archive/refs/heads/master.tar.gz"
CHUNK = 1 << 20
JSON_FULL_CHECK_LIMIT = 64 << 20  # bigger JSON files get a cheap bracket check instead of a parse


def looks_like_html(head: bytes) -> bool:
    """Whether a body starts (after whitespace and a UTF-8 BOM) like an HTML page."""
    text = head.lstrip()
    text = text.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    return text.startswith((b"<!doctype html", b"<html"))


def _check_gzip(path: Path) -> str | None:
    with path.open("rb") as handle:
        return None if handle.read(2) == b"\x1f\x8b" else "is not gzip data"


def _check_json(path: Path) -> str | None:
    size = path.stat().st_size
    if size > JSON_FULL_CHECK_LIMIT:  # the loader parses it anyway; catch truncation cheaply
        with path.open("rb") as handle:
            first = handle.read(64).lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()[:1]
            handle.seek(max(0, size - 64))
            last = handle.read().rstrip()[-1:]
        pairs = {b"[": b"]", b"{": b"}"}
        return None if first in pairs and pairs[first] == last else "is not a complete JSON value"
    try:
        json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        return f"is not valid JSON ({exc})"
    return None


CONTENT_CHECKS: dict[str, Callable[[Path], str | None]] = {
    "json": _check_json,
    "tar.gz": _check_gzip,
}


def _open(url: str, timeout: float) -> Any:
    """urlopen with errors turned into DownloadError (the response type differs by scheme)."""
    request = urllib.request.Request(url, headers={"User-Agent": "persalign"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: download failed ({reason})") from None


def _stream(url: str, response: Any, handle: IO[bytes], total: int | None, progress: bool) -> int:
    written = 0
    bar = Progress(
        TextColumn("downloading {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=stderr,
        disable=not progress,
        transient=True,
    )
    with bar:
        task = bar.add_task(url.rsplit("/", 1)[-1] or url, total=total)
        try:
            while block := response.read(CHUNK):
                handle.write(block)
                written += len(block)
                bar.advance(task, len(block))
        except OSError as exc:
            raise DownloadError(f"{url}: download interrupted ({exc})") from None
    return written


def fetch(
    url: str,
    dest: str | Path,
    *,
    expected_size: int | None = None,
    min_size: int = 1,
    kind: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` (atomically) and check it; DownloadError on any problem."""
    if kind is not None and kind not in CONTENT_CHECKS:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(CONTENT_CHECKS)})")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle, _open(url, timeout) as response:
            length = response.headers.get("Content-Length")
            declared = int(length) if length and length.isdigit() else None
            log.info("downloading %s", url)
            size = _stream(url, response, handle, declared or expected_size, progress)
        with tmp.open("rb") as handle:
            if looks_like_html(handle.read(1024)):
                raise DownloadError(
                    f"{url}: returned an HTML page, not data (a wrong URL or an error page?)"
                )
        if declared is not None and size != declared:
            raise DownloadError(f"{url}: got {size} bytes, the server announced {declared}")
        if expected_size is not None and size != expected_size:
            raise DownloadError(f"{url}: got {size} bytes, expected {expected_size}")
        if size < min_size:
            raise DownloadError(f"{url}: got {size} bytes, expected at least {min_size}")
        problem = CONTENT_CHECKS[kind](tmp) if kind is not None else None
        if problem:
            raise DownloadError(f"{url}: the download {problem}")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("saved %s (%d bytes)", dest, size)
    return dest


def fetch_once(url: str, dest: str | Path, **kwargs: object) -> Path:
    """:func:`fetch` unless ``dest`` already exists; a file lock keeps processes from racing."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.parent / f".{dest.name}.lock")):
        if dest.is_file():  # another process finished it while we waited
            return dest
        return fetch(url, dest, **kwargs)  # type: ignore[arg-type]


def _unsafe(name: str) -> bool:
    """Absolute, escaping (``..``) or Windows-style (drive letter, backslash) member paths."""
    path = PurePosixPath(name)
    return (
        not name
        or path.is_absolute()
        or ".." in path.parts
        or "\\" in name
        or re.match(r"^[A-Za-z]:", name) is not None
    )


def safe_extract(
    archive: str | Path,
    dest: str | Path,
    select: Callable[[tuple[str, ...]], str | None],
    *,
    source: str | None = None,
) -> list[str]:
    """Extract the regular files that ``select`` maps to a relative path; returns those paths.

    ``select`` gets each member's path parts and returns where it goes under ``dest`` (or None to
    leave it out). A member with an absolute path or a ``..`` component makes the whole archive
    suspect: DownloadError (naming ``source``, e.g. the URL). Files are written by us, never by
    ``tarfile.extract``, so links and device files in the archive are never created.
    """
    where = source or str(archive)
    dest = Path(dest)
    written: list[str] = []
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                if _unsafe(member.name):
                    raise DownloadError(f"{where}: unsafe path in the archive: {member.name!r}")
                target = select(PurePosixPath(member.name).parts)
                if target is None:
                    continue
                if not member.isfile() or _unsafe(target):
                    raise DownloadError(f"{where}: {member.name!r} is not a regular file")
                out = dest / target
                out.parent.mkdir(parents=True, exist_ok=True)
                data = tar.extractfile(member)
                assert data is not None  # isfile() members always have data
                with out.open("wb") as handle:
                    while block := data.read(CHUNK):
                        handle.write(block)
                written.append(target)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DownloadError(f"{where}: not a readable tar.gz archive ({exc})") from None
    return written


def _anthology_member(parts: tuple[str, ...]) -> str | None:
    """Which tarball members to keep: ``<top>/data/xml/*.xml`` and the name variants."""
    if len(parts) == 4 and parts[1] == "data":
        if parts[2] == "xml" and parts[3].endswith(".xml"):
            return f"xml/{parts[3]}"
        if parts[2:] == ("yaml", "name_variants.yaml"):
            return "yaml/name_variants.yaml"
    return None


def download_acl(url: str | None = None, *, progress: bool = True) -> Path:
    """The Anthology's data folder in the cache, downloaded and extracted once per URL."""
    url = url or os.environ.get(ACL_URL_ENV) or DEFAULT_ACL_URL

    def build(folder: Path) -> dict[str, Any]:
        archive = fetch(url, folder / "anthology.tar.gz", kind="tar.gz", progress=progress)
        extracted = safe_extract(archive, folder, _anthology_member, source=url)
        digest = sha256_file(archive)
        archive.unlink()
        xml_files = sum(name.startswith("xml/") for name in extracted)
        if not xml_files:
            raise DownloadError(f"{url}: the archive has no data/xml/*.xml (not the Anthology?)")
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return {"url": url, "sha256": digest, "xml_files": xml_files, "downloaded": now}

    target = cache_dir() / "acl_anthology"
    return build_once(target, build, {"url": url, "format": 1}, what="the ACL Anthology data")
