"""The scheduler thread: the only code that touches the models while the server runs.

    scheduler = Scheduler(engine, max_batch=16, max_queue=64, queue_timeout=60.0,
                          max_batch_tokens=8192)
    scheduler.start()
    scheduler.submit(row)                         # decoded with whatever else is running
                                                  # (QueueFull when max_queue rows wait)
    future = scheduler.call(lambda: rm.adapt(...))  # run on the model thread, between steps
    scheduler.stop()                              # finishes the rows it holds, then returns

Continuous batching: between two decoding steps the thread admits waiting rows (up to
``max_batch`` live rows in all), prefills them as a small batch and joins them into the running
batch with the same key (``Engine.extend``); a batch whose state cannot be joined exactly gets
the new rows as a batch of its own, stepped alongside. Every batch advances one token per
round, finished rows retire at once, so no request waits for another one to finish, and rows
of different users share every policy and reward-model forward. Jobs (onboarding a user) run
on this thread too, between rounds, so nothing else touches a model concurrently.

Admission is by rows (``max_batch``) and, with ``max_batch_tokens``, by tokens: a waiting row
joins only while the live rows plus it, times the longest (prompt + max_tokens) among them
(rows are left-padded to the longest), fit; the queue stays in order. When choosing a step's
tokens runs out of memory (``torch.OutOfMemoryError``; the state is unchanged), the batch's
newest row fails with a 503 (``out_of_memory``) and the rest step again in the next round; a
row alone that does not fit fails the same way. When a prefill of several new rows runs out of
memory, they are prefilled one at a time, so only a row that does not fit alone fails (503).
Any other error fails only its batch's rows.

Backpressure: at most ``max_queue`` rows wait for room (``submit`` raises :class:`QueueFull`
beyond, the app's 429); a row that waited longer than ``queue_timeout`` seconds gets a 503
error event instead of a row; a cancelled waiting row (its client left) leaves the queue at the
next round. A row's error events carry ``{"status", "message", "code"}``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from persalign.serve.engine import Batch, Engine, Row, StepOutOfMemory
from persalign.serve.prometheus import ServeMetrics

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """``max_queue`` rows are already waiting for room."""


def failure(status: int, message: str, code: str) -> dict[str, Any]:
    """The payload of a row's ``error`` event."""
    return {"status": status, "message": message, "code": code}


