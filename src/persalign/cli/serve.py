"""``persalign serve``: an OpenAI-compatible server, one policy, many users (docs/serving.md).

    persalign serve --policy bundled:smollm2-135m-instruct --reward runs/lore \\
        [--decoder args|zero-shot|icl-rag] [--lam 1.0] [--k 10] [--host 127.0.0.1] \\
        [--port 8000] [--max-batch 16] [--api-key KEY] [--admin-key KEY] [--state DIR] \
        [--store postgresql://user@host/db] [--unknown-user 404]

Binds 127.0.0.1 unless told otherwise. ``--api-key`` (or ``PERSALIGN_API_KEY``) makes every
request without ``Authorization: Bearer KEY`` a 401; an empty or blank key is refused, and the
server is open only when neither is given (the start-up log says so, and to whom).
``--admin-key`` (or ``PERSALIGN_ADMIN_KEY``, same rules) guards the user routes. Users live in
SQLite in the ``--state`` folder, or in the database of ``--store`` (shared by replicas).
Every option, file and folder is checked, and the port bound, before any model loads
(serve/startup.py): a bad one is one line and exit 2. SIGTERM drains in-flight requests, exits 0.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from persalign.errors import ConfigError, validated
from persalign.models.device import DEVICES, pick_device, pick_dtype
from persalign.serve import ServeLimits, build_service, run
from persalign.serve.service import servable_decoders
from persalign.serve.startup import (
    api_key_from,
    bind_socket,
    check_files,
    check_store,
    openness,
)

log = logging.getLogger("persalign.serve")


def serve(
    policy: Annotated[
        str, typer.Option(help="Policy: hub id, folder or bundled:<name>.")
    ] = "bundled:smollm2-135m-instruct",
    reward: Annotated[
        Path | None, typer.Option(help="Reward model folder (needed by args).")
    ] = None,
    decoder: Annotated[
        str, typer.Option(help="Default decoder: args | zero-shot | icl-rag (servable ones).")
    ] = "args",
    lam: Annotated[float, typer.Option(help="Default ARGS lambda (>= 0).")] = 1.0,
    k: Annotated[int, typer.Option(help="Default ARGS candidates per step.")] = 10,
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    max_batch: Annotated[int, typer.Option(help="Live rows decoded together at most.")] = 16,
    api_key: Annotated[
        str | None, typer.Option(help="Require 'Authorization: Bearer KEY' (or PERSALIGN_API_KEY).")
    ] = None,
    admin_key: Annotated[
        str | None,
        typer.Option(help="Require 'Bearer KEY' on /v1/users routes (or PERSALIGN_ADMIN_KEY)."),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state",
            "--state-dir",
            help="Folder of the users' SQLite store (default REWARD/serving); an old journal "
            "there is imported once.",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(help="Users' database URL (postgresql://...: shared by replicas)."),
    ] = None,
    unknown_user: Annotated[
        str, typer.Option(help="default: the population's vector; 404: refuse unknown users.")
    ] = "default",
    model_name: Annotated[str, typer.Option(help="The model id clients send.")] = "persalign",
    max_tokens: Annotated[int, typer.Option(help="Largest max_tokens a request may ask.")] = 512,
    default_max_tokens: Annotated[
        int, typer.Option(help="max_tokens of a request that sends none.")
    ] = 64,
    completions_chat_template: Annotated[
        bool,
        typer.Option(
            "--completions-chat-template/--completions-raw",
            help="/v1/completions renders prompts with the chat template (default: raw).",
        ),
    ] = False,
    max_user_preferences: Annotated[
        int, typer.Option(help="Preferences kept per user (the latest) for adaptation.")
    ] = 1000,
    adapt_timeout: Annotated[
        float, typer.Option(help="Seconds an onboarding may take (then 503, nothing kept).")
    ] = 120.0,
    max_onboarding_queue: Annotated[
        int, typer.Option(help="Onboardings running or waiting at most (then 429).")
    ] = 8,
    adapt_in: Annotated[
        str,
        typer.Option(
            help="process: adapt users in a child process at idle CPU priority (a second copy "
            "of the reward model; decoding never waits); thread: in the server (one copy)."
        ),
    ] = "process",
    max_queue: Annotated[
        int, typer.Option(help="Requests waiting for a row at most (then 429 + Retry-After).")
    ] = 64,
    queue_timeout: Annotated[
        float, typer.Option(help="Seconds a request may wait for a row (then 503).")
    ] = 60.0,
    max_batch_tokens: Annotated[
        int | None,
        typer.Option(help="Admit rows while rows x longest (prompt + max_tokens) fits."),
    ] = None,
    health_timeout: Annotated[
        float, typer.Option(help="/health is 503 when decoding has not stepped for this long.")
    ] = 30.0,
    max_lam: Annotated[float, typer.Option(help="Largest lambda a request may ask.")] = 100.0,
    max_k: Annotated[int, typer.Option(help="Largest k a request may ask.")] = 50,
    shots: Annotated[int, typer.Option(help="icl-rag demonstrations.")] = 4,
    retrieval: Annotated[str, typer.Option(help="icl-rag similarity: embedding | bm25.")] = (
        "embedding"
    ),
    device: Annotated[
        str | None,
        typer.Option(help=f"{DEVICES} (default: auto: cuda if available; $PERSALIGN_DEVICE)."),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            help="Weights of both models: float32 | bfloat16 | float16 (default: "
            "bfloat16 on CUDA, float32 on CPU)."
        ),
    ] = None,
) -> None:
    """Serve personalized completions over an OpenAI-compatible HTTP API."""
    key = api_key_from("--api-key", api_key, "PERSALIGN_API_KEY")
    admin = api_key_from("--admin-key", admin_key, "PERSALIGN_ADMIN_KEY")
    limits = validated(
        ServeLimits,
        {
            "model_name": model_name,
            "decoder": decoder,
            "lam": lam,
            "k": k,
            "max_batch": max_batch,
            "max_tokens": max_tokens,
            "default_max_tokens": default_max_tokens,
            "max_lam": max_lam,
            "max_k": max_k,
            "max_queue": max_queue,
            "queue_timeout": queue_timeout,
            "unknown_user": unknown_user,
            "completions_chat_template": completions_chat_template,
            "max_user_preferences": max_user_preferences,
            "adapt_timeout": adapt_timeout,
            "max_onboarding_queue": max_onboarding_queue,
            "adapt_in": adapt_in,
            "max_batch_tokens": max_batch_tokens,
            "health_timeout": health_timeout,
        },
        head="invalid serve options",
    )
    servable = servable_decoders(with_reward=reward is not None)
    if decoder not in servable_decoders(with_reward=True):
        raise ConfigError(f"--decoder {decoder}: serve runs {', '.join(servable)}")
    if decoder not in servable:
        raise ConfigError(f"--decoder {decoder} needs --reward MODEL_DIR")
    if lam > max_lam or k > max_k:
        raise ConfigError("--lam / --k exceed --max-lam / --max-k")
    if default_max_tokens > max_tokens:
        raise ConfigError("--default-max-tokens exceeds --max-tokens")
    if shots < 0:
        raise ConfigError(f"--shots {shots}: must be >= 0")
    if retrieval not in ("embedding", "bm25"):
        raise ConfigError(f"--retrieval {retrieval}: use embedding or bm25")
    pick_dtype(pick_device(device), dtype)  # an unknown device or dtype: one line, before loading
    if state_dir is None and reward is not None:
        state_dir = reward / "serving"
    check_files(policy, reward, state_dir)
    if store is not None:
        check_store(store)
    sock = bind_socket(host, port)  # "address in use" now, not after the models load
    try:
        if key is None:
            log.warning(openness(host, port, key))
        else:
            log.info(openness(host, port, key))
        if admin is None and key is not None:
            log.warning("no --admin-key: the user routes take the API key")
        service = build_service(
            policy,
            reward,
            limits,
            state_dir=state_dir,
            device=device,
            dtype=dtype,
            icl_options={"shots": shots, "retrieval": retrieval},
            store=store,
        )
        run(service, host=host, port=port, api_key=key, admin_key=admin, sock=sock)
    finally:
        sock.close()
