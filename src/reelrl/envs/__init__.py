"""Multi-turn environments: what a rollout shows the model between its turns (:mod:`reelrl.envs.base`).

- :mod:`reelrl.envs.grounding`  ``two_stage_grounding`` (Scene-R1): a time span, then a box in the frame shown.
"""

from reelrl.envs import grounding as _grounding  # noqa: F401 - registers the grounding environments
from reelrl.envs.base import ENVS, Environment, Observation, Turn

__all__ = ["ENVS", "Environment", "Observation", "Turn"]
