"""Onboarding users while the server decodes: adapt on a copy in one worker, install between steps.

    onboarder = Onboarder(people, store, scheduler, support, limits)
    onboarder.replay()                               # at start: the journal, before decoding
    info = await onboarder.onboard("alice", prefs)   # 429 when full, 503 after adapt_timeout
    onboarder.info("alice")                          # from the onboarder's own record

Adaptation runs in one worker thread (at a lower CPU priority than decoding) on a copy of the
reward model that shares its frozen weights and has its own user table
(``Personalizer.adapt``), so decoding goes on while a user onboards; the new vector is then
installed by the scheduler thread between two steps. At most ``max_onboarding_queue``
onboardings wait (a 429 beyond); one that takes longer than ``adapt_timeout`` seconds is
answered 503 and its result discarded (nothing journaled). A user keeps their latest
``max_user_preferences`` preferences (the journal keeps all; replay applies the same cap).
``info`` reads the onboarder's own record, never the model's user table, so it is safe while
the table is being swapped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import torch

from persalign.serve.api_errors import ApiError
from persalign.serve.personal import Personalizer
from persalign.serve.scheduler import Scheduler
from persalign.serve.schemas import ServeLimits
from persalign.serve.users import UserStore
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
    """Owns the onboarding worker and the record of onboarded users."""

    def __init__(
        self,
        people: Personalizer,
        store: UserStore | None,
        scheduler: Scheduler,
        support: dict[str, list[Preference]],
        limits: ServeLimits,
    ):
        self.people, self.store, self.scheduler = people, store, scheduler
        self.support, self.limits = support, limits
        self.records: dict[str, UserView] = {}
        self.worker = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="persalign-adapt", initializer=_lower_priority
        )
        self.pending = 0
        self._count = threading.Lock()

    def _kept(self, prefs: list[Preference]) -> list[Preference]:
        return prefs[-self.limits.max_user_preferences :]

    def replay(self) -> None:
        """Load the journal (re-adapting stale vectors) before the scheduler starts."""
        if self.store is None:
            return
        for user, record in self.store.load().items():
            prefs = self._kept(list(record.preferences))
            self.support[user] = prefs
            saved = self.store.read_vector(user)
            if self.people.personalized and (saved is None or saved[0] != record.seq):
                log.info("adapting %s again from the journal (seq %d)", user, record.seq)
                vector = self.people.adapt(user, prefs)
                self.store.write_vector(user, record.seq, vector)
                saved = (record.seq, vector)
            vector = saved[1] if saved else None
            self.people.install(user, vector)
            self.records[user] = UserView(len(prefs), record.sets, _rounded(vector))

    async def onboard(self, user: str, items: list[Any]) -> dict[str, Any]:
        """Adapt ``user`` on their kept preferences plus ``items``; journal, persist, install."""
        if self.store is None:
            raise ApiError(409, "this server has no state folder (--state-dir)")
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
        future = self.worker.submit(self._onboard, user, items, job)
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

    def _onboard(self, user: str, items: list[Any], job: dict[str, bool]) -> None:
        try:
            seq0 = self.store.next_seq
            new = [
                Preference(f"{user}/{seq0}/{i}", user, p.prompt, p.chosen, p.rejected)
                for i, p in enumerate(items)
            ]
            prefs = self._kept(self.support.get(user, []) + new)
            if self.people.adapts_in_place:  # the method touches shared weights: between steps
                vector = self.scheduler.call(lambda: self.people.adapt(user, prefs)).result()
            else:
                vector = self.people.adapt(user, prefs)
            if job["abandoned"]:
                log.warning("adapting %s finished after its request timed out: discarded", user)
                return
            seq, _ = self.store.append(user, new)  # acknowledged from here on
            if vector is not None:
                self.store.write_vector(user, seq, vector)
            self.scheduler.call(lambda: self.people.install(user, vector)).result()
            self.support[user] = prefs
            sets = self.records[user].sets if user in self.records else 0
            self.records[user] = UserView(len(prefs), sets + 1, _rounded(vector))
        finally:
            with self._count:
                self.pending -= 1

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
