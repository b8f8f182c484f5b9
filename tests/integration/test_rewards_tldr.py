"""A reward model trains for a few steps on the real TL;DR batches with the bundled SmolLM2."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from persalign.data import BUILDERS, BuildOptions, load_benchmark
from persalign.metrics.ranking import rm_accuracy
from persalign.rewards import create, load

pytestmark = pytest.mark.integration


def test_lore_trains_adapts_and_scores_on_real_tldr(shared_data: Path, tmp_path: Path):
    tldr = shared_data / "tldr"
    BUILDERS.get("tldr")(
        BuildOptions(source=str(tldr), split_file=str(tldr / "pal_worker_ids.json")),
        tmp_path / "bench",
    )
    bench = load_benchmark(tmp_path / "bench")
    rm = create(
        "lore",
        seed=0,
        max_steps=3,
        batch_size=2,
        max_prompt_tokens=96,
        max_response_tokens=32,
        device="cpu",
    )
    history = rm.fit(bench.train, progress=False, log_path=tmp_path / "log.jsonl")
    assert len(history) == 3 and all(math.isfinite(r["loss"]) for r in history)
    user = bench.adapt_users()[0]
    before = {k: v.clone() for k, v in rm.state_dict().items() if k != "user_table"}
    rm.adapt(user.user, list(user.support)[:4])
    after = rm.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    query = list(user.query)[:4]
    result = rm_accuracy(rm, query)
    assert result["users"] == 1 and 0.0 <= result["mean"] <= 1.0
    prefix = rm.prefix_rewards(
        [q.prompt for q in query[:2]], [q.chosen for q in query[:2]], [user.user] * 2
    )
    assert torch.isfinite(prefix.rewards).all() and (prefix.lengths > 0).all()
    rm.save(tmp_path / "model")
    again = load(tmp_path / "model")
    torch.testing.assert_close(
        again.sequence_rewards([query[0].prompt], [query[0].chosen], [user.user]),
        rm.sequence_rewards([query[0].prompt], [query[0].chosen], [user.user]),
    )
