"""``persalign serve``: an OpenAI-compatible server, one policy, many users (docs/serving.md).

    persalign serve --policy bundled:smollm2-135m-instruct --reward runs/lore \\
        [--decoder args|zero-shot|icl-rag] [--lam 1.0] [--k 10] [--host 127.0.0.1] \\
        [--port 8000] [--max-batch 16] [--api-key KEY] [--state-dir DIR] [--unknown-user 404]

Binds 127.0.0.1 unless told otherwise. ``--api-key`` (or ``PERSALIGN_API_KEY``) makes every
request without ``Authorization: Bearer KEY`` a 401. SIGTERM drains in-flight requests, exits 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from persalign.errors import ConfigError, validated
from persalign.models.device import DEVICES
from persalign.serve import ServeLimits, build_service, run


def serve(
    policy: Annotated[
        str, typer.Option(help="Policy: hub id, folder or bundled:<name>.")
    ] = "bundled:smollm2-135m-instruct",
    reward: Annotated[
        Path | None, typer.Option(help="Reward model folder (needed by args).")
    ] = None,
    decoder: Annotated[
        str, typer.Option(help="Default decoder: args | zero-shot | icl-rag.")
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
    state_dir: Annotated[
        Path | None, typer.Option(help="Onboarded users' journal and vectors (REWARD/serving).")
    ] = None,
    unknown_user: Annotated[
        str, typer.Option(help="default: the population's vector; 404: refuse unknown users.")
    ] = "default",
    model_name: Annotated[str, typer.Option(help="The model id clients send.")] = "persalign",
    max_tokens: Annotated[int, typer.Option(help="Largest max_tokens a request may ask.")] = 512,
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
) -> None:
    """Serve personalized completions over an OpenAI-compatible HTTP API."""
    limits = validated(
        ServeLimits,
        {
            "model_name": model_name,
            "decoder": decoder,
            "lam": lam,
            "k": k,
            "max_batch": max_batch,
            "max_tokens": max_tokens,
            "max_lam": max_lam,
            "max_k": max_k,
            "unknown_user": unknown_user,
        },
        head="invalid serve options",
    )
    if decoder == "args" and reward is None:
        raise ConfigError("--decoder args needs --reward MODEL_DIR")
    if lam > max_lam or k > max_k:
        raise ConfigError("--lam / --k exceed --max-lam / --max-k")
    key = api_key or os.environ.get("PERSALIGN_API_KEY") or None
    service = build_service(
        policy,
        reward,
        limits,
        state_dir=state_dir,
        device=device,
        icl_options={"shots": shots, "retrieval": retrieval},
    )
    run(service, host=host, port=port, api_key=key)
