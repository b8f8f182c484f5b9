"""The error a route raises to refuse a request, and OpenAI's error body.

raise ApiError(400, "max_tokens must be in [1, 512]", param="max_tokens")
JSONResponse(error_body("boom", "server_error"), status_code=500)
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the server refuses: HTTP status plus an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param
        self.code, self.headers = code, headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(
    message: str, kind: str = "invalid_request_error", param: str | None = None, code=None
) -> dict[str, Any]:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
