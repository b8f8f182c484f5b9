"""Adaptation in a child process (serve.adapt_process): the same vector as in the server, at
idle priority, errors that name the user, a dead child restarted, and a Service that onboards
through it."""

from __future__ import annotations

import asyncio
import os

import pytest
import torch

import persalign.rewards as rewards
from persalign.decoding.policy import Policy
from persalign.serve.adapt_process import AdaptProcess, AdaptProcessError
from persalign.serve.personal import Personalizer
from persalign.serve.schemas import ServeLimits
from persalign.serve.service import Service
from persalign.types import Preference


def prefs(user: str, n: int) -> list[Preference]:
    return [
        Preference(f"{user}/{i}", user, f"Say about cat {i}", "cat alpha beta", "cat omega")
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def saved(tiny_lm, tmp_path_factory):
    rm = rewards.create("mpu-avg", backbone=tiny_lm, device="cpu", seed=0, adapt_steps=30)
    rm.set_users(
        ["u1", "u2"], torch.randn(2, rm.user_dim, generator=torch.Generator().manual_seed(0))
    )
    folder = tmp_path_factory.mktemp("adapt-process") / "rm"
    rm.save(str(folder))
    return folder, rewards.load(folder, device="cpu")


@pytest.fixture(scope="module")
def adapter(saved):
    process = AdaptProcess(saved[0], {"device": "cpu"})
    yield process
    process.close()


def test_the_child_adapts_as_the_server_would_at_idle_priority(saved, adapter):
    _, rm = saved
    here = Personalizer(rm, "default").adapt("alice", prefs("alice", 3))
    there = adapter.adapt("alice", prefs("alice", 3))
    assert there is not None and there.shape == here.shape
    assert torch.allclose(there, here, atol=1e-6)
    assert not torch.allclose(there, rm.user_table.mean(0), atol=1e-3)  # it did adapt
    child = adapter._child
    if hasattr(os, "sched_getscheduler"):  # the idle class, or nice 19 where it is refused
        idle = os.sched_getscheduler(child.pid) == os.SCHED_IDLE
        assert idle or os.getpriority(os.PRIO_PROCESS, child.pid) == 19
    assert adapter.adapt("alice", prefs("alice", 3)).tolist() == there.tolist()  # deterministic


def test_a_dead_child_is_started_again_and_errors_name_the_user(saved, adapter, tmp_path):
    dead = adapter._child
    dead.kill()
    dead.wait()
    assert adapter.adapt("bob", prefs("bob", 2)) is not None  # found dead, started again
    assert adapter._child.pid != dead.pid and adapter._child.poll() is None
    with pytest.raises(AdaptProcessError, match="adapting 'carol': "):
        bad = Preference("c/0", "carol", 123, "a", "b")  # not text: the tokenizer refuses it
        adapter.adapt("carol", [bad])  # the method's own error, named; the child lives on
    assert adapter._child.poll() is None
    broken = AdaptProcess(tmp_path / "no-model", {"device": "cpu"})  # dies while loading
    try:
        with pytest.raises(AdaptProcessError, match=r"exited \(code 1\) while adapting 'dan'"):
            broken.adapt("dan", prefs("dan", 2))
    finally:
        broken.close()


def test_a_service_onboards_through_the_child(saved, tiny_lm_other, tmp_path):
    folder, rm = saved
    process = AdaptProcess(folder, {"device": "cpu"})
    policy = Policy.load(tiny_lm_other, device="cpu")
    served = rewards.load(folder, device="cpu")
    service = Service(policy, served, ServeLimits(), state_dir=tmp_path, adapter=process)
    service.start()
    try:
        calls = []
        service.people.adapt = lambda *a: calls.append(a)  # must not be used: the child adapts
        info = asyncio.run(service.onboard("dora", prefs("dora", 3)))
        assert info["status"] == "onboarded" and not calls
        want = Personalizer(rm, "default").adapt("dora", prefs("dora", 3))
        assert torch.allclose(served.user_table[served.user_ids["dora"]], want, atol=1e-5)
    finally:
        service.stop()
    assert process._child is None  # stopping the service closes the child
