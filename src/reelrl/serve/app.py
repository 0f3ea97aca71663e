"""The HTTP API of ``reelrl serve`` (FastAPI).

========================================  ==============================================================
``GET /health``                           ``{"status": "ok", "episodes": n, "queued": q, ...}``
``POST /episodes``                        body ``{"goal": str}`` -> 201 ``{"episode_id": id, "goal": ...}``
``POST /episodes/{id}/frames``            body ``{"shape": [H, W, 3], "dtype": "uint8", "data": base64}``
                                          (the frame's bytes, row-major) -> ``{"t", "progress", "answer",
                                          "logprob", "batch_size", "context_tokens", ...}``
``GET /episodes/{id}``                    ``{"goal", "frames", "progress": [p_0, ..., p_t], ...}``
``DELETE /episodes/{id}``                 the same, and the episode and its cache are dropped
========================================  ==============================================================

Every refusal is a JSON ``{"error": message}`` whose message names the field or
the limit: 400 malformed JSON, 404 unknown episode or route, 409 episode at
``max_frames``, 413 body above ``max_body_bytes``, 422 a field of the wrong
type / shape / dtype / size, 429 ``max_episodes`` held or ``max_queue`` frames
queued. A refused request changes nothing and the server keeps serving; an
unexpected failure of a batch answers its requests 500 and the worker goes on.
"""

from __future__ import annotations

import base64
import binascii
import math
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelrl.serve.batcher import Batcher
from reelrl.serve.critic import Episode, ProgressCritic
from reelrl.serve.errors import FrameError, ServeError

__all__ = ["BodyLimit", "create_app", "decode_frame"]


class OpenEpisode(BaseModel):
    """Body of ``POST /episodes``."""

    model_config = ConfigDict(extra="forbid")
    goal: str


class FrameBody(BaseModel):
    """Body of ``POST /episodes/{id}/frames``: one ``[H, W, 3]`` uint8 frame, base64 of its row-major bytes."""

    model_config = ConfigDict(extra="forbid")
    shape: list[int]
    dtype: str
    data: str


def decode_frame(body: FrameBody) -> np.ndarray:
    """The frame of a request body as ``[H, W, 3]`` uint8 (:class:`FrameError` naming the field otherwise)."""
    if body.dtype != "uint8":
        raise FrameError(f"dtype: frames are uint8 RGB, got {body.dtype!r}")
    if len(body.shape) != 3 or body.shape[2] != 3 or min(body.shape) < 1:
        raise FrameError(f"shape: must be [H, W, 3] with H, W >= 1, got {body.shape}")
    try:
        raw = base64.b64decode(body.data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise FrameError(f"data: not valid base64 ({e})") from None
    if len(raw) != math.prod(body.shape):
        raise FrameError(f"data: {len(raw)} bytes for shape {body.shape} ({math.prod(body.shape)} expected)")
    return np.frombuffer(raw, dtype=np.uint8).reshape(body.shape).copy()  # [H, W, 3], writable


def _episode_json(ep: Episode) -> dict[str, Any]:
    return {"episode_id": ep.id, "goal": ep.goal, "frames": ep.frames, "progress": list(ep.progress),
            "context_tokens": len(ep.ids)}


class BodyLimit:
    """ASGI middleware answering 413 to a request body above ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, f"request body of {int(declared)} bytes")
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:  # a streamed body: the route's reader answers it as 413
                    raise StarletteHTTPException(413, self._message(f"request body of more than {seen} bytes"))
            return msg

        await self.app(scope, limited, send)

    def _message(self, what: str) -> str:
        return f"{what} is above the server's limit of {self.max_bytes} bytes (max_body_bytes)"

    async def _refuse(self, send: Send, what: str) -> None:
        await JSONResponse({"error": self._message(what)}, status_code=413)({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - a response never reads
    return {"type": "http.disconnect"}


def create_app(critic: ProgressCritic, batcher: Batcher, *, max_body_bytes: int = 8 << 20,
               model_name: str = "") -> FastAPI:
    """The FastAPI app serving ``critic`` through ``batcher`` (started and stopped with the app)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()

    app = FastAPI(title="reelrl serve: video progress reward model", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, e: ServeError) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return JSONResponse({"error": "request body: malformed JSON"}, status_code=400)
        parts = []
        for err in errors:
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"error": "; ".join(parts)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        msg = str(e.detail)
        if e.status_code in (404, 405) and msg in ("Not Found", "Method Not Allowed"):
            msg = f"{msg}: {request.method} {request.url.path} (routes: /health, /episodes, /episodes/ID, " \
                  "/episodes/ID/frames)"
        return JSONResponse({"error": msg}, status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"}, status_code=500)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        b = batcher.stats
        return {"status": "ok", "model": model_name, "reuse_context": critic.reuse_context,
                "episodes": len(critic.episodes), "max_episodes": critic.limits.max_episodes,
                "queued": batcher.queued, "batches": b["batches"], "frames": b["frames"],
                "mean_batch": b["frames"] / b["batches"] if b["batches"] else 0.0,
                "max_batch_seen": b["max_batch_seen"], "evicted": critic.stats["evicted"]}

    @app.post("/episodes", status_code=201)
    def open_episode(body: OpenEpisode) -> dict[str, Any]:
        ep = critic.open(body.goal)
        return {"episode_id": ep.id, "goal": ep.goal}

    @app.post("/episodes/{episode_id}/frames")
    async def add_frame(episode_id: str, body: FrameBody) -> dict[str, Any]:
        frame = decode_frame(body)
        critic.check(episode_id, frame)  # refuse before queueing
        r = await batcher.submit(episode_id, frame)
        return {"episode_id": r.episode_id, "t": r.t, "progress": r.progress, "answer": r.answer,
                "logprob": sum(r.logprobs), "batch_size": r.batch_size, "context_tokens": r.context_tokens}

    @app.get("/episodes/{episode_id}")
    def episode(episode_id: str) -> dict[str, Any]:
        return _episode_json(critic.get(episode_id))

    @app.delete("/episodes/{episode_id}")
    def close_episode(episode_id: str) -> dict[str, Any]:
        return _episode_json(critic.close(episode_id))

    return app
