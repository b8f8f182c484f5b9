"""What a cell costs: training and adaptation time, decoding time, forward passes and memory.

    meter = CostMeter()
    with meter.peak_memory():                       # the whole cell
        with meter.counting(decoder, writer=policy, reward=rm.backbone):
            gens = generate_resumable(decoder, ...)  # only generation is timed and counted
    meter.generations, meter.models = gens, model_costs(model_dir)
    cost = meter.cost()                              # metrics.json's "cost" (schema.COST_FIELDS)

Forward passes are counted, not estimated. For the base policy (a ``Policy``) a forward
pre-hook on its ``nn.Module`` adds the number of rows of each call and its ``decode_hidden``
(the decoder stack alone: fused ARGS's one forward per step) is wrapped; the reward model's
backbone has its ``hidden`` and ``decode_hidden`` wrapped, for the length of the generation. A
batch call of B rows counts B, and ARGS's k candidates of a row, scored in one call, count as 1,
so fused ARGS counts 1 policy forward and 0 reward forwards per token. A ``Backbone`` (anything
with ``hidden``) is wrapped and a plain module is hooked, so a decoder that writes with the
method's own policy (P-DPO) counts that backbone as the writer. Embedder passes
(ICL-RAG retrieval) are not counted. ``*_per_token`` divide by the tokens generated while
counting, so a resumed cell divides by the tokens of the batches it generated itself. When
everything was generated before, the rates come from the generations' own ``seconds`` and the
forward counts are null.

Memory: ``peak_rss_mib`` is the peak resident memory of the process while the cell ran. On
Linux the kernel's high-water mark (VmHWM) is reset when the cell starts (``/proc/self/
clear_refs``). Elsewhere it is the process's lifetime peak (``ru_maxrss``), an upper bound.
It measures the whole process, so under the local backend it includes the models an earlier
job left loaded (they are shared with this cell), and it is not the cell's increment.
``peak_gpu_mib`` is ``torch.cuda.max_memory_allocated`` after a reset at the start, null
without CUDA.

Training and adaptation seconds come from the model job's ``run_model.json`` (``train_seconds``,
``adapt_seconds``, ``adapt_users``; null for a model trained before they were recorded).

Starting against computing: every job has a :class:`JobClock`. Time inside ``clock.starting()``
(plugins, benchmark loading and verification, reward-model and policy loads) is
``start_seconds``; the rest of the job is ``compute_seconds``; ``start_share`` is
start / (start + compute). The first job of a Ray worker process also counts the worker's age
when it begins (interpreter start and imports, ``worker_start_seconds``), which only that job
pays. Models kept loaded between jobs (``workspace.ModelLRU``) make later jobs' start small.

    clock = JobClock()
    with clock.starting():
        rm = load(...)
    ...
    clock.record()          # {"start_seconds": 1.9, "compute_seconds": 40.2, "start_share": 0.045}
"""

from __future__ import annotations

import logging
import os
import re
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from persalign.io import read_json

log = logging.getLogger(__name__)
MIB = 1024 * 1024
START_KEYS = ("start_seconds", "compute_seconds", "start_share")


_worker_started: list[bool] = []  # whether this process's first job has counted its age


