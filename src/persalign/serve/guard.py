"""ASGI middleware in front of every route: request id, API key, body limit, counting, 500s.

    app.add_middleware(Guard, service=service, api_key="secret", admin_key="root")

Every response carries ``x-request-id`` (also in ``scope["state"]["request_id"]`` for the
routes). With an API key every request but ``/health`` and ``/metrics`` (probes and scrapers,
as in vLLM) must carry ``Authorization: Bearer KEY``, else a 401. With an admin key the user
routes (``/v1/users/...``: preference posts, reads, deletes) need ``Bearer ADMIN_KEY``
instead (a 403 for the API key); the admin key also opens every other route. Without an admin
key the user routes take the API key, as the others. A body over the limit is a
413, checked on the declared length and while reading. An unexpected exception is logged with
the request id and answered 500 with OpenAI's error body naming that id.
"""

from __future__ import annotations

import hmac
import logging
import uuid

from fastapi.responses import JSONResponse

from persalign.serve.api_errors import ApiError, error_body
from persalign.serve.service import Service

log = logging.getLogger(__name__)
ROUTES = (
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/models",
    "/v1/users",
    "/health",
    "/metrics",
)
OPEN_ROUTES = ("/health", "/metrics")


def error_response(status: int, message: str, kind: str = "invalid_request_error", code=None):
    return JSONResponse(error_body(message, kind, None, code), status_code=status)


class Guard:
    """ASGI middleware: request id, API key, body size limit, request counter, 500 bodies."""

    def __init__(self, app, service: Service, api_key: str | None, admin_key: str | None = None):
        self.app, self.service, self.key, self.admin = app, service, api_key, admin_key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = next((r for r in ROUTES if path == r or path.startswith(r + "/")), "other")
        request_id = f"req-{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id
        status = {"code": 500, "started": False}

        async def counted(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self._guarded(scope, receive, counted, route)
        except ApiError as exc:  # raised while reading the body (413)
            if not status["started"]:
                response = JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
                await response(scope, receive, counted)
        except Exception:
            log.exception("request %s (%s %s) failed", request_id, scope.get("method"), path)
            if not status["started"]:
                response = error_response(
                    500,
                    f"internal server error (request id {request_id})",
                    kind="server_error",
                    code="internal_error",
                )
                await response(scope, receive, counted)
        finally:
            self.service.metrics.requests.labels(route, str(status["code"])).inc()

    def _refusal(self, route: str, given: bytes):
        """A 401/403 response when the request lacks the key its route needs, else None."""
        if route in OPEN_ROUTES:
            return None
        admin = self.admin is not None and hmac.compare_digest(
            given, f"Bearer {self.admin}".encode()
        )
        if route == "/v1/users" and self.admin is not None:
            if admin:
                return None
            if self.key is not None and hmac.compare_digest(given, f"Bearer {self.key}".encode()):
                return error_response(403, "user routes need the admin key", code="admin_key")
            return error_response(401, "missing or incorrect admin key", code="invalid_api_key")
        if self.key is None or admin:
            return None
        if hmac.compare_digest(given, f"Bearer {self.key}".encode()):
            return None
        return error_response(401, "missing or incorrect API key", code="invalid_api_key")

    async def _guarded(self, scope, receive, send, route: str):
        headers = dict(scope["headers"])
        refusal = self._refusal(route, headers.get(b"authorization", b""))
        if refusal is not None:
            return await refusal(scope, receive, send)
        limit = self.service.limits.max_body_bytes
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > limit:
            return await error_response(413, f"request body over {limit} bytes")(
                scope, receive, send
            )
        seen = {"bytes": 0}

        async def bounded():
            message = await receive()
            seen["bytes"] += len(message.get("body", b""))
            if seen["bytes"] > limit:
                raise ApiError(413, f"request body over {limit} bytes")
            return message

        await self.app(scope, bounded, send)