class Scheduler:
    """Admits rows and jobs from any thread; decodes on its own thread."""

    def __init__(
        self,
        engine: Engine,
        max_batch: int = 16,
        metrics: ServeMetrics | None = None,
        max_queue: int | None = None,
        queue_timeout: float | None = None,
        max_batch_tokens: int | None = None,
    ):
        self.engine = engine
        self.max_batch_tokens = max_batch_tokens
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.queued = 0  # rows submitted and not yet admitted, refused or dropped
        self._count = threading.Lock()
        self.metrics = metrics or ServeMetrics()
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.waiting: collections.deque[Row] = collections.deque()
        self.batches: list[Batch] = []
        self._stopping = threading.Event()
        self.beat = time.monotonic()  # the loop's last pass (liveness: /health)
        self._thread = threading.Thread(target=self._run, name="persalign-scheduler", daemon=True)

    # ------------------------------------------------------------------ any thread
    def start(self) -> None:
        self._thread.start()

    def submit(self, row: Row) -> None:
        """Queue ``row``; its events go to ``row.sink`` from the scheduler thread.
        Raises QueueFull when ``max_queue`` rows are waiting already."""
        with self._count:
            if self.max_queue is not None and self.queued >= self.max_queue:
                raise QueueFull(f"{self.queued} requests are waiting already")
            self.queued += 1
        self.inbox.put(row)

    def _dequeued(self, count: int = 1) -> None:
        with self._count:
            self.queued -= count

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run ``fn`` on the scheduler thread between two steps; its result as a Future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.inbox.put((fn, future))
        return future

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stalled(self, limit: float) -> float | None:
        """Seconds since the loop last passed when over ``limit`` (idle, it passes every
        0.5 s), else None."""
        since = time.monotonic() - self.beat
        return since if since > limit else None

    @property
    def live(self) -> int:
        return sum(len(b.rows) for b in self.batches)

    def stop(self, timeout: float = 60.0) -> None:
        """Finish every row already submitted, then end the thread."""
        self._stopping.set()
        self.inbox.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ scheduler thread
    def _run(self) -> None:
        while True:
            self.beat = time.monotonic()
            idle = not self.batches and not self.waiting
            if idle and self._stopping.is_set() and self.inbox.empty():
                return
            self._drain_inbox(block=idle)
            self._drop_waiting()
            try:
                self._admit()
                self._round()
            except Exception as exc:  # a bug or an OOM must not kill the server silently
                log.exception("decoding failed")
                self._fail_all(failure(500, f"decoding failed: {exc}", "server_error"))
            self.metrics.live.set(self.live)
            self.metrics.waiting.set(len(self.waiting))

    def _drain_inbox(self, block: bool) -> None:
        try:
            item = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            if isinstance(item, Row):
                self.waiting.append(item)
            elif isinstance(item, tuple):
                fn, future = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:
                        future.set_exception(exc)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _drop_waiting(self) -> None:
        """Take cancelled rows (closed) and rows past the queue deadline (503) off the queue."""
        if not self.waiting:
            return
        now, kept = time.perf_counter(), collections.deque()
        for row in self.waiting:
            if row.cancelled:
                row.finish = "cancelled"
                self.engine.close(row)
            elif self.queue_timeout is not None and now - row.submitted > self.queue_timeout:
                message = f"the request waited over {self.queue_timeout:g} s for a row"
                row.sink("error", failure(503, message, "queue_timeout"))
            else:
                kept.append(row)
                continue
            self._dequeued()
        self.waiting = kept

    def _admit(self) -> None:
        """Move waiting rows into batches while there is room (same key: one prefill)."""
        fresh: dict[tuple, list[Row]] = {}
        room = self.max_batch - self.live
        sizes = [r.size for b in self.batches for r in b.rows]
        while self.waiting and room > 0:
            if self.max_batch_tokens is not None and sizes:
                longest = max(*sizes, self.waiting[0].size)
                if (len(sizes) + 1) * longest > self.max_batch_tokens:
                    break  # in order: the head of the queue waits for room
            row = self.waiting.popleft()
            sizes.append(row.size)
            self._dequeued()
            fresh.setdefault(self.engine.key(row), []).append(row)
            room -= 1
        for key, group in fresh.items():
            for rows, new in self._prefill(group):
                self._place(key, rows, new)

    def _prefill(self, rows: list[Row]) -> list[tuple[list[Row], Batch]]:
        """Start ``rows`` as one batch; out of memory, one row at a time, so that only a row
        that does not fit alone fails (503 ``out_of_memory``). Any other error fails them."""
        try:
            return [(rows, self.engine.start(rows))]
        except torch.OutOfMemoryError as exc:
            if len(rows) > 1:
                log.warning("out of memory prefilling %d rows: one at a time", len(rows))
                return [started for row in rows for started in self._prefill([row])]
            message = f"out of memory prefilling this request alone ({str(exc)[:200]})"
            rows[0].sink("error", failure(503, message, "out_of_memory"))
        except Exception as exc:  # a bug: these rows fail, the others go on
            log.exception("prefill failed")
            for row in rows:
                row.sink("error", failure(500, f"prefill failed: {exc}", "server_error"))
        return []

    def _place(self, key: Any, rows: list[Row], new: Batch) -> None:
        """Join ``new`` (just prefilled) to a running batch of the same key, or run it."""
        for row in rows:
            self.metrics.queue_wait.observe(row.admitted - row.submitted)
        target = next((b for b in self.batches if self.engine.key(b.rows[0]) == key), None)
        if target is not None and target.joinable and new.joinable:
            self.engine.extend(target, new)
        else:
            self.batches.append(new)

    def _round(self) -> None:
        """One step of every batch; finished rows are closed and leave."""
        for batch in list(self.batches):
            self.metrics.batch_size.observe(len(batch.rows))
            try:
                finished = self.engine.step(batch)
            except StepOutOfMemory as exc:  # the newest row leaves; the others retry
                log.warning("out of memory with %d rows: failing the newest", len(batch.rows))
                newest, others = batch.rows[-1], len(batch.rows) - 1
                if others:
                    self.engine.keep(batch, list(range(len(batch.rows) - 1)))
                else:
                    self.batches.remove(batch)
                message = f"out of memory decoding this request with {others} others"
                newest.sink("error", failure(503, f"{message} ({exc})", "out_of_memory"))
                continue
            except Exception as exc:  # a bug: this batch's rows fail, the others go on
                log.exception("decoding failed")
                for row in batch.rows:
                    row.sink("error", failure(500, f"decoding failed: {exc}", "server_error"))
                self.batches.remove(batch)
                continue
            for row in finished:
                self.metrics.tokens.inc(len(row.tokens))
                self.metrics.latency.observe(time.perf_counter() - row.submitted)
                self.engine.close(row)
            if not batch.rows:
                self.batches.remove(batch)

    def _fail_all(self, error: dict[str, Any]) -> None:
        for batch in self.batches:
            for row in batch.rows:
                row.sink("error", error)
        self.batches = []
