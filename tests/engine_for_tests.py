"""One prompt's group through the default rollout engine, the way the trainers call it."""

from __future__ import annotations

from reelrl.rollout.engine import GenerationRequest, KVCacheEngine


def generate_group(vlm, prompt, n, params, generators=None, vision=None, share_prefix=True):
    """``n`` completions of ``prompt`` (a :class:`reelrl.rollout.hf.Rollout`) from :class:`KVCacheEngine`."""
    return KVCacheEngine(vlm, share_prefix).generate([GenerationRequest(prompt, n, generators, vision)], params)[0]


class RecordingEngine(KVCacheEngine):
    """A user-side engine named by import path in a recipe: the default engine, counting what the trainers ask."""

    calls: dict[str, int] = {"generate": 0, "requests": 0, "sync_weights": 0}

    def __init__(self, vlm, share_prefix=True, label="x"):
        super().__init__(vlm, share_prefix)
        self.label = label

    def generate(self, requests, params):
        RecordingEngine.calls["generate"] += 1
        RecordingEngine.calls["requests"] += len(requests)
        return super().generate(requests, params)

    def sync_weights(self):
        RecordingEngine.calls["sync_weights"] += 1
