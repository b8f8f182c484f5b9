"""``persalign serve`` as a real process on 127.0.0.1: API, errors, streaming, users, signals.

One server (tiny random models) serves most tests; the last test kills it with ``kill -9`` while
users are being onboarded, restarts it on the same state folder (its SQLite user store),
checks that every acknowledged preference set survived, then sends SIGTERM during a request
and checks that the request finishes and the process exits 0. Every wait is bounded; no
process is left running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

import persalign.rewards as rewards
from persalign.cli import main
from persalign.decoding.args import ArgsDecoder, ArgsSettings
from persalign.decoding.base import GenerationRequest
from persalign.decoding.policy import Policy
from persalign.serve.store import UserStore

KEY = "test-key-123"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "serving.md"
AUTH = {"Authorization": f"Bearer {KEY}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A ``persalign serve`` subprocess and an HTTP client for it."""

    def __init__(
        self,
        policy: str,
        reward: Path,
        state: Path,
        key: str | None = None,
        extra=(),
        args=None,
    ):
        """``args``: the serve options, in place of those made of ``policy``, ``reward``
        and ``state`` (docs/tutorial.md's pasted command); ``extra`` is added after them."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if args is None:
            args = ["--policy", policy, "--reward", str(reward), "--state-dir", str(state)]
            args += ["--max-batch", "8", "--k", "5", "--device", "cpu"]
            args += ["--max-queue", "8", "--queue-timeout", "30"]
        args = [*args, "--port", str(self.port), *extra]  # the last value wins
        env = {k: v for k, v in os.environ.items() if k != "PERSALIGN_API_KEY"}
        env.update({"PERSALIGN_API_KEY": key} if key else {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "persalign.cli", "-q", "serve", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, headers=AUTH if key else {}, timeout=60)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read().decode()
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.kill()
        raise AssertionError("server did not start within 90 s")

    def kill(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def models(tiny_lm: str, tiny_lm_other: str, tmp_path_factory: pytest.TempPathFactory):
    """The policy spec, a saved personalized reward model (users u1-u3), and a state folder."""
    rm = rewards.create("mpu", backbone=tiny_lm, device="cpu", seed=0, adapt_steps=5)
    rm.set_users(
        ["u1", "u2", "u3"], torch.randn(3, rm.user_dim, generator=torch.Generator().manual_seed(0))
    )
    folder = tmp_path_factory.mktemp("serve-rm")
    rm.save(str(folder / "rm"))
    return tiny_lm_other, folder / "rm", folder / "state"


@pytest.fixture(scope="module")
def server(models):
    policy, reward, state = models
    srv = Server(policy, reward, state, key=KEY)
    yield srv
    srv.kill()


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return body["error"]["message"]


def completion(**extra) -> dict:
    return {"model": "persalign", "prompt": "Say about cat sun", "max_tokens": 6, **extra}


def test_api_key_is_required_everywhere_but_probes(server):
    bare = httpx.Client(base_url=server.url, timeout=30)
    assert bare.get("/health").status_code == 200  # liveness probes and scrapers, as in vLLM
    assert bare.get("/metrics").status_code == 200
    for method, path in [
        ("GET", "/v1/models"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/users/u1/preferences"),
        ("GET", "/v1/users/u1"),
    ]:
        response = bare.request(method, path, json=completion())
        assert response.status_code == 401, path
        assert "API key" in error_of(response)
    wrong = bare.get("/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert server.client.get("/v1/models").json()["data"][0]["id"] == "persalign"
    bare.close()


BAD_REQUESTS = [
    ("/v1/completions", b"{not json", 400),
    ("/v1/completions", completion(model="gpt-4"), 404),
    ("/v1/completions", completion(max_tokens=-1), 400),
    ("/v1/completions", completion(max_tokens=10**9), 400),
    ("/v1/completions", completion(persalign={"k": 0}), 400),
    ("/v1/completions", completion(persalign={"k": 10**6}), 400),
    ("/v1/completions", completion(persalign={"lam": -1}), 400),
    ("/v1/completions", completion(persalign={"lam": 1e9}), 400),
    ("/v1/completions", completion(persalign={"decoder": "nope"}), 400),
    ("/v1/completions", completion(prompt=["a", "b"]), 400),
    ("/v1/completions", completion(prompt=""), 400),
    ("/v1/completions", completion(user="  "), 400),
    ("/v1/completions", completion(user="a\x00b"), 400),
    ("/v1/completions", completion(bogus=1), 400),
    ("/v1/completions", completion(prompt="word " * 3000), 400),  # over the prompt budget
    ("/v1/completions", [1, 2], 400),
    ("/v1/chat/completions", {"model": "persalign", "messages": []}, 400),
    ("/v1/users/u9/preferences", [{"prompt": "p", "chosen": "a"}], 400),
    ("/v1/users/u9/preferences", [{"prompt": "p", "chosen": "a", "rejected": "a"}], 400),
    ("/v1/users/u9/preferences", [{"prompt": "p", "chosen": " ", "rejected": "a"}], 400),
    ("/v1/users/u9/preferences", [{"prompt": 3, "chosen": "a", "rejected": "b"}], 400),
    ("/v1/users/u9/preferences", [], 400),
    ("/v1/users/%20%20/preferences", [{"prompt": "p", "chosen": "a", "rejected": "b"}], 400),
    ("/v1/completions", b"x" * 2_000_000, 413),
]


@pytest.mark.parametrize(("path", "body", "status"), BAD_REQUESTS)
def test_bad_requests_get_openai_errors(server, path, body, status):
    if isinstance(body, bytes):
        response = server.client.post(
            path, content=body, headers={"Content-Type": "application/json"}
        )
    else:
        response = server.client.post(path, json=body)
    assert response.status_code == status, response.text
    assert error_of(response)


def test_a_good_request_still_works_and_metrics_count(server):
    response = server.client.post("/v1/completions", json=completion(user="u1"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion" and body["usage"]["completion_tokens"] >= 1
    text = server.client.get("/metrics").text
    for name in (
        "persalign_requests_total",
        "persalign_batch_size_bucket",
        "persalign_queue_wait_seconds_bucket",
        "persalign_request_latency_seconds_count",
        "persalign_generated_tokens_total",
    ):
        assert name in text
    assert re.search(
        r'persalign_requests_total\{endpoint="/v1/completions",status="400"\} [1-9]', text
    )


PROMPTS = [
    "Say about cat sun",
    "Hi",
    "Write a short line about the dog",
    "owl and fig",
    "Title: mats",
]


def test_batched_requests_write_what_a_single_request_run_writes(server, models):
    """Greedy: the server's text, with several users' requests in flight, equals the shared
    decoder's output for that request decoded alone."""
    policy_spec, reward, _ = models
    bodies = [
        completion(
            prompt=p,
            user=f"u{1 + i % 3}",
            max_tokens=8,
            persalign={"lam": 2.0, "chat_template": True},  # as the shared decoder renders it
        )
        for i, p in enumerate(PROMPTS)
    ]
    results: dict[int, dict] = {}

    def send(i):
        results[i] = server.client.post("/v1/completions", json=bodies[i]).json()

    before = batch_sizes(server)
    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    after = batch_sizes(server)
    assert (after[0] - before[0]) / (after[1] - before[1]) > 1.5, "requests did not share steps"
    policy = Policy.load(policy_spec, device="cpu")
    rm = rewards.load(reward)
    decoder = ArgsDecoder(policy, rm, ArgsSettings(lam=2.0, k=5, max_new_tokens=8, batch_size=1))
    for i, body in enumerate(bodies):
        alone = decoder.generate(
            [GenerationRequest("q", body["user"], body["prompt"])], progress=False
        )
        assert results[i]["persalign"]["tokens"] == alone[0].tokens, i
        assert results[i]["choices"][0]["text"] == alone[0].text


