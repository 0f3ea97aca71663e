"""Scale-out pieces of MR-SP (LongVILA-R1): process-group helpers, sharded video encoding, Ulysses attention.

- :mod:`reelrl.dist.env`: process group setup (torchrun env, gloo / NCCL), rank helpers,
  differentiable all-gather / all-to-all. The only module that touches torch.distributed.
- :mod:`reelrl.dist.sharded_vision`: stage 1, a video's temporal groups encoded across ranks.
- :mod:`reelrl.dist.ulysses`: stage 2, Ulysses sequence-parallel attention and log-probs.
- :mod:`reelrl.dist.sp_model`: both stages wired into :class:`reelrl.models.vlm.VLM` for one
  prompt (vision encoding, completion logits / log-probs, prefill into a full KV cache);
  imported on demand (it depends on the model adapter).
"""

from reelrl.dist.env import (
    all_gather_autograd,
    all_to_all_autograd,
    barrier,
    device_for_rank,
    init_distributed,
    is_main,
    rank,
    spawn_local,
    world_size,
)
from reelrl.dist.sharded_vision import RankShard, encode_video_sharded, plan_shards
from reelrl.dist.ulysses import (
    ULYSSES_ATTENTION,
    causal_attention,
    gather_sequence,
    register_ulysses_attention,
    sequence_parallel,
    sequence_parallel_logits,
    sequence_parallel_logprobs,
    shard_sequence,
    ulysses_attention,
)

__all__ = [
    "ULYSSES_ATTENTION",
    "RankShard",
    "all_gather_autograd",
    "all_to_all_autograd",
    "barrier",
    "causal_attention",
    "device_for_rank",
    "encode_video_sharded",
    "gather_sequence",
    "init_distributed",
    "is_main",
    "plan_shards",
    "rank",
    "register_ulysses_attention",
    "sequence_parallel",
    "sequence_parallel_logits",
    "sequence_parallel_logprobs",
    "shard_sequence",
    "spawn_local",
    "ulysses_attention",
    "world_size",
]
