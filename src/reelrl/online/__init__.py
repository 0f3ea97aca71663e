"""Online control RL whose only reward is a served video critic (SOLE-R1).

A small policy acts in a rendered 2-D reaching task from its frames; after each
action the new frame goes to a progress source and the progress it answers is
the step's reward. The source is either ``reelrl serve`` (the served critic:
each episode is one server episode, each frame extends its cached context) or
the task's true progress (the reference the served reward is compared with).

- :mod:`reelrl.online.reach`:    the vectorised reaching environment and scripted probe behaviours
- :mod:`reelrl.online.progress`: progress sources: the true progress, the served critic over HTTP
- :mod:`reelrl.online.policy`:   the pixel policy, the REINFORCE loss, training and evaluation

Layer: beside ``serve/`` (it is a client of it) and ``train/``; only ``cli.py`` and
``benchmarks/`` import it.
"""