def process_age_seconds(stat: str | Path = "/proc/self/stat") -> float | None:
    """Seconds since this process started (Linux ``/proc``), None where unknown."""
    try:
        ticks = int(Path(stat).read_text(encoding="ascii").rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text(encoding="ascii").split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class JobClock:
    """A job's seconds spent starting (loads, imports) and computing (see the module doc)."""

    def __init__(self, worker: bool = False) -> None:
        self.began = time.perf_counter()
        self.before = 0.0  # the worker's start before this job (its first job only)
        self.inside = 0.0  # starting time inside the job
        if worker and not _worker_started:
            _worker_started.append(True)
            self.before = process_age_seconds() or 0.0

    @contextmanager
    def starting(self) -> Iterator[None]:
        """Count the block as starting time."""
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.inside += time.perf_counter() - tick

    def record(self) -> dict[str, float]:
        """``start_seconds``, ``compute_seconds`` and ``start_share`` so far."""
        start = self.before + self.inside
        compute = max(0.0, time.perf_counter() - self.began - self.inside)
        total = start + compute
        return {
            "start_seconds": round(start, 3),
            "compute_seconds": round(compute, 3),
            "start_share": round(start / total, 4) if total > 0 else 0.0,
        }


_current: list[JobClock] = []  # the running job's clock (jobs run one at a time per process)


@contextmanager
def job_clock(worker: bool = False) -> Iterator[JobClock]:
    """A :class:`JobClock` for the job run inside the block; ``starting()`` finds it."""
    clock = JobClock(worker)
    _current.append(clock)
    try:
        yield clock
    finally:
        _current.remove(clock)


def current_clock() -> JobClock | None:
    """The running job's clock (None outside a job)."""
    return _current[-1] if _current else None


@contextmanager
def starting() -> Iterator[None]:
    """Count the block as the running job's starting time (nothing outside a job)."""
    if not _current:
        yield
        return
    with _current[-1].starting():
        yield


def _rows(args: tuple, kwargs: dict[str, Any]) -> int:
    """Rows of a forward call: the first tensor among input_ids, attention_mask, inputs_embeds
    (by keyword, then positionally)."""
    for name in ("input_ids", "attention_mask", "inputs_embeds"):
        value = kwargs.get(name)
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    for value in args:
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return 0


def model_costs(model_dir: Path | None) -> dict[str, float | None]:
    """``{"train_seconds", "adapt_seconds_per_user"}`` from a model job's run_model.json."""
    out: dict[str, float | None] = {"train_seconds": None, "adapt_seconds_per_user": None}
    marker = None if model_dir is None else model_dir / "run_model.json"
    if marker is None or not marker.is_file():
        return out
    record = read_json(marker)
    out["train_seconds"] = record.get("train_seconds")
    users, seconds = record.get("adapt_users"), record.get("adapt_seconds")
    if users and seconds is not None:
        out["adapt_seconds_per_user"] = round(seconds / users, 4)
    return out


class CostMeter:
    """Counts rows through the models and times generation (see module doc)."""

    def __init__(self) -> None:
        self.rows = {"policy": 0, "reward": 0}
        self.seconds = 0.0
        self.tokens = 0
        self.peak_rss_mib: float | None = None
        self.peak_gpu_mib: float | None = None
        self._rss_reset = False
        self.generations: list[dict[str, Any]] | None = None  # the cell's (None: none)
        self.models: dict[str, float | None] = model_costs(None)  # its model job's times
        self.clock: JobClock | None = None  # the cell's start / compute split

    # ------------------------------------------------------------------ counting
    def _count(self, role: str, target: Any) -> Any:
        """Start counting ``target``'s forwards as ``role``; returns the undo function."""
        wrapped = [n for n in ("hidden", "decode_hidden") if hasattr(target, n)]
        if "hidden" in wrapped:  # a reward-model Backbone: its two entry points
            hooked = None
        elif wrapped:  # a Policy: its model's forward, and decode_hidden (fused ARGS)
            hooked = target.model
        else:  # a plain nn.Module
            hooked = target
        for name in wrapped:
            original = getattr(target, name)

            def counted(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                self.rows[role] += _rows(args, kwargs)
                return _original(*args, **kwargs)

            setattr(target, name, counted)

        def hook(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
            self.rows[role] += _rows(args, kwargs)

        remove = None
        if isinstance(hooked, torch.nn.Module):
            remove = hooked.register_forward_pre_hook(hook, with_kwargs=True).remove

        def undo() -> None:
            for name in wrapped:
                delattr(target, name)  # the class's methods again
            if remove is not None:
                remove()

        return undo

    @contextmanager
    def counting(self, decoder: Any, writer: Any = None, reward: Any = None) -> Iterator[None]:
        """Time ``decoder.generate`` and count the tokens it returns and the rows through
        ``writer`` and ``reward`` (None: not counted), until the block ends."""
        original = decoder.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            out = original(*args, **kwargs)
            self.seconds += time.perf_counter() - started
            self.tokens += sum(len(g.tokens) for g in out)
            return out

        undo = [self._count(role, t) for role, t in (("policy", writer), ("reward", reward)) if t]
        decoder.generate = generate
        try:
            yield
        finally:
            del decoder.generate
            for step in undo:
                step()

    # ------------------------------------------------------------------ memory
    @contextmanager
    def peak_memory(self) -> Iterator[None]:
        """Record the peak RSS (and CUDA memory) of the process while the block runs."""
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # reset VmHWM, the resident high-water mark
            self._rss_reset = True
        except OSError:
            self._rss_reset = False
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            yield
        finally:
            self.peak_rss_mib = _peak_rss_mib(self._rss_reset)
            if cuda:
                self.peak_gpu_mib = round(torch.cuda.max_memory_allocated() / MIB, 1)

    # ------------------------------------------------------------------ the record
    def cost(self) -> dict[str, Any]:
        """metrics.json's ``cost`` (schema.COST_FIELDS) of the cell: ``generations`` and
        ``models`` (set by the cell) and what was counted."""
        gens = self.generations or []
        total = None
        if self.generations is not None:
            total = sum(len(g.get("tokens") or []) for g in gens)
        decode = forwards_policy = forwards_reward = None
        if self.tokens:
            decode = self.seconds / self.tokens
            forwards_policy = self.rows["policy"] / self.tokens
            forwards_reward = self.rows["reward"] / self.tokens
        elif total:  # all generated before: the generations' own per-row seconds
            decode = sum(float(g.get("seconds") or 0.0) for g in gens) / total
        return {
            **self.models,
            "decode_seconds_per_token": None if decode is None else round(decode, 6),
            "policy_forwards_per_token": _round(forwards_policy),
            "reward_forwards_per_token": _round(forwards_reward),
            "tokens_generated": total,
            "peak_rss_mib": self.peak_rss_mib,
            "peak_gpu_mib": self.peak_gpu_mib,
            **(self.clock.record() if self.clock else dict.fromkeys(START_KEYS)),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _peak_rss_mib(since_reset: bool) -> float | None:
    """VmHWM after a reset, else the lifetime peak from getrusage (KiB on Linux, bytes on macOS)."""
    if since_reset:
        try:
            with open("/proc/self/status", encoding="utf-8") as handle:
                found = re.search(r"VmHWM:\s+(\d+)\s+kB", handle.read())
            if found:
                return round(int(found.group(1)) / 1024, 1)
        except OSError:
            pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (MIB if sys.platform == "darwin" else 1024), 1)
