"""The FastAPI application: OpenAI-compatible routes over a Service.

    app = create_app(service, api_key="secret", admin_key="root")   # uvicorn.run(app, ...)

Routes: POST /v1/completions, POST /v1/chat/completions (``stream: true``: server-sent events
ending with ``data: [DONE]``), GET /v1/models, POST /v1/users/{id}/preferences (an
``Idempotency-Key`` header makes a retried post count once), GET /v1/users/{id},
DELETE /v1/users/{id}, GET /health (liveness: 503 when the decoding loop has not passed for
``health_timeout`` seconds), GET /metrics (Prometheus text). The Guard middleware (guard.py)
checks the API and admin keys and the body size and answers unexpected errors with a 500 and a
request id; completions.py turns rows into responses. Every refusal is a 4xx with OpenAI's
error body ``{"error": {"message", "type", "param", "code"}}``; the server keeps serving others.
A user id is any benchmark id, percent-encoded in the path (``/`` as ``%2F``).
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from persalign.errors import ConfigError, validated
from persalign.serve.completions import generate
from persalign.serve.guard import Guard, error_response
from persalign.serve.prometheus import CONTENT_TYPE
from persalign.serve.schemas import (
    ChatRequest,
    CompletionRequest,
    PreferenceSet,
    Unsupported,
    check_user_id,
    strip_neutral,
)
from persalign.serve.service import ApiError, Service


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None


def _parse(model, data: Any, what: str):
    if not isinstance(data, dict):
        raise ApiError(400, f"{what}: the body must be a JSON object")
    try:
        if model is not PreferenceSet:
            data = strip_neutral(data)
        return validated(model, data, head=what)
    except Unsupported as exc:
        raise ApiError(400, str(exc), param=exc.param) from None
    except ConfigError as exc:
        raise ApiError(400, str(exc)) from None


def create_app(
    service: Service, api_key: str | None = None, admin_key: str | None = None
) -> FastAPI:
    """The application serving ``service`` (started and stopped with the app's lifespan)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await asyncio.to_thread(service.stop)  # uvicorn has drained the requests by now

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, service=service, api_key=api_key, admin_key=admin_key)
    name = service.limits.model_name

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.get("/health")
    async def health():
        sched = service.scheduler
        stalled = sched.stalled(service.limits.health_timeout) if sched.running else -1.0
        if stalled is not None:
            what = "is not running" if stalled < 0 else f"has not stepped for {stalled:.0f} s"
            return error_response(
                503, f"the decoding loop {what}", kind="server_error", code="unhealthy"
            )
        return {
            "status": "ok",
            "model": name,
            "live_rows": sched.live,
            "waiting_rows": sched.queued,
        }

    @app.get("/metrics")
    async def metrics():
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "persalign"}],
        }

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = _parse(CompletionRequest, await _json(request), "completion request")
        return await generate(service, request, body, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = _parse(ChatRequest, await _json(request), "chat completion request")
        return await generate(service, request, body, chat=True)

    @app.post("/v1/users/{user_id:path}/preferences")
    async def preferences(user_id: str, request: Request):
        user = _user(user_id)
        data = await _json(request)
        data = {"preferences": data} if isinstance(data, list) else data
        items = _parse(PreferenceSet, data, "preferences").preferences
        if len(items) > service.limits.max_preferences:
            raise ApiError(400, f"at most {service.limits.max_preferences} preferences a request")
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 256:
            raise ApiError(400, "Idempotency-Key: 1-256 characters", param="Idempotency-Key")
        return await service.onboard(user, items, key)

    @app.get("/v1/users/{user_id:path}")
    async def user_info(user_id: str):
        return await asyncio.to_thread(service.user_info, _user(user_id))

    @app.delete("/v1/users/{user_id:path}")
    async def delete_user(user_id: str):
        return await asyncio.to_thread(service.delete, _user(user_id))

    return app


def _user(user_id: str) -> str:
    try:
        return check_user_id(user_id)
    except ValueError as exc:
        raise ApiError(400, str(exc), param="user_id") from None
