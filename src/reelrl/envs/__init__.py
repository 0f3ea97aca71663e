"""Multi-turn environments: what a rollout shows the model between its turns (:mod:`reelrl.envs.base`).

- :mod:`reelrl.envs.grounding`  ``two_stage_grounding`` (Scene-R1): a time span, then a box in the frame shown.
- :mod:`reelrl.envs.streaming`  ``streaming`` (VST): a thought after each clip, then the answer.
"""

from reelrl.envs import grounding as _grounding  # noqa: F401 - registers the grounding environments
from reelrl.envs import streaming as _streaming  # noqa: F401 - registers the streaming environment
from reelrl.envs.base import ENVS, Clip, Environment, Observation, Turn

__all__ = ["ENVS", "Clip", "Environment", "Observation", "Turn"]
