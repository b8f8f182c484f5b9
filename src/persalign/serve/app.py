"""The FastAPI application: OpenAI-compatible routes, API key, body limit, errors, streaming.

    app = create_app(service, api_key="secret")   # uvicorn.run(app, host="127.0.0.1")

Routes: POST /v1/completions, POST /v1/chat/completions (``stream: true``: server-sent events
ending with ``data: [DONE]``), GET /v1/models, POST /v1/users/{id}/preferences,
GET /v1/users/{id}, GET /health, GET /metrics (Prometheus text). With an API key every request
must carry ``Authorization: Bearer KEY`` (else 401). Every refusal is a 4xx with OpenAI's error
body ``{"error": {"message", "type", "param", "code"}}``; the server keeps serving others. A
client that disconnects cancels its row, which leaves the batch at the next step.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from persalign.errors import ConfigError, validated
from persalign.serve.engine import Row
from persalign.serve.metrics import CONTENT_TYPE
from persalign.serve.schemas import ChatRequest, CompletionRequest, PreferenceSet, check_user_id
from persalign.serve.service import ApiError, Service

ROUTES = (
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/models",
    "/v1/users",
    "/health",
    "/metrics",
)
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}


def _error(status: int, message: str, kind: str = "invalid_request_error", code=None):
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


class Guard:
    """ASGI middleware: API key, body size limit, and a request counter by route and status."""

    def __init__(self, app, service: Service, api_key: str | None):
        self.app, self.service, self.key = app, service, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = next((r for r in ROUTES if path == r or path.startswith(r + "/")), "other")
        status = {"code": 500}

        async def counted(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, counted)
        finally:
            self.service.metrics.requests.labels(route, str(status["code"])).inc()

    async def _guarded(self, scope, receive, send):
        headers = dict(scope["headers"])
        if self.key is not None:
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.key}".encode()):
                response = _error(401, "missing or incorrect API key", code="invalid_api_key")
                return await response(scope, receive, send)
        limit = self.service.limits.max_body_bytes
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > limit:
            return await _error(413, f"request body over {limit} bytes")(scope, receive, send)
        seen = {"bytes": 0}

        async def bounded():
            message = await receive()
            seen["bytes"] += len(message.get("body", b""))
            if seen["bytes"] > limit:
                raise ApiError(413, f"request body over {limit} bytes")
            return message

        await self.app(scope, bounded, send)


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None


def _parse(model, data: Any, what: str):
    if not isinstance(data, dict):
        raise ApiError(400, f"{what}: the body must be a JSON object")
    try:
        return validated(model, data, head=what)
    except ConfigError as exc:
        raise ApiError(400, str(exc)) from None


def create_app(service: Service, api_key: str | None = None) -> FastAPI:
    """The application serving ``service`` (started and stopped with the app's lifespan)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await asyncio.to_thread(service.stop)  # uvicorn has drained the requests by now

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, service=service, api_key=api_key)
    name = service.limits.model_name

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.get("/health")
    async def health():
        sched = service.scheduler
        return {
            "status": "ok",
            "model": name,
            "live_rows": sched.live,
            "waiting_rows": len(sched.waiting) + sched.inbox.qsize(),
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
        return await _generate(service, request, body, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = _parse(ChatRequest, await _json(request), "chat completion request")
        return await _generate(service, request, body, chat=True)

    @app.post("/v1/users/{user_id}/preferences")
    async def preferences(user_id: str, request: Request):
        user = _user(user_id)
        data = await _json(request)
        data = {"preferences": data} if isinstance(data, list) else data
        items = _parse(PreferenceSet, data, "preferences").preferences
        if len(items) > service.limits.max_preferences:
            raise ApiError(400, f"at most {service.limits.max_preferences} preferences a request")
        return await service.onboard(user, items)

    @app.get("/v1/users/{user_id}")
    async def user_info(user_id: str):
        return service.user_info(_user(user_id))

    return app


def _user(user_id: str) -> str:
    try:
        return check_user_id(user_id)
    except ValueError as exc:
        raise ApiError(400, str(exc), param="user_id") from None


async def _generate(service: Service, request: Request, body, chat: bool):
    spec = await asyncio.to_thread(service.spec, body)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    row = Row(spec, lambda kind, data: loop.call_soon_threadsafe(events.put_nowait, (kind, data)))
    service.scheduler.submit(row)
    meta = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": service.limits.model_name,
    }
    if body.stream:
        return StreamingResponse(_stream(row, events, meta, chat), media_type="text/event-stream")
    try:
        while True:
            try:
                kind, data = await asyncio.wait_for(events.get(), timeout=1.0)
            except TimeoutError:
                if await request.is_disconnected():
                    row.cancelled = True
                    return Response(status_code=499)
                continue
            if kind == "error":
                raise ApiError(500, data, kind="server_error")
            if kind == "done":
                break
    finally:
        row.cancelled = row.cancelled or row.finish is None
    finish = FINISH[data["finish_reason"]]
    choice = (
        {
            "index": 0,
            "message": {"role": "assistant", "content": data["text"]},
            "finish_reason": finish,
        }
        if chat
        else {"index": 0, "text": data["text"], "finish_reason": finish, "logprobs": None}
    )
    used = {
        "prompt_tokens": data["prompt_tokens"],
        "completion_tokens": len(data["tokens"]),
        "total_tokens": data["prompt_tokens"] + len(data["tokens"]),
    }
    return {
        **meta,
        "object": "chat.completion" if chat else "text_completion",
        "choices": [choice],
        "usage": used,
        "persalign": {"finish": data["finish_reason"], "tokens": data["tokens"]},
    }


async def _stream(row: Row, events: asyncio.Queue, meta: dict, chat: bool) -> AsyncIterator[str]:
    kind_name = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text: str | None, finish: str | None, first: bool = False) -> str:
        if chat:
            delta = (
                {"role": "assistant", "content": ""}
                if first
                else ({"content": text} if text is not None else {})
            )
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        return f"data: {json.dumps({**meta, 'object': kind_name, 'choices': [choice]})}\n\n"

    try:
        if chat:
            yield chunk(None, None, first=True)
        while True:
            kind, data = await events.get()
            if kind == "delta":
                yield chunk(data, None)
            elif kind == "error":
                error = {"error": {"message": data, "type": "server_error"}}
                yield f"data: {json.dumps(error)}\n\n"
                return
            else:
                yield chunk(None if chat else "", FINISH[data["finish_reason"]])
                yield "data: [DONE]\n\n"
                return
    finally:
        if row.finish is None:
            row.cancelled = True  # the client went away: the row leaves at the next step
