"""Backpressure and the OpenAI surface, against a real ``persalign serve`` process.

The server decodes 2 rows at most and lets 2 wait: 4 x max-batch concurrent clients get 200,
429 (with Retry-After) or 503, each with OpenAI's error body, the queue never grows past its
limit, and the server serves normally afterwards. The scheduler's queue deadline and the
middleware's 500 are checked in process, without models.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import types
import urllib.parse

import httpx
import pytest
from transformers import AutoTokenizer

from persalign.serve.engine import Row, RowSpec
from persalign.serve.guard import Guard
from persalign.serve.prometheus import ServeMetrics
from persalign.serve.scheduler import QueueFull, Scheduler
from persalign.serve.schemas import ServeLimits
from tests.unit.test_serve_server import PREFS, Server, completion, error_of, models  # noqa: F401

MAX_BATCH, MAX_QUEUE = 2, 2


@pytest.fixture(scope="module")
def small(models):  # noqa: F811 (the fixture imported above)
    policy, reward, state = models
    srv = Server(
        policy,
        reward,
        state.parent / "state-load",
        extra=["--max-batch", str(MAX_BATCH), "--max-queue", str(MAX_QUEUE)],
    )
    yield srv
    srv.kill()


def test_four_times_max_batch_clients_get_200_429_or_503_then_service_resumes(small):
    clients = 4 * MAX_BATCH
    answers: list[httpx.Response] = []
    seen: list[dict] = []
    stop = threading.Event()

    def send():
        body = completion(user="u1", max_tokens=40, persalign={"ignore_eos": True, "k": 2})
        answers.append(small.client.post("/v1/completions", json=body))

    def watch():
        while not stop.is_set():
            seen.append(small.client.get("/health").json())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=send) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    watcher.join(10)
    codes = sorted(a.status_code for a in answers)
    assert len(codes) == clients and set(codes) <= {200, 429, 503}, codes
    assert codes.count(200) >= MAX_BATCH and 429 in codes, codes
    for answer in answers:
        if answer.status_code != 200:
            assert error_of(answer)
            assert answer.headers["x-request-id"].startswith("req-")
        if answer.status_code == 429:
            assert int(answer.headers["retry-after"]) >= 1
    assert max(s["live_rows"] for s in seen) <= MAX_BATCH  # memory bounded
    assert max(s["waiting_rows"] for s in seen) <= MAX_QUEUE
    after = small.client.post("/v1/completions", json=completion(user="u2"))
    assert after.status_code == 200 and small.client.get("/health").json()["waiting_rows"] == 0


def test_a_non_streaming_client_that_disconnects_frees_its_row(small):
    body = completion(max_tokens=500, persalign={"ignore_eos": True, "decoder": "zero-shot"})
    # the client gives up after 50 ms, long before 500 tokens (about 1 ms each on the tiny model
    # of an idle machine; 0.5 s was not always enough there)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            small.url + "/v1/completions", json=body, headers=small.client.headers, timeout=0.05
        )
    deadline = time.monotonic() + 5
    while small.client.get("/health").json()["live_rows"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert small.client.get("/health").json()["live_rows"] == 0


NEUTRAL = {
    "n": 1,
    "top_p": 1,
    "logprobs": None,
    "echo": False,
    "best_of": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0.0,
    "logit_bias": {},
    "stream_options": None,
}


def test_neutral_openai_parameters_are_accepted_others_refused_by_name(small):
    assert small.client.post("/v1/completions", json=completion(**NEUTRAL)).status_code == 200
    chat = {"model": "persalign", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    ok = small.client.post(
        "/v1/chat/completions", json={**chat, "logprobs": False, "tool_choice": "none"}
    )
    assert ok.status_code == 200, ok.text
    for param, value in [
        ("n", 2),
        ("logprobs", 2),
        ("presence_penalty", 0.5),
        ("echo", True),
        ("top_p", 0.9),
        ("logit_bias", {"5": 1}),
    ]:
        bad = small.client.post("/v1/completions", json=completion(**{param: value}))
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param, (param, bad.text)
    bad = small.client.post("/v1/chat/completions", json={**chat, "logprobs": True})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "logprobs"


def test_include_usage_sends_a_usage_chunk(small):
    body = completion(user="u2", max_tokens=4, stream=True, stream_options={"include_usage": True})
    chunks = []
    with small.client.stream("POST", "/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    last = chunks[-1]
    assert last["choices"] == [] and last["usage"]["total_tokens"] == (
        last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]
    )
    assert all("usage" not in c for c in chunks[:-1])


def test_continuous_usage_stats_count_the_tokens_of_every_chunk(small):
    options = {"include_usage": True, "continuous_usage_stats": True}
    body = completion(user="u2", max_tokens=12, stream=True, stream_options=options)
    chunks = []
    with small.client.stream("POST", "/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    texts = [c for c in chunks if c["choices"] and c["choices"][0]["text"]]
    counts = [c["usage"]["completion_tokens"] for c in texts]
    assert texts and counts == sorted(counts) and counts[0] >= 1  # tokens so far, growing
    final = chunks[-1]["usage"]
    assert counts[-1] <= final["completion_tokens"] == 12
    assert all(c["usage"]["prompt_tokens"] == final["prompt_tokens"] for c in texts)
    plain = completion(user="u2", max_tokens=4, stream=True)
    with small.client.stream("POST", "/v1/completions", json=plain) as response:
        lines = [json.loads(x[6:]) for x in response.iter_lines() if x.startswith("data: {")]
    assert all("usage" not in c for c in lines)  # only when asked


def test_sampling_without_a_seed_returns_the_fresh_seed_it_used(small):
    body = completion(user="u1", max_tokens=8, temperature=1.5)
    first = small.client.post("/v1/completions", json=body).json()["persalign"]
    second = small.client.post("/v1/completions", json=body).json()["persalign"]
    assert first["seed"] != second["seed"]
    again = small.client.post("/v1/completions", json={**body, "seed": first["seed"]}).json()
    assert again["persalign"]["tokens"] == first["tokens"]


def test_completions_take_the_prompt_raw_unless_asked_for_the_template(small, models):  # noqa: F811
    tokenizer = AutoTokenizer.from_pretrained(models[0])
    prompt = "Say about cat sun"
    raw = small.client.post("/v1/completions", json=completion(prompt=prompt)).json()
    assert raw["usage"]["prompt_tokens"] == len(tokenizer(prompt)["input_ids"])
    body = completion(prompt=prompt, persalign={"chat_template": True})
    templated = small.client.post("/v1/completions", json=body).json()
    assert templated["usage"]["prompt_tokens"] > raw["usage"]["prompt_tokens"]


def test_chat_text_parts_are_joined_other_parts_refused(small):
    def chat(content):
        body = {"model": "persalign", "messages": [{"role": "user", "content": content}]}
        return small.client.post("/v1/chat/completions", json={**body, "max_tokens": 5})

    plain = chat("Hi there").json()["persalign"]["tokens"]
    parts = chat([{"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}])
    assert parts.status_code == 200 and parts.json()["persalign"]["tokens"] == plain
    image = chat([{"type": "image_url", "image_url": {"url": "http://x/y.png"}}])
    assert image.status_code == 400


def test_any_benchmark_user_id_is_addressable_and_responses_say_whose_vector(small):
    user = "user 7/ä.."
    path = "/v1/users/" + urllib.parse.quote(user, safe="")
    assert small.client.post(path + "/preferences", json=PREFS[:2]).status_code == 200
    info = small.client.get(path).json()
    assert info["id"] == user and info["status"] == "onboarded"
    own = small.client.post("/v1/completions", json=completion(user=user)).json()
    assert own["persalign"]["user_status"] == "own"
    other = small.client.post("/v1/completions", json=completion(user="nobody-here")).json()
    assert other["persalign"]["user_status"] == "default"


class Sink:
    def __init__(self):
        self.events = []

    def __call__(self, kind, data):
        self.events.append((kind, data))


def test_queue_limit_and_deadline_in_the_scheduler():
    closed = []
    engine = types.SimpleNamespace(close=lambda row: closed.append(row))
    scheduler = Scheduler(engine, max_batch=1, max_queue=2, queue_timeout=0.5)
    rows = [Row(RowSpec(policy_ids=[1], max_tokens=1), Sink()) for _ in range(3)]
    scheduler.submit(rows[0])
    scheduler.submit(rows[1])
    with pytest.raises(QueueFull):
        scheduler.submit(rows[2])
    rows[0].submitted -= 1.0  # waited past the deadline
    rows[1].cancelled = True  # its client left
    scheduler._drain_inbox(block=False)
    scheduler._drop_waiting()
    kind, data = rows[0].sink.events[0]
    assert kind == "error" and data["status"] == 503 and data["code"] == "queue_timeout"
    assert closed == [rows[1]] and scheduler.queued == 0 and not scheduler.waiting
    scheduler.submit(rows[2])  # room again


def test_an_unexpected_error_is_a_500_with_a_request_id():
    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    service = types.SimpleNamespace(metrics=ServeMetrics(), limits=ServeLimits())
    transport = httpx.ASGITransport(app=Guard(broken, service=service, api_key=None))

    async def call():
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/v1/models")

    response = asyncio.run(call())
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert request_id in response.json()["error"]["message"]
    assert response.json()["error"]["type"] == "server_error"


def test_concurrent_onboardings_completions_and_reads_never_500(small):
    codes: list[tuple[str, int]] = []

    def onboard(i):
        answer = small.client.post(f"/v1/users/c{i % 5}/preferences", json=PREFS[: 1 + i % 3])
        codes.append(("onboard", answer.status_code))
        codes.append(("read", small.client.get(f"/v1/users/c{i % 5}").status_code))

    def complete(i):
        body = completion(user=f"c{i % 5}", max_tokens=4)
        codes.append(("complete", small.client.post("/v1/completions", json=body).status_code))

    threads = [threading.Thread(target=onboard, args=(i,)) for i in range(10)]
    threads += [threading.Thread(target=complete, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(codes) == 30
    assert all(code in (200, 429) for _, code in codes), codes
    assert ("onboard", 200) in codes and ("complete", 200) in codes
