"""Environments used by the tests (named in recipes as 'tests.envs_for_tests:NAME')."""

from __future__ import annotations

from reelrl.envs.base import Observation, Turn


class ShowFrame:
    """Two turns whatever the model says: the second shows frame 3 of the video and asks again."""

    max_turns = 2

    def __init__(self, row, video) -> None:
        self.video, self.k = video, 0

    def step(self, text: str) -> Turn:
        self.k += 1
        if self.k == 1:
            return Turn({"turn": 1}, Observation("And in this frame?", [self.video.frames[3]]))
        return Turn({"turn": 2}, None)


def show_frame(row, video) -> ShowFrame:
    return ShowFrame(row, video)
