"""``reelrl serve``: a progress critic served over HTTP as a dense video reward (SOLE-R1).

A client opens an episode with a goal and streams its frames one by one; each
frame extends that episode's cached context (KV cache) and is answered with
the critic's progress in [0, 1] at that timestep.

- :mod:`reelrl.serve.prompt`: the served conversation (:mod:`reelrl.data.progress_prompt`) as token pieces
- :mod:`reelrl.serve.answer`: the progress answer's grammar (greedy within it)
- :mod:`reelrl.serve.critic`: episodes as KV caches, batched frame steps, the no-cache baseline
- :mod:`reelrl.serve.batcher`: the queue batching concurrent episodes' frames
- :mod:`reelrl.serve.app`: the FastAPI routes, limits and error answers
- :mod:`reelrl.serve.server`: building from a checkpoint, uvicorn, a background server
- :mod:`reelrl.serve.client`: the Python client

Layer: beside ``train/`` and ``eval/``; only ``cli.py`` imports it.
"""
