"""Models loaded once: the workspace's LRU of loaded models and each job's start / compute split.

- ``ModelLRU``: keyed by the spec's hash (same spec: one load; another spec: another entry),
  least recently used evicted first when the models' bytes pass the bound, the newest always kept;
- ``JobClock``: time inside ``starting()`` is start, the rest compute, share = start / total; a
  Ray worker's first job also counts the process's age, later jobs do not; ``CostMeter.cost``
  and ``backends.run_job`` carry the split;
- frozen-mode model jobs share one adapter-free backbone.
"""

from __future__ import annotations

import pytest
import torch

from persalign.metrics.schema import COST_FIELDS
from persalign.runs import cost, workspace
from persalign.runs.cost import CostMeter, JobClock, job_clock, starting
from persalign.runs.model_jobs import build_reward_model
from persalign.runs.workspace import ModelLRU, model_bytes


def module(floats: int) -> torch.nn.Module:
    m = torch.nn.Module()
    m.register_buffer("w", torch.zeros(floats))
    return m


def test_lru_keys_by_spec_hash_and_loads_once():
    lru = ModelLRU(max_bytes=10_000)
    loads = []

    def load(name):
        loads.append(name)
        return module(10)

    a = lru.key("policy", {"spec": "x", "dtype": None})
    assert a == lru.key("policy", {"dtype": None, "spec": "x"})  # canonical JSON: order-free
    assert a != lru.key("policy", {"spec": "y", "dtype": None})
    assert a != lru.key("reward", {"spec": "x", "dtype": None})
    first = lru.get(a, lambda: load("x"))
    assert lru.get(a, lambda: load("again")) is first
    assert loads == ["x"] and (lru.hits, lru.misses) == (1, 1)


def test_lru_evicts_least_recently_used_beyond_the_memory_bound():
    lru = ModelLRU(max_bytes=250 * 4)  # room for two 100-float models, not three
    for name in ("a", "b"):
        lru.get(name, lambda: module(100))
    lru.get("a", lambda: pytest.fail("a is cached"))  # a is now the most recent
    lru.get("c", lambda: module(100))
    assert list(lru.entries) == ["a", "c"]  # b, the least recently used, went
    assert lru.total_bytes() == 800
    lru.get("big", lambda: module(1000))  # over the bound alone: kept, everything else goes
    assert list(lru.entries) == ["big"]


def test_model_bytes_counts_shared_tensors_once_and_reads_a_policy_model():
    m = torch.nn.Linear(4, 3)
    m.other = m.weight  # the same parameter twice
    assert model_bytes(m) == (12 + 3) * 4

    class Holder:
        model = torch.nn.Linear(2, 2, bias=False)

    assert model_bytes(Holder()) == 16 and model_bytes(object()) == 0


class FakeTime:
    """perf_counter that advances only when told (no timing flakiness)."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


def test_job_clock_splits_start_and_compute(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(cost, "time", fake)
    clock = JobClock()
    with clock.starting():
        fake.now += 2.0
    fake.now += 6.0
    assert clock.record() == {"start_seconds": 2.0, "compute_seconds": 6.0, "start_share": 0.25}


def test_a_workers_first_job_counts_its_start(monkeypatch):
    monkeypatch.setattr(cost, "_worker_started", [])
    monkeypatch.setattr(cost, "process_age_seconds", lambda: 7.0)
    first, second, local = JobClock(worker=True), JobClock(worker=True), JobClock()
    assert first.record()["start_seconds"] >= 7.0
    assert second.record()["start_seconds"] < 1.0 and local.record()["start_seconds"] < 1.0


def test_process_age_is_read_from_proc():
    age = cost.process_age_seconds()
    assert age is None or 0.0 < age < 24 * 3600  # this test process: started minutes ago


def test_cost_carries_the_running_jobs_split(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(cost, "time", fake)
    with job_clock() as clock:
        with starting():
            fake.now += 1.0
        fake.now += 3.0
        meter = CostMeter()
        meter.clock = cost.current_clock()
        record = meter.cost()
    assert clock is meter.clock and cost.current_clock() is None
    assert set(record) == set(COST_FIELDS)
    assert (record["start_seconds"], record["compute_seconds"], record["start_share"]) == (
        1.0,
        3.0,
        0.25,
    )
    assert CostMeter().cost()["start_share"] is None  # no clock: not recorded
    with starting():  # outside a job: counted nowhere, no error
        pass


def test_frozen_model_jobs_share_one_backbone(tiny_lm: str, monkeypatch):
    monkeypatch.setattr(workspace, "MODELS", ModelLRU(max_bytes=1 << 30))
    monkeypatch.setattr("persalign.runs.model_jobs.frozen_backbone", workspace.frozen_backbone)
    settings = {"backbone": tiny_lm, "device": "cpu", "backbone_training": "frozen"}
    with job_clock() as first_job:
        a = build_reward_model("global-rm", settings)
    with job_clock() as second_job:
        b = build_reward_model("lore", {**settings, "seed": 1})
    assert a.backbone is b.backbone and workspace.MODELS.misses == 1
    assert first_job.inside > second_job.inside  # the second job loaded no backbone
    again = build_reward_model("global-rm", settings)  # the head: as with a loaded backbone
    fresh = type(a)(a.config)  # its own backbone, loaded
    for name, tensor in again.state_dict().items():
        if not name.startswith("backbone."):
            assert torch.equal(tensor, fresh.state_dict()[name]), name
    lora = build_reward_model("global-rm", {"backbone": tiny_lm, "device": "cpu"})
    assert lora.backbone is not a.backbone  # LoRA trains its backbone: never shared
