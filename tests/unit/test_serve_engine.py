"""Continuous batching is exact: rows joined mid-flight write what they write alone.

The reference is the shared decoder (``ArgsDecoder`` / ``ZeroShotDecoder``) run on one request
at a time; the server's engine decodes the same requests in batches that rows join and leave
between steps, with their own lambda, seed and budget.
"""

from __future__ import annotations

import threading

import pytest
import torch

import persalign.rewards as rewards
from persalign.decoding.args import ArgsDecoder, ArgsSettings
from persalign.decoding.base import DecodeSettings, GenerationRequest
from persalign.decoding.policy import Policy
from persalign.decoding.zero_shot import ZeroShotDecoder
from persalign.serve.engine import Engine, Row, RowSpec
from persalign.serve.scheduler import Scheduler

PROMPTS = [
    "Say about cat sun",
    "Title: a study of cats on mats, and more words here",
    "Hi",
    "Write a short line about the dog and the owl in the park",
    "owl",
]
USERS = ["u1", "u2", "u1", "u3", "u2"]


@pytest.fixture(scope="module")
def models(tiny_lm: str, tiny_lm_other: str):
    policy = Policy.load(tiny_lm_other, device="cpu")
    rm = rewards.create("mpu", backbone=tiny_lm, device="cpu", seed=0)
    heads = torch.randn(3, rm.user_dim, generator=torch.Generator().manual_seed(0))
    rm.set_users(["u1", "u2", "u3"], heads)
    return policy, rm


def alone(policy, rm, i: int, lam: float, tokens: int, temperature: float = 0.0, seed: int = 0):
    """The reference: the shared decoder, one request per batch."""
    request = GenerationRequest(f"q{i}", USERS[i], PROMPTS[i])
    mode = {"mode": "sample", "temperature": temperature} if temperature else {}
    settings = ArgsSettings(lam=lam, k=5, max_new_tokens=tokens, seed=seed, batch_size=1, **mode)
    if rm is None:
        zero = ZeroShotDecoder(policy, settings=DecodeSettings(max_new_tokens=tokens))
        return zero.generate([request], progress=False)[0].tokens
    return ArgsDecoder(policy, rm, settings).generate([request], progress=False)[0].tokens


def row(policy, rm, i: int, lam: float, tokens: int, temperature: float = 0.0, seed: int = 0):
    spec = RowSpec(
        policy_ids=policy.formatter.prompt_ids(PROMPTS[i]),
        reward_ids=None if rm is None else rm.formatter.prompt_ids(PROMPTS[i]),
        reward_user=USERS[i],
        max_tokens=tokens,
        lam=lam,
        k=5,
        temperature=temperature,
        seed=seed,
    )
    return Row(spec, sink=lambda *_: None)


def run_staggered(engine: Engine, rows: list[Row], joins: dict[int, list[int]]) -> None:
    """Start with rows[0], then at step s join the rows listed in ``joins[s]``; run to the end."""
    batch = engine.start([rows[0]])
    step = 0
    while batch.rows or any(s > step for s in joins):
        for s in [s for s in joins if s == step]:
            fresh = engine.start([rows[i] for i in joins.pop(s)])
            if batch.rows:
                engine.extend(batch, fresh)
            else:
                batch = fresh
        if batch.rows:
            engine.step(batch)
        step += 1


@pytest.mark.parametrize("reward", [True, False], ids=["args", "zero-shot"])
def test_rows_joined_mid_flight_write_what_they_write_alone(models, reward: bool):
    policy, rm = models
    rm = rm if reward else None
    lams = [2.0, 0.5, 1.0, 3.0]
    budgets = [6, 3, 8, 3]
    rows = [row(policy, rm, i, lams[i], budgets[i]) for i in range(4)]
    run_staggered(Engine(policy, rm), rows, {2: [1, 2], 4: [3]})
    for i, r in enumerate(rows):
        assert r.tokens == alone(policy, rm, i, lams[i], budgets[i]), f"row {i}"


def test_sampled_rows_draw_from_their_own_seed(models):
    policy, rm = models
    rows = [row(policy, rm, i, 1.0, 6, temperature=1.0, seed=10 + i) for i in range(3)]
    run_staggered(Engine(policy, rm), rows, {1: [1], 2: [2]})
    for i, r in enumerate(rows):
        assert r.tokens == alone(policy, rm, i, 1.0, 6, temperature=1.0, seed=10 + i)


