"""Onboarded users in a database through SQLAlchemy: SQLite (WAL) in the state folder by default,
PostgreSQL (``--store postgresql://...``) when replicas on several machines share users.

    store = UserStore.open(None, folder="runs/lore/serving")     # users.sqlite in the folder
    store = UserStore.open("postgresql://u@db/persalign")        # shared by every replica
    users = store.load()                                          # id -> StoredUser
    version = store.add("alice", prefs, vector, key="k1", base=users["alice"].version)
    store.version("alice")                                        # cheap: what replicas poll
    store.fetch("alice")                                          # StoredUser or None
    store.delete("alice")                                         # texts and vector

Tables: ``users`` (id, version, sets, dim, vector: raw little-endian float32 bytes of shape
[dim], updated_at) and ``preferences`` (one row per accepted set: user, idempotency key,
payload JSON, created_at). A user's version is the id of their latest set's row, which the
database never hands out twice (SQLite AUTOINCREMENT, a PostgreSQL sequence), so a replica
that knows another version than the store's knows stale data, even across a delete.

``add`` writes the set and the vector adapted from it in one transaction (committed before the
server answers): after a ``kill -9`` at any point the store holds every acknowledged set with
its vector, and nothing of an unacknowledged one. It commits only when the user's version is
still ``base`` (the state the vector was adapted from), else raises :class:`Conflict` (another
replica wrote first: sync and adapt again); a repeated idempotency key raises
:class:`Duplicate`. A journal folder of an older server (journal.py) is imported once, in one
transaction, recorded in the ``meta`` table.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sqlalchemy as sa
import torch
from sqlalchemy.exc import IntegrityError

from persalign.serve.journal import JournalFolder
from persalign.types import Preference

log = logging.getLogger(__name__)
SQLITE_NAME = "users.sqlite"

META = sa.MetaData()
USERS = sa.Table(
    "persalign_users",
    META,
    sa.Column("id", sa.String(512), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("sets", sa.Integer, nullable=False),
    sa.Column("dim", sa.Integer),
    sa.Column("vector", sa.LargeBinary),  # [dim] float32, little-endian; NULL: adapt again
    sa.Column("updated_at", sa.Float, nullable=False),
)
SETS = sa.Table(
    "persalign_preferences",
    META,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("user_id", sa.String(512), nullable=False, index=True),
    sa.Column("idempotency_key", sa.String(256)),
    sa.Column("payload", sa.Text, nullable=False),  # JSON list of {prompt, chosen, rejected}
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("user_id", "idempotency_key"),
    sqlite_autoincrement=True,  # ids are never reused, so versions never repeat
)
KV = sa.Table(
    "persalign_meta",
    META,
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


class Conflict(Exception):
    """The user's version changed since the vector was adapted (another replica wrote)."""


class Duplicate(Exception):
    """A set with this idempotency key was accepted already."""


@dataclass
class StoredUser:
    """One user as the store holds them."""

    user: str
    version: int
    sets: int
    preferences: list[Preference] = field(default_factory=list)
    vector: torch.Tensor | None = None  # [dim] float32; None: not adapted yet (an import)


def vector_bytes(vector: torch.Tensor) -> bytes:
    return vector.detach().float().cpu().contiguous().numpy().astype("<f4").tobytes()


def vector_of(data: bytes | None, dim: int | None) -> torch.Tensor | None:
    if data is None or dim is None or len(data) != 4 * dim:
        return None
    return torch.from_numpy(np.frombuffer(data, dtype="<f4").astype(np.float32))


def _payload(prefs: list[Preference]) -> str:
    return json.dumps(
        [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in prefs]
    )


def preferences_of(user: str, number: int, payload: str) -> list[Preference]:
    """The preferences of ``user``'s set ``number`` (1-based), with stable ids."""
    return [
        Preference(f"{user}/{number}/{i}", user, p["prompt"], p["chosen"], p["rejected"])
        for i, p in enumerate(json.loads(payload))
    ]


