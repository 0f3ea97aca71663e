"""A Python client of ``reelrl serve``: open an episode, stream its frames, read progress.

>>> client = ProgressClient("http://127.0.0.1:8000")           # doctest: +SKIP
>>> with client.episode("push the red block onto the green square") as ep:
...     for frame in frames:                                   # numpy uint8 [H, W, 3]
...         reward = ep.add_frame(frame)                       # progress in [0, 1] after this frame
...     ep.progress()                                          # [p_0, ..., p_t]

Every refusal of the server raises :class:`ServeClientError` with its status
and message. The client is synchronous (``httpx.Client``, one keep-alive
connection); use one client per thread.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np

__all__ = ["EpisodeHandle", "ProgressClient", "ServeClientError", "encode_frame"]


class ServeClientError(RuntimeError):
    """A request the server refused or failed: ``status`` and the server's ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


def encode_frame(frame: np.ndarray) -> dict[str, Any]:
    """The request body of one frame ``[H, W, 3]`` uint8."""
    if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3):
        raise ValueError(f"frame: expected a numpy uint8 array [H, W, 3], got "
                         f"{getattr(frame, 'dtype', type(frame).__name__)} {list(getattr(frame, 'shape', []))}")
    return {"shape": list(frame.shape), "dtype": "uint8",
            "data": base64.b64encode(np.ascontiguousarray(frame).tobytes()).decode("ascii")}


class ProgressClient:
    """Talks to one ``reelrl serve`` server."""

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def _call(self, method: str, path: str, **kwargs) -> dict[str, Any]:
        r = self._http.request(method, path, **kwargs)
        if r.status_code >= 400:
            try:
                msg = r.json().get("error", r.text)
            except ValueError:
                msg = r.text
            raise ServeClientError(r.status_code, str(msg))
        return r.json()

    def health(self) -> dict[str, Any]:
        """The server's ``/health``: status, episodes held, queue, batch counters."""
        return self._call("GET", "/health")

    def episode(self, goal: str) -> "EpisodeHandle":
        """Open an episode towards ``goal``."""
        body = self._call("POST", "/episodes", json={"goal": goal})
        return EpisodeHandle(self, body["episode_id"], goal)

    def add_frame(self, episode_id: str, frame: np.ndarray) -> dict[str, Any]:
        """Append a frame to an episode; the server's answer (``progress``, ``t``, ``answer``, ``logprob``, ...)."""
        return self._call("POST", f"/episodes/{episode_id}/frames", json=encode_frame(frame))

    def info(self, episode_id: str) -> dict[str, Any]:
        """An episode's goal, frame count and progress list."""
        return self._call("GET", f"/episodes/{episode_id}")

    def close_episode(self, episode_id: str) -> dict[str, Any]:
        """Drop an episode on the server; its last info."""
        return self._call("DELETE", f"/episodes/{episode_id}")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ProgressClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EpisodeHandle:
    """One open episode; a context manager that closes it on the server."""

    def __init__(self, client: ProgressClient, episode_id: str, goal: str) -> None:
        self.client, self.id, self.goal = client, episode_id, goal
        self.last: dict[str, Any] = {}

    def add_frame(self, frame: np.ndarray) -> float:
        """Stream the next frame; the progress in [0, 1] after it (the whole answer is in :attr:`last`)."""
        self.last = self.client.add_frame(self.id, frame)
        return float(self.last["progress"])

    def progress(self) -> list[float]:
        """The progress after every frame so far."""
        return [float(p) for p in self.client.info(self.id)["progress"]]

    def close(self) -> list[float]:
        """Drop the episode on the server; its progress list."""
        return [float(p) for p in self.client.close_episode(self.id)["progress"]]

    def __enter__(self) -> "EpisodeHandle":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.close()
        except ServeClientError:
            pass  # already closed or evicted
