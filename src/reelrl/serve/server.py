"""Build the served critic from a checkpoint directory and run it on uvicorn.

:func:`build_app` loads the checkpoint (:func:`reelrl.models.load.load_model_and_processor`,
local only) and wires critic, batcher and app; :func:`run` serves it until
interrupted (``reelrl serve``); :class:`BackgroundServer` serves it from a
thread of the calling process (e.g. a training loop that wants its reward
server in-process) and stops it on exit.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from reelrl.serve.app import create_app
from reelrl.serve.batcher import Batcher
from reelrl.serve.critic import CriticLimits, ProgressCritic

__all__ = ["BackgroundServer", "ServeOptions", "build_app", "run"]


@dataclass
class ServeOptions:
    """Everything ``reelrl serve`` takes besides the checkpoint."""

    limits: CriticLimits = field(default_factory=CriticLimits)
    max_body_bytes: int = 8 << 20  # request body (413 beyond)
    max_batch: int = 16  # frames per forward pass
    max_wait_s: float = 0.002  # how long the worker waits for a batch to fill
    max_queue: int = 256  # frames waiting (429 beyond)
    reuse_context: bool = True  # False: the no-cache baseline (re-reads the episode per frame)
    device: str = "cpu"
    dtype: str = "float32"


def build_app(model_dir: str | Path, options: ServeOptions | None = None) -> FastAPI:
    """The app serving the checkpoint at ``model_dir`` (the model loads here, not at startup)."""
    from reelrl.models.load import load_model_and_processor

    opts = options or ServeOptions()
    model, processor = load_model_and_processor(model_dir, dtype=opts.dtype, device=opts.device)  # type: ignore[arg-type]
    critic = ProgressCritic(model, processor, reuse_context=opts.reuse_context, limits=opts.limits)
    batcher = Batcher(critic, max_batch=opts.max_batch, max_wait_s=opts.max_wait_s, max_queue=opts.max_queue)
    return create_app(critic, batcher, max_body_bytes=opts.max_body_bytes, model_name=str(model_dir))


def run(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``app`` until interrupted (one process, one event loop; the model runs on the batcher's thread)."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


class BackgroundServer:
    """Serve an app from a thread on ``host:port`` (port 0: a free one); a context manager.

    >>> with BackgroundServer(build_app(model_dir)) as srv:   # doctest: +SKIP
    ...     ProgressClient(srv.url).health()
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets (else Nagle adds ~40 ms a request)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = host, int(self._sock.getsockname()[1])
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name="reelrl-serve", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout_s)
        self._sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
