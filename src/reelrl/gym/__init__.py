"""Synthetic video gym: procedurally rendered videos whose answers are verifiable.

- :mod:`reelrl.gym.render`   numpy drawing helpers and the colour palette.
- :mod:`reelrl.gym.tasks`    :class:`GymSpec`, the :data:`TASKS` registry of task
  families, :func:`chance_accuracy`.
- :mod:`reelrl.gym.questions` the question families: count, order, direction, color_change,
  multi_select, progress.
- :mod:`reelrl.gym.grounding` families whose answer is a time span (temporal_grounding).
- :mod:`reelrl.gym.id_grounding` objects carrying rendered IDs; which one does X, and when (STVG-R1).
- :mod:`reelrl.gym.manipulation` an end effector pushes an object to a goal: progress and failure
  detection with initial- and current-state images (PRIMO R1).
- :mod:`reelrl.gym.reaching` rendered 2-D reaching episodes cut at a timestep, progress the answer, frames
  shown as images (the served critic's conversation; SOLE-R1).
- :mod:`reelrl.gym.physics`  paired physics counterexamples (physics, physics_open; VideoHallu).
- :mod:`reelrl.gym.streaming` a video in clips, questions needing several (stream_order; VST).
- :mod:`reelrl.gym.environments` visual styles (``GymSpec.environment``): backgrounds, palette
  shades, textures, shape sets.
- :mod:`reelrl.gym.generate` :func:`generate_gym` / :func:`ensure_gym` write
  ``{train,val,test}.jsonl`` + H.264 videos + ``gym.json``.
"""

from reelrl.gym import questions as _questions  # noqa: F401 - registers count, order, direction, ...
from reelrl.gym import grounding as _grounding  # noqa: F401 - registers the grounding families
from reelrl.gym import id_grounding as _id_grounding  # noqa: F401 - registers id_grounding (object IDs)
from reelrl.gym import manipulation as _manipulation  # noqa: F401 - registers push_progress, push_failure
from reelrl.gym import reaching as _reaching  # noqa: F401 - registers reach_progress (SOLE-R1)
from reelrl.gym import physics as _physics  # noqa: F401 - registers the physics counterexample families
from reelrl.gym import streaming as _streaming  # noqa: F401 - registers stream_order (VST)
from reelrl.gym.generate import ensure_gym, generate_gym, make_sample
from reelrl.gym.tasks import TASKS, GymSpec, Sample, chance_accuracy

__all__ = ["TASKS", "GymSpec", "Sample", "chance_accuracy", "ensure_gym", "generate_gym", "make_sample"]
