"""Throughput and latency of ``persalign serve`` under concurrent load (prints one JSON object).

    flock /tmp/heavy.lock python benchmarks/bench_serve.py [--policy bundled:smollm2-135m-instruct]
        [--train-steps 4] [--requests-per-client 3] [--users 256] [--frozen]

Trains a small MPU reward model on the bundled policy for a few steps (16 users, synthetic
preferences; speed does not depend on how good it is), then gives it ``--users`` (256) users,
each with a vector of its own (the trained ones plus seeded noise), starts ``persalign serve``
on 127.0.0.1 (a free port, never another address), and drives it with a bounded load generator
at concurrency 1, 8 (then 8 again while users onboard) and 32: each client streams
``--requests-per-client`` 32-token completions (eos suppressed), every request for the next of
the distinct users (handed out once each across the phases; concurrency 32 takes as many
requests per client as it needs for the run to reach all ``--users``: ``distinct_users``).
Reports per concurrency: tokens/s, p50/p95/p99 latency, p50/p99 time to first token, mean batch
size (the server's ``persalign_batch_size`` histogram), failed requests; concurrency 8 while one
new user onboards every second (``onboarding_throughput_ratio``: tokens/s with onboarding over
without); one ``--gap-tokens`` stream alone and then while one user onboards every second
(``onboarding_max_gap_over_median``: its largest gap between two tokens over its median gap, a
chunk's time divided by the tokens it brings: the server holds blanks back until the next
visible text, ``token_gaps``); and ``zero-shot`` decoding at 1 and 8 for reference. Targets
(issues 15, 25): throughput at 8 >= 3x throughput at 1; p99 latency at 8 <= 3x the p50 at 1; no
failed request; throughput with onboarding >= 0.8x without; the largest token gap while users
onboard <= 2x the median.

``--frozen`` serves a reward model with a frozen backbone (its LoRA weights zeroed after the
few training steps; speed does not depend on how good it is): the server then loads it onto the
policy's weights and decodes with fused ARGS (one policy forward per step), so the numbers
compare the two serving paths. Smoke: ``--frozen --train-steps 1 --users 16 --tokens 4
--requests-per-client 1``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

import persalign.rewards as rewards
from persalign.types import Preference

WORDS = ["cat", "dog", "sun", "map", "pen", "cup", "box", "hat", "car", "bee", "owl", "fig"]
USERS = [f"user{i:02d}" for i in range(16)]
NEW_USERS = itertools.count()  # ids of the users onboarded during the run


def train_reward_model(
    policy: str, steps: int, folder: Path, users: int, frozen: bool = False
) -> list[str]:
    """Train on the 16 users, then serve ``users`` users with vectors of their own (with
    ``frozen``, the LoRA weights zeroed: a frozen backbone, the policy's own)."""
    rng = random.Random(0)
    prefs = []
    for u, user in enumerate(USERS):
        for i in range(4):
            word = rng.choice(WORDS)
            chosen, rejected = (f"{word} alpha", f"{word} omega")[:: 1 if u % 2 else -1]
            prefs.append(Preference(f"{user}/{i}", user, f"A title about {word}", chosen, rejected))
    rm = rewards.create("mpu", backbone=policy, max_steps=steps, device="cpu")
    rm.fit(prefs)
    if frozen:
        with torch.no_grad():
            for name, param in rm.backbone.named_parameters():
                if "lora_B" in name:
                    param.zero_()
    names = [f"u{i:04d}" for i in range(users)]
    generator = torch.Generator().manual_seed(0)
    base = rm.user_table.detach()[torch.arange(users) % len(USERS)]  # [users, D]
    rm.set_users(names, base + 0.1 * torch.randn(base.shape, generator=generator))
    rm.save(str(folder))
    return names


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def batch_stats(client: httpx.Client) -> tuple[float, float]:
    text = client.get("/metrics").text
    total = float(re.search(r"^persalign_batch_size_sum (\S+)$", text, re.M).group(1))
    count = float(re.search(r"^persalign_batch_size_count (\S+)$", text, re.M).group(1))
    return total, count


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def stream_chunks(client: httpx.Client, body: dict):
    """Each streamed chunk of one completion (a dict), as it arrives; an error raises."""
    with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.read()[:200]!r}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(str(chunk["error"])[:200])
            yield chunk


def has_text(chunk: dict) -> bool:
    return bool(chunk["choices"] and chunk["choices"][0]["text"])


def stream_one(client: httpx.Client, body: dict) -> tuple[int, float | None]:
    """(completion tokens, seconds to the first token) of one streamed completion."""
    started, first, used = time.perf_counter(), None, 0
    for chunk in stream_chunks(client, body):
        if first is None and has_text(chunk):
            first = time.perf_counter() - started
        if chunk.get("usage"):
            used = chunk["usage"]["completion_tokens"]
    return used, first


