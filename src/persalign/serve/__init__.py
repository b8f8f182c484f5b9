"""Serving: one base policy, many users, personalized by reward-guided decoding over HTTP.

    from persalign.serve import ServeLimits, build_service, run
    service = build_service("bundled:smollm2-135m-instruct", "runs/lore", ServeLimits())
    run(service, host="127.0.0.1", port=8000)       # persalign serve does this

Modules: schemas (request bodies, limits, user ids), batching (joining KV caches), engine (one
step for rows with their own settings), scheduler (the model thread, continuous batching,
backpressure), users (journal and vector files), personal (whose vector, onboarding), service
(requests into rows), app (FastAPI routes), guard (key, body limit, request ids, 500s),
completions (rows into responses and streams), metrics (Prometheus), startup (checks before
loading, the bound socket), server (uvicorn, SIGTERM drain).
"""

from __future__ import annotations

from persalign.serve.schemas import ServeLimits
from persalign.serve.server import build_service, run
from persalign.serve.service import Service

__all__ = ["ServeLimits", "Service", "build_service", "run"]
