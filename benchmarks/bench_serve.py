"""Throughput and latency of ``persalign serve`` under concurrent load (prints one JSON object).

    flock /tmp/heavy.lock python benchmarks/bench_serve.py [--policy bundled:smollm2-135m-instruct]
        [--train-steps 4] [--requests-per-client 3]

Trains a small MPU reward model on the bundled policy for a few steps (16 users, synthetic
preferences; speed does not depend on how good it is), starts ``persalign serve`` on
127.0.0.1 (a free port, never another address), then drives it with a bounded load generator
at concurrency 1, 8 and 32: each client sends ``--requests-per-client`` 32-token completions
(eos suppressed, so every completion is 32 tokens) for users drawn (seeded) from the 16.
Reports per concurrency: tokens/s, p50 and p95 latency, mean batch size (from the server's
``persalign_batch_size`` histogram), failed requests; then the same at concurrency 1 and 8
with ``zero-shot`` decoding (the policy alone), for reference: ARGS adds k reward-model tokens
per row and step, so its batches become compute-bound sooner. Targets (issue 15):
throughput at 8 >= 3x throughput at 1; p95 latency at 8 <= 3x the p50 at 1; no failed request.
"""

from __future__ import annotations

import argparse
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

import persalign.rewards as rewards
from persalign.types import Preference

WORDS = ["cat", "dog", "sun", "map", "pen", "cup", "box", "hat", "car", "bee", "owl", "fig"]
USERS = [f"user{i:02d}" for i in range(16)]


def train_reward_model(policy: str, steps: int, folder: Path) -> None:
    rng = random.Random(0)
    prefs = []
    for u, user in enumerate(USERS):
        for i in range(4):
            word = rng.choice(WORDS)
            chosen, rejected = (f"{word} alpha", f"{word} omega")[:: 1 if u % 2 else -1]
            prefs.append(Preference(f"{user}/{i}", user, f"A title about {word}", chosen, rejected))
    rm = rewards.create("mpu", backbone=policy, max_steps=steps, device="cpu")
    rm.fit(prefs)
    rm.save(str(folder))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def batch_stats(client: httpx.Client) -> tuple[float, float]:
    text = client.get("/metrics").text
    total = float(re.search(r"^persalign_batch_size_sum (\S+)$", text, re.M).group(1))
    count = float(re.search(r"^persalign_batch_size_count (\S+)$", text, re.M).group(1))
    return total, count


def load(
    client: httpx.Client, concurrency: int, per_client: int, tokens: int, decoder: str = "args"
) -> dict:
    """``concurrency`` clients, each sending ``per_client`` requests back to back."""
    rng = random.Random(concurrency)
    plan = [[rng.choice(USERS) for _ in range(per_client)] for _ in range(concurrency)]
    latencies: list[float] = []
    failed = []
    generated = [0]
    lock = threading.Lock()

    def client_loop(users: list[str]) -> None:
        for user in users:
            body = {
                "model": "persalign",
                "prompt": f"Write a short title for a paper about {rng.choice(WORDS)}s.",
                "max_tokens": tokens,
                "user": user,
                "persalign": {"ignore_eos": True, "decoder": decoder},
            }
            started = time.perf_counter()
            try:
                response = client.post("/v1/completions", json=body)
                ok = response.status_code == 200
                used = response.json()["usage"]["completion_tokens"] if ok else 0
            except httpx.HTTPError as exc:
                ok, used, response = False, 0, exc
            with lock:
                latencies.append(time.perf_counter() - started)
                generated[0] += used
                if not ok:
                    failed.append(str(getattr(response, "text", response))[:200])

    before = batch_stats(client)
    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(u,)) for u in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(1800)
    wall = time.perf_counter() - started
    after = batch_stats(client)
    latencies.sort()
    return {
        "requests": len(latencies),
        "failed": len(failed),
        "failures": failed[:3],
        "tokens_per_s": round(generated[0] / wall, 2),
        "p50_latency_s": round(statistics.median(latencies), 3),
        "p95_latency_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 3),
        "mean_batch_size": round((after[0] - before[0]) / max(1.0, after[1] - before[1]), 2),
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--train-steps", type=int, default=4)
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        folder = Path(tmp) / "rm"
        train_reward_model(args.policy, args.train_steps, folder)
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
        ]
        server = subprocess.Popen(command, env={**os.environ, "PERSALIGN_API_KEY": ""})
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
            load(client, 1, 1, args.tokens)  # warm-up
            results = {
                c: load(client, c, args.requests_per_client, args.tokens) for c in (1, 8, 32)
            }
            policy_only = {c: load(client, c, 2, args.tokens, "zero-shot") for c in (1, 8)}
        finally:
            client.close()
            server.terminate()
            server.wait(120)
    one, eight = results[1], results[8]
    report = {
        "policy": args.policy,
        "tokens_per_completion": args.tokens,
        "max_batch": args.max_batch,
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "concurrency": {str(c): r for c, r in results.items()},
        "throughput_8_over_1": round(eight["tokens_per_s"] / one["tokens_per_s"], 2),
        "p95_at_8_over_p50_at_1": round(eight["p95_latency_s"] / one["p50_latency_s"], 2),
        "failed_requests": sum(r["failed"] for r in results.values()),
        "zero_shot_reference": {
            "concurrency": {str(c): r for c, r in policy_only.items()},
            "throughput_8_over_1": round(
                policy_only[8]["tokens_per_s"] / policy_only[1]["tokens_per_s"], 2
            ),
        },
    }
    report["targets_met"] = (
        report["throughput_8_over_1"] >= 3
        and report["p95_at_8_over_p50_at_1"] <= 3
        and report["failed_requests"] == 0
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
