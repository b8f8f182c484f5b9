"""The journal folder older servers kept (read once, to import it into the database store).

Before users lived in a database (store.py), a server's state folder held an append-only
journal of accepted preference sets and one vector file per user. ``UserStore.open`` imports
such a folder once; this module reads it (and still writes it, for tests of the import).

    store = JournalFolder("runs/lore/serving")
    records = store.load()                          # user -> UserRecord (journal replayed)
    seq = store.append("alice", prefs)              # fsynced: the set is acknowledged after this
    store.write_vector("alice", seq, z)             # users/alice.safetensors, atomically
    store.read_vector("alice")                      # (seq, z) or None

The journal (``journal.jsonl``) is the record of what was acknowledged: a line is appended and
fsynced before the server answers. A vector file is written to a temporary file, fsynced and
renamed (then the folder is fsynced), and carries the journal sequence number it was adapted
from. After a crash (even ``kill -9`` mid-write) a torn last journal line (never acknowledged)
is cut, leftover temporary files are removed, and a user whose vector file is older than their
last journal line is adapted again from the journal, so a restart serves the last acknowledged
state. User ids are any benchmark id (``check_user_id``); a file is named by the id itself when
it is plain (letters, digits, ``._-``, starting alphanumeric, at most 64), else by ``~`` and
the id's sha256, so no id can name a path outside ``users/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load, save

from persalign.io import atomic_write, dumps
from persalign.serve.schemas import check_user_id
from persalign.types import Preference

log = logging.getLogger(__name__)
FORMAT = "persalign-user/1"
PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def file_stem(user: str) -> str:
    """The file name (without suffix) for ``user``: the id when plain, else ``~`` + sha256."""
    check_user_id(user)
    if PLAIN.fullmatch(user):
        return user
    return "~" + hashlib.sha256(user.encode("utf-8")).hexdigest()


@dataclass
class UserRecord:
    """What the journal holds for one user."""

    user: str
    preferences: list[Preference] = field(default_factory=list)
    batches: list[list[Preference]] = field(default_factory=list)  # one list per set
    sets: int = 0
    seq: int = 0  # journal sequence number of the user's last accepted set
    updated: float = 0.0


class JournalFolder:
    """The state folder of a server: ``journal.jsonl`` and ``users/<id>.safetensors``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.journal = self.folder / "journal.jsonl"
        self.vectors = self.folder / "users"
        self.next_seq = 1

    def vector_path(self, user: str) -> Path:
        return self.vectors / f"{file_stem(user)}.safetensors"

    def load(self) -> dict[str, UserRecord]:
        """Replay the journal (cutting a torn last line) and clear leftover temporary files."""
        self.vectors.mkdir(parents=True, exist_ok=True)
        for tmp in self.vectors.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        records: dict[str, UserRecord] = {}
        if not self.journal.is_file():
            return records
        good = 0
        with self.journal.open("rb") as handle:
            for raw in handle:
                try:
                    entry = json.loads(raw)
                    user = check_user_id(entry["user"])
                    prefs = [Preference.from_json(p) for p in entry["preferences"]]
                    seq, stamp = int(entry["seq"]), float(entry["time"])
                except (ValueError, KeyError, TypeError):
                    log.warning("%s: cutting a torn or bad line at byte %d", self.journal, good)
                    break
                if not raw.endswith(b"\n"):
                    break  # written but not terminated: never acknowledged
                record = records.setdefault(user, UserRecord(user))
                record.preferences += prefs
                record.batches.append(prefs)
                record.sets += 1
                record.seq, record.updated = seq, stamp
                self.next_seq = max(self.next_seq, seq + 1)
                good += len(raw)
        if good != self.journal.stat().st_size:
            with self.journal.open("r+b") as handle:
                handle.truncate(good)
                os.fsync(handle.fileno())
        return records

    def append(self, user: str, prefs: list[Preference]) -> tuple[int, float]:
        """Append one accepted set, fsynced; returns its sequence number and time."""
        check_user_id(user)
        seq, stamp = self.next_seq, time.time()
        line = dumps(
            {"seq": seq, "user": user, "time": stamp, "preferences": [p.to_json() for p in prefs]}
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.journal.open("ab") as handle:
            handle.write(line.encode("utf-8") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.next_seq = seq + 1
        return seq, stamp

    def write_vector(self, user: str, seq: int, vector: torch.Tensor) -> None:
        """Write ``vector`` [D] for ``user`` atomically (temp file, fsync, rename, fsync dir)."""
        path = self.vector_path(user)
        tensors = {"z": vector.detach().float().cpu().contiguous()}
        data = save(tensors, metadata={"format": FORMAT, "user": user, "seq": str(seq)})
        with atomic_write(path, "wb") as handle:
            handle.write(data)
        directory = os.open(self.vectors, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def read_vector(self, user: str) -> tuple[int, torch.Tensor] | None:
        """(sequence number, vector) from the user's file, or None when absent or unreadable."""
        path = self.vector_path(user)
        if not path.is_file():
            return None
        try:
            data = path.read_bytes()
            meta = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")]).get(
                "__metadata__", {}
            )
            return int(meta["seq"]), load(data)["z"]
        except Exception as exc:  # a corrupt file is re-adapted from the journal
            log.warning("%s: unreadable (%s); adapting again from the journal", path, exc)
            return None
