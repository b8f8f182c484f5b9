"""Onboarding users while the server decodes: adapt on a copy in one worker, install between steps.

    onboarder = Onboarder(people, store, scheduler, support, limits)
    onboarder.replay()                               # at start: every stored user, before decoding
    info = await onboarder.onboard("alice", prefs, key="k1")  # 429 full, 503 past adapt_timeout
    onboarder.sync("alice")                          # the store's latest version (other replicas)
    onboarder.delete("alice")                        # store and this replica
    onboarder.info("alice")                          # from the onboarder's own record

Adaptation runs in one worker: with an ``adapter`` (``persalign serve`` by default,
``--adapt-in process``) the worker hands it to a child process at idle CPU priority
(serve.adapt_process), so it takes neither the GIL nor a busy core from decoding; without one,
the worker thread itself adapts (at a lower CPU priority than decoding) on a copy of the
reward model that shares its frozen weights and has its own user table
(``Personalizer.adapt``). Either way decoding goes on while a user onboards; the new vector is then
installed by the scheduler thread between two steps. At most ``max_onboarding_queue``
onboardings wait (a 429 beyond); one that takes longer than ``adapt_timeout`` seconds is
answered 503 and its result discarded (nothing stored). A user keeps their latest
``max_user_preferences`` preferences (the store keeps all; a replica applies the same cap).
``info`` reads the onboarder's own record, never the model's user table, so it is safe while
the table is being swapped.

Replicas share users through the store (store.py): before a request for a user, ``sync``
compares the version this replica holds with the store's (one indexed read, at most every
``sync_interval`` seconds per user) and, when they differ, loads the user's sets and vector
(or forgets a deleted user). An onboarding syncs first, adapts, and commits only if nobody
wrote the user meanwhile (else syncs and adapts again). An ``Idempotency-Key`` already stored
for the user makes a retried post count once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from persalign.serve.adapt_process import AdaptProcess
from persalign.serve.api_errors import ApiError
from persalign.serve.personal import Personalizer
from persalign.serve.scheduler import Scheduler
from persalign.serve.schemas import ServeLimits
from persalign.serve.store import Conflict, Duplicate, StoredUser, UserStore
from persalign.types import Preference

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserView:
    """What the server answers about one onboarded user (replaced whole, never mutated)."""

    preferences: int
    sets: int
    vector: tuple[float, ...] | None


def _lower_priority() -> None:
    """Run the adaptation worker below the decoding thread: one intra-op thread (OpenMP's
    count is per calling thread, so decoding keeps its own) at a lower CPU priority."""
    torch.set_num_threads(1)
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _rounded(vector: torch.Tensor | None) -> tuple[float, ...] | None:
    return None if vector is None else tuple(round(float(v), 6) for v in vector)


class Onboarder:
    """Owns the onboarding worker and this replica's record of onboarded users."""

    def __init__(
        self,
        people: Personalizer,
        store: UserStore | None,
        scheduler: Scheduler,
        support: dict[str, list[Preference]],
        limits: ServeLimits,
        on_support: Callable[[str, list[Preference] | None], None] | None = None,
        adapter: AdaptProcess | None = None,
    ):
        self.people, self.store, self.scheduler = people, store, scheduler
        self.support, self.limits = support, limits
        self.on_support = on_support  # icl-rag embeds a user's prompts (None: forgets them)
        self.adapter = adapter  # adapts in a child process (serve.adapt_process); None: here
        self.records: dict[str, UserView] = {}
        self.versions: dict[str, int] = {}  # the store version this replica serves per user
        self.checked: dict[str, float] = {}  # when each user's version was last read
        self.worker = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="persalign-adapt", initializer=_lower_priority
        )
        self.pending = 0
        self._count = threading.Lock()

    def _kept(self, prefs: list[Preference]) -> list[Preference]:
        return prefs[-self.limits.max_user_preferences :]

    def _on_model_thread(self, fn: Callable[[], Any]) -> Any:
        if self.scheduler.running:
            return self.scheduler.call(fn).result()
        return fn()

    # ------------------------------------------------------------------ the store's state
    def replay(self) -> None:
        """Install every stored user before the scheduler starts (adapting imported users
        whose vector is missing or stale, and storing the result)."""
        if self.store is None:
            return
        for stored in self.store.load().values():
            self._install(stored)

    def _install(self, stored: StoredUser) -> None:
        prefs = self._kept(stored.preferences)
        vector = stored.vector
        if self.people.personalized and vector is None:
            log.info("adapting %s from their stored preferences", stored.user)
            vector = self.people.adapt(stored.user, prefs)
            self.store.write_vector(stored.user, stored.version, vector)
        if self.on_support is not None:
            self.on_support(stored.user, prefs)
        self._on_model_thread(lambda: self.people.install(stored.user, vector))
        self.support[stored.user] = prefs
        self.records[stored.user] = UserView(len(prefs), stored.sets, _rounded(vector))
        self.versions[stored.user] = stored.version

    def _forget(self, user: str) -> None:
        self._on_model_thread(lambda: self.people.remove(user))
        if self.on_support is not None:
            self.on_support(user, None)
        self.support.pop(user, None)
        self.records.pop(user, None)
        self.versions.pop(user, None)

    def sync(self, user: str | None, force: bool = False) -> None:
        """Serve the store's latest state of ``user`` (another replica may have written it)."""
        if self.store is None or user is None:
            return
        now = time.monotonic()
        if not force and now - self.checked.get(user, -1e9) < self.limits.sync_interval:
            return
        version = self.store.version(user)
        self.checked[user] = now
        if version == self.versions.get(user):
            return
        stored = self.store.fetch(user) if version is not None else None
        if stored is None:
            if user in self.versions:
                self._forget(user)  # deleted on another replica
            return
        self._install(stored)

    def delete(self, user: str) -> bool:
        """Remove ``user``'s texts and vector from the store and from this replica."""
        if self.store is None:
            raise ApiError(409, "this server has no user store (--state / --store)")
        existed = self.store.delete(user)
        known = user in self.versions
        self._forget(user)
        self.checked.pop(user, None)
        return existed or known

    # ------------------------------------------------------------------ onboarding
    async def onboard(self, user: str, items: list[Any], key: str | None = None) -> dict[str, Any]:
        """Adapt ``user`` on their kept preferences plus ``items``; store, install."""
        if self.store is None:
            raise ApiError(409, "this server has no user store (--state / --store)")
        with self._count:
            if self.pending >= self.limits.max_onboarding_queue:
                raise ApiError(
                    429,
                    f"{self.pending} onboardings are waiting already; retry later",
                    kind="rate_limit_error",
                    code="onboarding_queue_full",
                    headers={"Retry-After": "5"},
                )
            self.pending += 1
        job = {"abandoned": False}
        future = self.worker.submit(self._onboard, user, items, key, job)
        try:
            await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(future)), self.limits.adapt_timeout
            )
        except TimeoutError:
            job["abandoned"] = True
            raise ApiError(
                503,
                f"adapting {user!r} took over {self.limits.adapt_timeout:g} s "
                "(--adapt-timeout); nothing was stored",
                kind="server_error",
                code="adapt_timeout",
            ) from None
        return self.info(user)

    def _onboard(self, user: str, items: list[Any], key: str | None, job: dict) -> None:
        try:
            for _attempt in range(5):
                self.sync(user, force=True)
                if key is not None and self.store.has_key(user, key):
                    return  # a retry of a set stored already: counted once
                base = self.versions.get(user)
                sets = self.records[user].sets if base is not None else 0
                new = [
                    Preference(f"{user}/{sets + 1}/{i}", user, p.prompt, p.chosen, p.rejected)
                    for i, p in enumerate(items)
                ]
                prefs = self._kept(self.support.get(user, []) + new)
                vector = self._adapt(user, prefs)
                if job["abandoned"]:
                    log.warning("adapting %s finished after its request timed out: discarded", user)
                    return
                try:
                    version = self.store.add(user, new, vector, key=key, base=base)
                except Conflict:
                    continue  # another replica wrote this user meanwhile: adapt on theirs
                except Duplicate:
                    self.sync(user, force=True)
                    return
                # acknowledged from here on
                self._install(StoredUser(user, version, sets + 1, prefs, vector))
                return
            raise ApiError(409, f"user {user!r} is being written by other replicas; retry")
        finally:
            with self._count:
                self.pending -= 1

    def _adapt(self, user: str, prefs: list[Preference]) -> torch.Tensor | None:
        if self.adapter is not None and self.people.personalized:
            return self.adapter.adapt(user, prefs)  # its own model: nothing shared
        if self.people.adapts_in_place:  # the method touches shared weights: between steps
            return self.scheduler.call(lambda: self.people.adapt(user, prefs)).result()
        return self.people.adapt(user, prefs)

    def info(self, user: str) -> dict[str, Any]:
        """What the server holds for ``user`` (its own record; the model is not read)."""
        record = self.records.get(user)
        if record is not None:
            status, vector = "onboarded", record.vector
        elif user in self.people.base_users:
            status, vector = "trained", _rounded(self.people.base_vector(user))
        else:
            status, vector = "unknown", _rounded(self.people.default_vector())
        uses = (
            "own vector"
            if status != "unknown"
            else ("default vector" if self.limits.unknown_user == "default" else "refused")
        )
        return {
            "id": user,
            "object": "user",
            "status": status,
            "preference_sets": record.sets if record else 0,
            "preferences": record.preferences if record else 0,
            "uses": uses,
            "vector": None if vector is None else list(vector),
        }

    def stop(self) -> None:
        self.worker.shutdown(wait=True, cancel_futures=True)
        if self.adapter is not None:
            self.adapter.close()