def engine_for(url: str) -> sa.Engine:
    """An engine for ``url``: ``postgresql://`` uses psycopg 3; SQLite runs in WAL mode with
    full fsync, and write transactions take the write lock up front (BEGIN IMMEDIATE)."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi, _record):
        dbapi.isolation_level = None  # SQLAlchemy's "begin" event below issues BEGIN
        dbapi.execute("PRAGMA journal_mode=WAL")
        dbapi.execute("PRAGMA synchronous=FULL")

    @sa.event.listens_for(engine, "begin")
    def _begin(conn):
        write = conn.get_execution_options().get("write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class UserStore:
    """Users' preference sets and vectors in one database (see the module docstring)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = engine_for(url)
        META.create_all(self.engine)

    @classmethod
    def open(cls, url: str | None, folder: str | Path | None = None) -> UserStore:
        """The store at ``url``, or SQLite in ``folder``; imports ``folder``'s journal once."""
        if url is None:
            if folder is None:
                raise ValueError("a user store needs a URL or a state folder")
            Path(folder).mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{Path(folder).resolve() / SQLITE_NAME}"
        store = cls(url)
        if folder is not None and (Path(folder) / "journal.jsonl").is_file():
            store.import_journal(Path(folder))
        return store

    def _write(self):
        return self.engine.connect().execution_options(write=True)

    # ------------------------------------------------------------------ reads
    def version(self, user: str) -> int | None:
        """The user's version, None when the store does not hold them (one indexed read)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(USERS.c.version).where(USERS.c.id == user)).scalar()

    def has_key(self, user: str, key: str) -> bool:
        query = sa.select(SETS.c.seq).where(SETS.c.user_id == user, SETS.c.idempotency_key == key)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def fetch(self, user: str) -> StoredUser | None:
        """Everything about ``user`` (None when absent), read in one transaction."""
        with self.engine.connect() as conn, conn.begin():
            row = conn.execute(sa.select(USERS).where(USERS.c.id == user)).first()
            if row is None:
                return None
            payloads = conn.execute(
                sa.select(SETS.c.payload).where(SETS.c.user_id == user).order_by(SETS.c.seq)
            ).scalars()
            prefs = [p for n, text in enumerate(payloads, 1) for p in preferences_of(user, n, text)]
        return StoredUser(user, row.version, row.sets, prefs, vector_of(row.vector, row.dim))

    def load(self) -> dict[str, StoredUser]:
        """Every user (for a replica's start)."""
        with self.engine.connect() as conn, conn.begin():
            users = {
                row.id: StoredUser(
                    row.id, row.version, row.sets, [], vector_of(row.vector, row.dim)
                )
                for row in conn.execute(sa.select(USERS))
            }
            counts: dict[str, int] = {}
            for user, text in conn.execute(
                sa.select(SETS.c.user_id, SETS.c.payload).order_by(SETS.c.seq)
            ):
                if user in users:
                    counts[user] = counts.get(user, 0) + 1
                    users[user].preferences += preferences_of(user, counts[user], text)
        return users

    # ------------------------------------------------------------------ writes
    def add(
        self,
        user: str,
        prefs: list[Preference],
        vector: torch.Tensor | None,
        key: str | None = None,
        base: int | None = None,
    ) -> int:
        """Store one accepted set and the vector adapted from it, in one transaction, when
        the user's version is still ``base`` (None: a new user); returns the new version."""
        now = time.time()
        data = None if vector is None else vector_bytes(vector)
        dim = None if vector is None else int(vector.numel())
        try:
            with self._write() as conn, conn.begin():
                seq = conn.execute(
                    SETS.insert().values(
                        user_id=user, idempotency_key=key, payload=_payload(prefs), created_at=now
                    )
                ).inserted_primary_key[0]
                values = {"version": seq, "dim": dim, "vector": data, "updated_at": now}
                if base is None:
                    conn.execute(USERS.insert().values(id=user, sets=1, **values))
                else:
                    done = conn.execute(
                        USERS.update()
                        .where(USERS.c.id == user, USERS.c.version == base)
                        .values(sets=USERS.c.sets + 1, **values)
                    )
                    if done.rowcount != 1:
                        raise Conflict(user)
        except IntegrityError:
            if key is not None and self.has_key(user, key):
                raise Duplicate(key) from None
            raise Conflict(user) from None  # another replica created the user first
        return int(seq)

    def write_vector(self, user: str, version: int, vector: torch.Tensor) -> bool:
        """Set the vector of ``user`` at ``version`` (an imported user adapted at start)."""
        with self._write() as conn, conn.begin():
            done = conn.execute(
                USERS.update()
                .where(USERS.c.id == user, USERS.c.version == version)
                .values(dim=int(vector.numel()), vector=vector_bytes(vector))
            )
        return done.rowcount == 1

    def delete(self, user: str) -> bool:
        """Remove ``user``'s sets and vector; whether the store held them."""
        with self._write() as conn, conn.begin():
            conn.execute(SETS.delete().where(SETS.c.user_id == user))
            return conn.execute(USERS.delete().where(USERS.c.id == user)).rowcount == 1

    def import_journal(self, folder: Path) -> int:
        """Import an older server's journal folder once (one transaction); users imported."""
        mark = f"journal:{folder.resolve()}"
        with self.engine.connect() as conn:
            if conn.execute(sa.select(KV.c.value).where(KV.c.key == mark)).first() is not None:
                return 0
        journal = JournalFolder(folder)
        records = journal.load()
        with self._write() as conn, conn.begin():
            if conn.execute(sa.select(KV.c.value).where(KV.c.key == mark)).first() is not None:
                return 0  # another replica imported it meanwhile
            for user, record in records.items():
                if conn.execute(sa.select(USERS.c.id).where(USERS.c.id == user)).first():
                    continue  # the database knows this user already: it wins
                seq = 0
                for chunk in record.batches:
                    seq = conn.execute(
                        SETS.insert().values(
                            user_id=user, payload=_payload(chunk), created_at=record.updated
                        )
                    ).inserted_primary_key[0]
                saved = journal.read_vector(user)
                fresh = saved is not None and saved[0] == record.seq
                conn.execute(
                    USERS.insert().values(
                        id=user,
                        version=seq,
                        sets=record.sets,
                        dim=int(saved[1].numel()) if fresh else None,
                        vector=vector_bytes(saved[1]) if fresh else None,
                        updated_at=record.updated,
                    )
                )
            conn.execute(KV.insert().values(key=mark, value=str(time.time())))
        log.info("imported %d users from the journal in %s", len(records), folder)
        return len(records)