def test_joined_logits_equal_the_single_row_logits(models):
    policy, rm = models
    engine = Engine(policy, rm)
    batch = engine.start([row(policy, rm, 1, 1.0, 20)])
    for _ in range(3):
        engine.step(batch)
    engine.extend(batch, engine.start([row(policy, rm, 2, 1.0, 20)]))  # shorter, padded left
    single = engine.start([row(policy, rm, 2, 1.0, 20)])
    torch.testing.assert_close(
        batch.policy.logits[1], single.policy.logits[0], rtol=1e-5, atol=1e-5
    )
    assert batch.policy.attention.shape[1] > single.policy.attention.shape[1]  # really padded


def test_scheduler_batches_concurrent_requests(models):
    policy, rm = models
    scheduler = Scheduler(Engine(policy, rm), max_batch=3)
    done = {}
    finished = threading.Event()

    def sink_for(i):
        def sink(kind, data):
            if kind == "done":
                done[i] = data
                if len(done) == 4:
                    finished.set()

        return sink

    rows = []
    for i in range(4):
        r = row(policy, rm, i, 1.0, 5)
        r.sink = sink_for(i)
        rows.append(r)
        scheduler.submit(r)
    scheduler.start()
    assert finished.wait(60)
    scheduler.stop()
    for i in range(4):
        assert done[i]["tokens"] == alone(policy, rm, i, 1.0, 5)
    sizes = scheduler.metrics.batch_size.collect()[0].samples
    total = next(s.value for s in sizes if s.name.endswith("_sum"))
    count = next(s.value for s in sizes if s.name.endswith("_count"))
    assert total / count > 1.5, "concurrent requests must share decoding steps"
    assert scheduler.live == 0


@pytest.mark.parametrize("spec", ["tiny", "bundled:smollm2-135m-instruct"])
def test_incremental_detokenization_equals_decoding_every_token(spec, tiny_lm):
    """The engine decodes a short window per step; the naive reference decodes all tokens."""
    from persalign.models import load_tokenizer
    from persalign.serve.engine import detokenize

    tokenizer = load_tokenizer(tiny_lm if spec == "tiny" else spec)
    generator = torch.Generator().manual_seed(0)
    for trial in range(5):
        ids = torch.randint(0, len(tokenizer), (120,), generator=generator).tolist()
        if trial == 0:
            ids = tokenizer("Hello  wörld, ünïcode 🙂 emoji\n and   spaces")["input_ids"] * 3
        r = Row(RowSpec(policy_ids=[0], max_tokens=len(ids)), lambda *_: None)
        for token in ids:
            r.tokens.append(token)
            r.text = detokenize(tokenizer, r)
            full = tokenizer.decode(r.tokens, skip_special_tokens=True)
            if not full.endswith("\ufffd"):
                assert r.text == full, (trial, len(r.tokens))
            else:
                assert full.startswith(r.text.rstrip("\ufffd"))


def run_scheduler(scheduler: Scheduler, rows: list[Row], timeout: float = 60) -> dict:
    """Submit ``rows`` before the thread starts (one admission round); their last events."""
    outcome: dict[int, tuple[str, dict]] = {}
    finished = threading.Event()

    def sink_for(i):
        def sink(kind, data):
            if kind in ("done", "error"):
                outcome[i] = (kind, data)
                if len(outcome) == len(rows):
                    finished.set()

        return sink

    for i, r in enumerate(rows):
        r.sink = sink_for(i)
        scheduler.submit(r)
    scheduler.start()
    assert finished.wait(timeout)
    scheduler.stop()
    return outcome


def out_of_memory_when(monkeypatch, engine: Engine, method: str, fails) -> list[int]:
    """Make ``engine.<method>`` (next_tokens: a batch; start: a list of rows) raise
    torch.OutOfMemoryError when ``fails(rows)``; returns the row counts of every call."""
    real, calls = getattr(engine, method), []

    def tight(arg):
        rows = arg.rows if method == "next_tokens" else arg
        calls.append(len(rows))
        if fails(rows):
            raise torch.OutOfMemoryError("out of memory (simulated)")
        return real(arg)

    monkeypatch.setattr(engine, method, tight)
    return calls


