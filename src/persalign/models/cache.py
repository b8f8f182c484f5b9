"""persalign's cache folder and "build this folder once" for things derived from big inputs.

    cache_dir()                                   # $PERSALIGN_CACHE or ~/.cache/persalign
    # PosixPath('/home/me/.cache/persalign')
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    build_once(target, build=convert, fingerprint={"source_size": 98362432, "format": 1})

:func:`build_once` builds into a temporary folder beside ``target``, writes a completion marker
(``persalign-complete.json``: the fingerprint plus whatever ``build`` returned) last, then renames
the folder into place, all under a :class:`filelock.FileLock`. So two processes never both build
(the second waits, then finds it done), a half-written folder is never used, and a folder whose
fingerprint no longer matches (a new package version) is rebuilt. When the folder is complete the
check costs one small JSON read and no lock.

    weights_hash(model)        # 'blake2b-...' of every parameter and buffer: a cache key part
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from persalign.io import atomic_write

log = logging.getLogger(__name__)

CACHE_ENV = "PERSALIGN_CACHE"
MARKER = "persalign-complete.json"


def cache_dir() -> Path:
    """The root of persalign's caches: ``$PERSALIGN_CACHE``, else ``~/.cache/persalign``."""
    env = os.environ.get(CACHE_ENV)
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "persalign"
    return root


def weights_hash(module: Any) -> str:
    """A digest of a torch module's weights (every state-dict tensor's name, dtype, shape and
    bytes, in name order): equal for the same weights however they were loaded. Hashes every
    byte once (~0.5 s for 135M float32 parameters); callers keep it for a frozen model."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{list(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())  # buffer protocol: no copy
    return f"blake2b-{digest.hexdigest()}"


def sanitize_key(key: str, max_length: int = 80) -> str:
    """A folder name for an arbitrary key: safe characters plus a short hash, so distinct keys
    never share a folder (``bundled:x`` and ``bundled_x`` differ)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._-")[:max_length] or "key"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:10]
    return f"{safe}-{digest}"


def read_marker(target: Path) -> dict[str, Any] | None:
    """The completion marker of ``target``, or None when absent or unreadable."""
    try:
        marker = json.loads((target / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def is_complete(target: Path, fingerprint: Mapping[str, Any]) -> bool:
    """Whether ``target`` was fully built from an input with this ``fingerprint``."""
    marker = read_marker(target)
    if marker is None:
        return False
    recorded = marker.get("fingerprint", {})
    return all(recorded.get(key) == value for key, value in fingerprint.items())


def build_once(
    target: str | Path,
    build: Callable[[Path], Mapping[str, Any] | None],
    fingerprint: Mapping[str, Any],
    *,
    what: str | None = None,
) -> Path:
    """Make sure ``target`` holds a complete build for ``fingerprint``, building it if needed.

    ``build(folder)`` writes everything into the empty ``folder`` and may return extra facts
    (e.g. a source checksum) that are stored in the marker. ``fingerprint`` holds cheap facts
    (sizes, format versions) that are compared on every call.
    """
    target = Path(target)
    if is_complete(target, fingerprint):
        return target
    what = what or target.name
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f".{target.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process that is building %s", what)
        lock.acquire()
    try:
        if is_complete(target, fingerprint):  # the other process finished while we waited
            return target
        _build_locked(target, build, fingerprint, what)
    finally:
        lock.release()
    return target


def _build_locked(
    target: Path,
    build: Callable[[Path], Mapping[str, Any] | None],
    fingerprint: Mapping[str, Any],
    what: str,
) -> None:
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the built folder is an ordinary cache folder
    try:
        log.info("building %s once into %s (later runs reuse it)", what, target)
        extra = dict(build(tmp) or {})
        marker = {"fingerprint": dict(fingerprint), **extra}
        with atomic_write(tmp / MARKER) as handle:
            handle.write(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        for path in tmp.rglob("*"):  # temp-file writers leave 0600; this is a plain cache
            path.chmod(0o755 if path.is_dir() else 0o644)
        stale = None
        if target.exists():  # incomplete or outdated: move it aside, then swap the new one in
            stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
            shutil.rmtree(stale, ignore_errors=True)
            os.replace(target, stale)
        os.replace(tmp, target)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
