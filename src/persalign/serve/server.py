"""Build a Service from a policy spec and a reward model folder, and run it under uvicorn.

    service = build_service("bundled:smollm2-135m-instruct", "runs/lore", ServeLimits())
    run(service, host="127.0.0.1", port=8000, api_key=None)   # returns after SIGTERM / Ctrl-C

SIGTERM (or Ctrl-C) stops accepting connections, lets every in-flight request finish (uvicorn's
graceful shutdown; ``drain_seconds`` at most), then stops the scheduler; ``run`` then returns
normally, so the process exits 0.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
from pathlib import Path
from typing import Any

import uvicorn

from persalign.decoding import Policy
from persalign.serve.adapt_process import AdaptProcess
from persalign.serve.app import create_app
from persalign.serve.schemas import ServeLimits
from persalign.serve.service import Service
from persalign.serve.sharing import load_reward_for

log = logging.getLogger(__name__)


def build_service(
    policy: str,
    reward: str | Path | None,
    limits: ServeLimits,
    state_dir: str | Path | None = None,
    device: str | None = None,
    icl_options: dict[str, Any] | None = None,
    dtype: str | None = None,
    store: str | None = None,
) -> Service:
    """Load the models (on ``device`` in ``dtype``) and the stored users (``store``: a
    database URL; else SQLite in the state folder, default REWARD/serving). A reward model with
    a frozen backbone on the policy's model runs on the policy's weights (serve.sharing)."""
    overrides = {k: v for k, v in (("device", device), ("dtype", dtype)) if v}
    model = Policy.load(policy, device=device, dtype=dtype)
    rm = load_reward_for(reward, model, **overrides) if reward is not None else None
    if state_dir is None and reward is not None:
        state_dir = Path(reward) / "serving"
    adapter = None
    if rm is not None and getattr(rm, "personalized", False) and limits.adapt_in == "process":
        adapter = AdaptProcess(reward, overrides)  # loads its own copy meanwhile
    service = Service(
        model, rm, limits, state_dir=state_dir, icl_options=icl_options, store=store,
        adapter=adapter,
    )  # fmt: skip
    service.start()
    # the ~570k objects of the loaded models never become garbage: out of the collector's
    # sight, a full collection no longer pauses decoding (one took 0.26 s on 2 cores)
    gc.collect()
    gc.freeze()
    return service


def run(
    service: Service,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    admin_key: str | None = None,
    drain_seconds: float = 120.0,
    sock: socket.socket | None = None,
) -> None:
    """Serve until SIGTERM or Ctrl-C, drain, stop (on ``sock`` when given: bound beforehand,
    see startup.bind_socket; else uvicorn binds ``host:port``)."""
    app = create_app(service, api_key=api_key, admin_key=admin_key)
    limits = service.limits
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=drain_seconds,
        lifespan="on",
        # a backstop above the server's own queue (which answers 429 with an OpenAI body):
        # uvicorn answers 503 to connections beyond it
        limit_concurrency=limits.max_batch + limits.max_queue + limits.spare_connections,
    )
    server = uvicorn.Server(config)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn re-raises it on exit
    try:
        log.info("serving %s on http://%s:%d", service.limits.model_name, host, port)
        server.run(sockets=[sock] if sock is not None else None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    log.info("drained and stopped")