def test_streaming_equals_the_plain_response(server):
    body = completion(user="u2", max_tokens=6, persalign={"ignore_eos": True})
    plain = server.client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    pieces, done = [], False
    with server.client.stream(
        "POST",
        "/v1/completions",
        json={**body, "stream": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                pieces.append(json.loads(line[6:])["choices"][0]["text"])
    assert done and "".join(pieces) == plain


def batch_sizes(server) -> tuple[float, float]:
    """(sum, count) of the server's batch-size histogram: rows per decoding step."""
    text = server.client.get("/metrics").text
    total = re.search(r"^persalign_batch_size_sum (\S+)$", text, re.M).group(1)
    count = re.search(r"^persalign_batch_size_count (\S+)$", text, re.M).group(1)
    return float(total), float(count)


def tokens_generated(server) -> float:
    text = server.client.get("/metrics").text
    return float(re.search(r"^persalign_generated_tokens_total (\S+)$", text, re.M).group(1))


def test_a_client_that_disconnects_frees_its_row(server):
    before = tokens_generated(server)
    body = completion(user="u1", max_tokens=500, stream=True, persalign={"ignore_eos": True})
    with server.client.stream("POST", "/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                break  # hang up after the first token
    deadline = time.monotonic() + 30
    while server.client.get("/health").json()["live_rows"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.client.get("/health").json()["live_rows"] == 0
    assert tokens_generated(server) - before < 500, "the row ran to max_tokens"


def run_doc_block(server, language: str, starts: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), re.S)
    block = next(b for b in blocks if b.startswith(starts))
    block = block.replace("http://127.0.0.1:8000", server.url)
    env = {**os.environ, "PERSALIGN_API_KEY": KEY}
    command = ["bash", "-c", block] if language == "bash" else [sys.executable, "-c", block]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_docs_examples_run(server):
    curl = run_doc_block(server, "bash", "curl -s http://127.0.0.1:8000/v1/completions")
    assert json.loads(curl)["choices"][0]["finish_reason"] in ("stop", "length")
    out = run_doc_block(server, "python", "import os")
    assert out.strip(), "the openai client example printed nothing"


PREFS = [
    {"prompt": f"Say about {w}", "chosen": f"{w} alpha", "rejected": f"{w} omega"}
    for w in ("cat", "dog", "sun")
]


def test_onboarding_a_user_changes_their_vector(server):
    default = server.client.get("/v1/users/newbie").json()
    assert default["status"] == "unknown" and default["uses"] == "default vector"
    answer = server.client.post("/v1/users/newbie/preferences", json=PREFS)
    assert answer.status_code == 200, answer.text
    info = server.client.get("/v1/users/newbie").json()
    assert (
        info["status"] == "onboarded" and info["preferences"] == 3 and info["preference_sets"] == 1
    )
    assert info["vector"] != default["vector"]
    reply = server.client.post("/v1/completions", json=completion(user="newbie"))
    assert reply.status_code == 200


def test_kill_9_during_onboarding_then_restart_then_sigterm_drains(server, models):
    policy, reward, state = models
    acknowledged: dict[str, list] = {}
    stop = threading.Event()

    def onboard():
        i = 0
        while not stop.is_set() and i < 200:
            user = f"k{i % 4}"
            try:
                answer = server.client.post(
                    f"/v1/users/{user}/preferences", json=PREFS[: 1 + i % 3]
                )
            except httpx.TransportError:
                return
            if answer.status_code == 200:
                acknowledged[user] = answer.json()
            i += 1

    worker = threading.Thread(target=onboard)
    worker.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(server.proc.pid, signal.SIGKILL)  # mid-write, most likely
    server.proc.wait(30)
    stop.set()
    worker.join(60)
    assert len(acknowledged) == 4
    restarted = Server(policy, reward, state)
    try:
        for user, before in acknowledged.items():
            now = restarted.client.get(f"/v1/users/{user}").json()
            assert now["preference_sets"] >= before["preference_sets"], user
            if now["preference_sets"] == before["preference_sets"]:
                torch.testing.assert_close(
                    torch.tensor(now["vector"]),
                    torch.tensor(before["vector"]),
                    rtol=1e-4,
                    atol=1e-5,
                )
        for stored in UserStore.open(None, folder=state).load().values():
            assert stored.vector.shape == (len(before["vector"]),)  # never torn
        outcome = {}

        def long_request():
            body = completion(user="k1", max_tokens=40, persalign={"ignore_eos": True})
            outcome["response"] = restarted.client.post("/v1/completions", json=body)

        request = threading.Thread(target=long_request)
        request.start()
        deadline = time.monotonic() + 30
        while (
            not restarted.client.get("/health").json()["live_rows"] and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        restarted.proc.send_signal(signal.SIGTERM)
        request.join(120)
        assert restarted.proc.wait(60) == 0
        assert outcome["response"].status_code == 200
        assert outcome["response"].json()["usage"]["completion_tokens"] == 40
    finally:
        restarted.kill()


def test_serve_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--policy", "--reward", "--decoder", "--api-key", "--max-batch", "--host"):
        assert option in out