def token_gaps(client: httpx.Client, user: str, tokens: int) -> list[float]:
    """Seconds between two tokens of one streamed ARGS completion for ``user``: the time
    between two text chunks over the tokens the later one brought (the server holds blanks
    back until the next visible text, so a chunk after ``"\\n\\n"`` brings 2 or 3 tokens;
    counted from each chunk's usage, ``stream_options.continuous_usage_stats``)."""
    body = {
        "model": "persalign",
        "prompt": "Write a short title for a paper about the sea.",
        "max_tokens": tokens,
        "user": user,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "persalign": {"ignore_eos": True, "decoder": "args", "chat_template": True},
    }
    stamps = [
        (time.perf_counter(), chunk["usage"]["completion_tokens"])
        for chunk in stream_chunks(client, body)
        if has_text(chunk)
    ]
    return [(b - a) / max(1, m - n) for (a, n), (b, m) in itertools.pairwise(stamps)]


def gap_ratio(gaps: list[float]) -> dict:
    """The largest gap between two tokens over the median gap (target with onboarding: <= 2)."""
    median = statistics.median(gaps)
    return {
        "tokens": len(gaps) + 1,
        "median_gap_s": round(median, 4),
        "max_gap_s": round(max(gaps), 4),
        "max_gap_over_median": round(max(gaps) / median, 2),
    }


class UserCursor:
    """The served users in order, handed out once each across every phase of the run (then
    from the start again), so that the run's requests reach every distinct user."""

    def __init__(self, users: list[str]):
        self.users, self.used = users, 0

    def take(self, n: int) -> list[str]:
        names = [self.users[(self.used + i) % len(self.users)] for i in range(n)]
        self.used += n
        return names

    def left(self) -> int:
        return max(0, len(self.users) - self.used)


def load(
    client: httpx.Client,
    concurrency: int,
    per_client: int,
    tokens: int,
    users: UserCursor,
    decoder: str = "args",
) -> dict:
    """``concurrency`` clients, each streaming ``per_client`` requests back to back, every
    request for the next distinct user of ``users``."""
    rng = random.Random(concurrency)
    names = users.take(concurrency * per_client)
    plan = [names[c * per_client : (c + 1) * per_client] for c in range(concurrency)]
    latencies: list[float] = []
    firsts: list[float] = []
    failed = []
    generated = [0]
    lock = threading.Lock()

    def client_loop(names: list[str]) -> None:
        for user in names:
            body = {
                "model": "persalign",
                "prompt": f"Write a short title for a paper about {rng.choice(WORDS)}s.",
                "max_tokens": tokens,
                "user": user,
                "stream": True,
                "stream_options": {"include_usage": True},
                "persalign": {"ignore_eos": True, "decoder": decoder, "chat_template": True},
            }
            started = time.perf_counter()
            try:
                used, first = stream_one(client, body)
                error = None
            except (httpx.HTTPError, RuntimeError) as exc:
                used, first, error = 0, None, str(exc)[:200]
            with lock:
                latencies.append(time.perf_counter() - started)
                generated[0] += used
                if first is not None:
                    firsts.append(first)
                if error is not None:
                    failed.append(error)

    before = batch_stats(client)
    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(u,)) for u in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(1800)
    wall = time.perf_counter() - started
    after = batch_stats(client)
    return {
        "requests": len(latencies),
        "distinct_users": sorted({u for names in plan for u in names}),
        "failed": len(failed),
        "failures": failed[:3],
        "tokens_per_s": round(generated[0] / wall, 2),
        "p50_latency_s": round(statistics.median(latencies), 3),
        "p95_latency_s": round(percentile(latencies, 0.95), 3),
        "p99_latency_s": round(percentile(latencies, 0.99), 3),
        "p50_ttft_s": round(percentile(firsts, 0.5), 3),
        "p99_ttft_s": round(percentile(firsts, 0.99), 3),
        "mean_batch_size": round((after[0] - before[0]) / max(1.0, after[1] - before[1]), 2),
        "wall_s": round(wall, 2),
    }


