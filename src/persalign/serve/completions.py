"""A completion request as a row of the scheduler, answered as JSON or server-sent events.

    return await generate(service, request, body, chat=False)    # inside a route

The row is submitted to the scheduler (a 429 with ``Retry-After`` when ``--max-queue`` rows
wait already; a 503 when it waited past ``--queue-timeout``). A client that disconnects
cancels its row, which leaves the batch at the next step: a streaming one when its response
stops, a non-streaming one as soon as its connection closes (a task waits for the
``http.disconnect`` message). Responses add ``persalign``: ``finish``, ``tokens``, ``seed``
(the one used, fresh when a sampled request sent none) and ``user_status`` (``own``: the user's
own vector; ``default``: the population's; ``global``: the method has no user vectors).
``stream_options.include_usage`` adds a last chunk with the usage and no choices;
``stream_options.continuous_usage_stats`` (vLLM's extension) adds the usage so far to every
text chunk.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from persalign.serve.api_errors import ApiError, error_body
from persalign.serve.engine import Row
from persalign.serve.scheduler import QueueFull
from persalign.serve.service import Service

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}
RETRY_AFTER = "1"  # seconds: a row frees up every few steps under load


def _failed(data: dict[str, Any], request_id: str) -> ApiError:
    message = f"{data['message']} (request id {request_id})"
    kind = "server_error" if data["status"] >= 500 else "invalid_request_error"
    return ApiError(data["status"], message, kind=kind, code=data["code"])


async def _watch(receive, row: Row, events: asyncio.Queue) -> None:
    """Cancel ``row`` when the client's connection closes (the body is read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            row.cancelled = True
            events.put_nowait(("gone", None))
            return


async def generate(service: Service, request: Request, body, chat: bool):
    spec = await asyncio.to_thread(service.spec, body)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    row = Row(spec, lambda kind, data: loop.call_soon_threadsafe(events.put_nowait, (kind, data)))
    try:
        service.scheduler.submit(row)
    except QueueFull as exc:
        raise ApiError(
            429,
            f"the server is at capacity ({exc}); retry later",
            kind="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": RETRY_AFTER},
        ) from None
    request_id = request.scope.get("state", {}).get("request_id", "")
    meta = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": service.limits.model_name,
    }
    extra = {"seed": spec.seed, "user_status": service.user_status(body.user)}
    if body.stream:
        options = body.stream_options
        usage = bool(options and options.include_usage)
        every = bool(options and options.continuous_usage_stats)
        prompt_tokens = len(spec.policy_ids) if every else None  # usage in every text chunk
        stream = _stream(row, events, meta, chat, usage, request_id, prompt_tokens)
        return StreamingResponse(stream, media_type="text/event-stream")
    watcher = asyncio.create_task(_watch(request.receive, row, events))
    try:
        while True:
            kind, data = await events.get()
            if kind == "gone":
                return Response(status_code=499)
            if kind == "error":
                raise _failed(data, request_id)
            if kind == "done":
                break
    finally:
        watcher.cancel()
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
    return {
        **meta,
        "object": "chat.completion" if chat else "text_completion",
        "choices": [choice],
        "usage": _usage(data["prompt_tokens"], len(data["tokens"])),
        "persalign": {"finish": data["finish_reason"], "tokens": data["tokens"], **extra},
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


async def _stream(
    row: Row,
    events: asyncio.Queue,
    meta: dict,
    chat: bool,
    usage: bool,
    request_id: str,
    prompt_tokens: int | None = None,  # given: every text chunk carries the usage so far
) -> AsyncIterator[str]:
    kind_name = "chat.completion.chunk" if chat else "text_completion"

    def event(payload: dict[str, Any]) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    def chunk(
        text: str | None, finish: str | None, first: bool = False, tokens: int | None = None
    ) -> str:
        if chat:
            delta = (
                {"role": "assistant", "content": ""}
                if first
                else ({"content": text} if text is not None else {})
            )
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        payload = {**meta, "object": kind_name, "choices": [choice]}
        if tokens is not None and prompt_tokens is not None:
            payload["usage"] = _usage(prompt_tokens, tokens)
        return event(payload)

    try:
        if chat:
            yield chunk(None, None, first=True)
        while True:
            kind, data = await events.get()
            if kind == "delta":
                text, tokens = data
                yield chunk(text, None, tokens=tokens)
            elif kind == "error":
                failed = _failed(data, request_id)
                yield event(error_body(failed.message, failed.kind, None, failed.code))
                return
            else:
                yield chunk(None if chat else "", FINISH[data["finish_reason"]])
                if usage:
                    total = _usage(data["prompt_tokens"], len(data["tokens"]))
                    yield event({**meta, "object": kind_name, "choices": [], "usage": total})
                yield "data: [DONE]\n\n"
                return
    finally:
        if row.finish is None:
            row.cancelled = True  # the client went away: the row leaves at the next step
