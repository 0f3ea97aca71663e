"""Errors of the served reward model, each with the HTTP status the server answers it with."""

from __future__ import annotations

__all__ = ["CapacityError", "EpisodeFull", "FrameError", "ServeError", "UnknownEpisode"]


class ServeError(Exception):
    """A request the server refuses; ``status`` is its HTTP status (4xx), the message says why."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FrameError(ServeError, ValueError):
    """A frame or goal the served prompt cannot take (422); the message names the field."""

    status = 422


class UnknownEpisode(ServeError, KeyError):
    """No episode of that id is held (404): never opened, closed, or evicted."""

    status = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class EpisodeFull(ServeError):
    """The episode already holds the most frames the server keeps (409)."""

    status = 409


class CapacityError(ServeError):
    """The server holds as many episodes (or queued frames) as it may (429)."""

    status = 429