def with_onboarding(client: httpx.Client, run) -> tuple[dict, dict]:
    """``run()``'s result while one new user onboards every second; onboarding counts."""
    stop, outcome = threading.Event(), {"onboarded": 0, "failed": 0}

    def onboard() -> None:
        first = True
        while not stop.wait(0.0 if first else 1.0):
            first, i = False, next(NEW_USERS)  # a new user every time, across calls
            prefs = [
                {"prompt": f"A title about {w}", "chosen": f"{w} alpha", "rejected": f"{w} omega"}
                for w in WORDS[i % 4 : i % 4 + 4]
            ]
            answer = client.post(f"/v1/users/onboarded-{i:04d}/preferences", json=prefs)
            outcome["onboarded" if answer.status_code == 200 else "failed"] += 1

    worker = threading.Thread(target=onboard)
    worker.start()
    try:
        result = run()
    finally:
        stop.set()
        worker.join(600)
    return result, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--train-steps", type=int, default=4)
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument(
        "--gap-tokens", type=int, default=96, help="Length of the stream whose token gaps count."
    )
    parser.add_argument("--users", type=int, default=256, help="Distinct users served.")
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="Serve a frozen-backbone reward model (on the policy's weights: fused ARGS).",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        folder = Path(tmp) / "rm"
        users = train_reward_model(args.policy, args.train_steps, folder, args.users, args.frozen)
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "persalign.cli",
            "-q",
            "serve",
            "--policy",
            args.policy,
            "--reward",
            str(folder),
            "--port",
            str(port),
            "--device",
            "cpu",
            "--max-batch",
            str(args.max_batch),
            "--max-queue",
            "256",
            "--state-dir",
            str(Path(tmp) / "state"),
        ]
        env = {k: v for k, v in os.environ.items() if k != "PERSALIGN_API_KEY"}  # open, local
        server = subprocess.Popen(command, env=env)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if server.poll() is not None:
                    raise SystemExit(f"server exited with {server.returncode}")
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.5)
            per = args.requests_per_client
            cursor = UserCursor(users)
            load(client, 1, 1, args.tokens, UserCursor(users))  # warm-up
            results = {c: load(client, c, per, args.tokens, cursor) for c in (1, 8)}
            # concurrency 8 again right away, while users onboard (adjacent phases: the ratio
            # compares like with like on a machine whose speed drifts)
            onboarding, onboarded = with_onboarding(
                client, lambda: load(client, 8, per, args.tokens, cursor)
            )
            # concurrency 32 serves as many requests per client as the run needs to reach
            # every user
            per_32 = max(per, -(-cursor.left() // 32))
            results[32] = load(client, 32, per_32, args.tokens, cursor)
            # one long stream alone, then while one user onboards every second: its largest
            # gap between two tokens over its median (target with onboarding: <= 2x)
            gaps_alone = gap_ratio(token_gaps(client, users[0], args.gap_tokens))
            gaps, gap_onboarded = with_onboarding(
                client, lambda: gap_ratio(token_gaps(client, users[1], args.gap_tokens))
            )
            policy_only = {
                c: load(client, c, 2, args.tokens, UserCursor(users), "zero-shot") for c in (1, 8)
            }
        finally:
            client.close()
            server.terminate()
            server.wait(120)
    one, eight = results[1], results[8]
    for r in policy_only.values():
        r.pop("distinct_users")
    report = {
        "policy": args.policy,
        "frozen_reward_backbone": args.frozen,
        "tokens_per_completion": args.tokens,
        "max_batch": args.max_batch,
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "concurrency": {str(c): r for c, r in results.items()},
        "requests_per_client_at_32": per_32,
        "distinct_users": len(
            set().union(*(r.pop("distinct_users") for r in [*results.values(), onboarding]))
        ),
        "throughput_8_over_1": round(eight["tokens_per_s"] / one["tokens_per_s"], 2),
        "p95_at_8_over_p50_at_1": round(eight["p95_latency_s"] / one["p50_latency_s"], 2),
        "p99_at_8_over_p50_at_1": round(eight["p99_latency_s"] / one["p50_latency_s"], 2),
        "with_onboarding_at_8": {**onboarding, **onboarded},
        "onboarding_throughput_ratio": round(onboarding["tokens_per_s"] / eight["tokens_per_s"], 2),
        "token_gaps_alone": gaps_alone,
        "token_gaps_while_onboarding": {**gaps, **gap_onboarded},
        "onboarding_max_gap_over_median": gaps["max_gap_over_median"],
        "failed_requests": sum(r["failed"] for r in [*results.values(), onboarding])
        + onboarded["failed"]
        + gap_onboarded["failed"],
        "zero_shot_reference": {
            "concurrency": {str(c): r for c, r in policy_only.items()},
            "throughput_8_over_1": round(
                policy_only[8]["tokens_per_s"] / policy_only[1]["tokens_per_s"], 2
            ),
        },
    }
    report["targets_met"] = (
        report["throughput_8_over_1"] >= 3
        and report["p99_at_8_over_p50_at_1"] <= 3
        and report["onboarding_throughput_ratio"] >= 0.8
        and report["onboarding_max_gap_over_median"] <= 2
        and report["failed_requests"] == 0
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