def holds_a_long_prompt(rows) -> bool:
    return any(len(r.spec.policy_ids) > 20 for r in rows)


def test_an_out_of_memory_step_fails_only_the_rows_that_do_not_fit(models, monkeypatch):
    """A step over 2 rows raises OOM: the newest rows fail with 503 one by one, the two that
    fit decode exactly what they decode alone."""
    policy, rm = models
    engine = Engine(policy, rm)
    attempts = out_of_memory_when(monkeypatch, engine, "next_tokens", lambda rows: len(rows) > 2)
    rows = [row(policy, rm, i, 1.0, 5) for i in range(4)]
    outcome = run_scheduler(Scheduler(engine, max_batch=4), rows)
    assert attempts[:3] == [4, 3, 2]
    for i in (0, 1):
        assert outcome[i][0] == "done" and outcome[i][1]["tokens"] == alone(policy, rm, i, 1.0, 5)
    for i in (2, 3):
        kind, data = outcome[i]
        assert kind == "error" and data["status"] == 503 and data["code"] == "out_of_memory"


def test_a_row_that_alone_does_not_fit_fails_and_the_server_goes_on(models, monkeypatch):
    policy, rm = models
    engine = Engine(policy, rm)
    out_of_memory_when(monkeypatch, engine, "next_tokens", holds_a_long_prompt)
    rows = [row(policy, rm, 1, 1.0, 4), row(policy, rm, 2, 1.0, 4)]  # 1: a long prompt
    assert len(rows[0].spec.policy_ids) > 20 >= len(rows[1].spec.policy_ids)
    outcome = run_scheduler(Scheduler(engine, max_batch=1), rows)
    assert outcome[0][0] == "error" and outcome[0][1]["code"] == "out_of_memory"
    assert outcome[1][0] == "done" and outcome[1][1]["tokens"] == alone(policy, rm, 2, 1.0, 4)


def test_an_out_of_memory_prefill_fails_only_the_row_that_does_not_fit(models, monkeypatch):
    """Three rows arrive together; prefilling any group holding the long one runs out of
    memory. The rows are then prefilled one at a time: the long one fails with 503, the other
    two decode exactly what they decode alone."""
    policy, rm = models
    engine = Engine(policy, rm)
    starts = out_of_memory_when(monkeypatch, engine, "start", holds_a_long_prompt)
    rows = [row(policy, rm, 2, 1.0, 4), row(policy, rm, 1, 1.0, 4), row(policy, rm, 0, 1.0, 4)]
    assert len(rows[1].spec.policy_ids) > 20 >= max(len(rows[i].spec.policy_ids) for i in (0, 2))
    outcome = run_scheduler(Scheduler(engine, max_batch=4), rows)
    assert starts[:4] == [3, 1, 1, 1]  # together, then one at a time
    assert outcome[1][0] == "error" and outcome[1][1]["status"] == 503
    assert outcome[1][1]["code"] == "out_of_memory"
    for n, i in ((0, 2), (2, 0)):
        assert outcome[n][0] == "done" and outcome[n][1]["tokens"] == alone(policy, rm, i, 1.0, 4)


def test_max_batch_tokens_admits_by_padded_tokens_not_rows(models):
    """Every row holds prompt + max_tokens; the batch is rows x the longest. With room for
    about two rows' tokens, no step ever runs more, and every row still finishes exactly."""
    policy, rm = models
    rows = [row(policy, rm, i, 1.0, 4) for i in (0, 2, 4, 0)]
    longest = max(r.size for r in rows)
    scheduler = Scheduler(Engine(policy, rm), max_batch=8, max_batch_tokens=2 * longest)
    outcome = run_scheduler(scheduler, rows)
    for n, i in enumerate((0, 2, 4, 0)):
        assert outcome[n][0] == "done" and outcome[n][1]["tokens"] == alone(policy, rm, i, 1.0, 4)
    samples = scheduler.metrics.batch_size.collect()[0].samples
    bucket_2 = next(
        s.value for s in samples if s.name.endswith("_bucket") and s.labels["le"] == "2.0"
    )
    count = next(s.value for s in samples if s.name.endswith("_count"))
    total = next(s.value for s in samples if s.name.endswith("_sum"))
    assert bucket_2 == count  # no step ran with more than two rows
    assert total / count > 1.2  # but rows did share steps
