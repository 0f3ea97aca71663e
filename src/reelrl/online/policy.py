"""A pixel policy for :class:`~reelrl.online.reach.ReachEnv`, trained by REINFORCE on a progress source.

Policy: a deep visuomotor policy of the usual kind (Levine et al., 2016): the frame
``[H, W, 3]`` scaled to [0, 1], one 5x5 convolution to :data:`KEYPOINTS` feature maps, a
spatial soft-argmax per map (the expected ``(y, x)`` in [-1, 1] under the map's softmax
over pixels), then an MLP (one tanh hidden layer) from the keypoints to logits over
:data:`~reelrl.online.reach.ACTIONS`.

Reward (SOLE-R1): the progress the source answers for the frame after each
action, used directly as a dense reward, ``r_t = p_t`` (t = 1..HORIZON; the
start frame's ``p_0`` is observed too, so a served episode's context holds every
frame). Returns ``G_t = sum_{k>=t} gamma^(k-t) r_k``; advantage: ``G_t`` minus the
batch mean at the same ``t``, divided by the batch std at ``t`` (+1e-6), the
per-timestep baseline of vanilla policy gradient; loss ``-mean(A * log pi(a_t |
s_t)) - entropy_coef * mean(H(pi(. | s_t)))`` (:func:`reinforce_loss`). SOLE-R1
feeds the previous estimate back into the critic's prompt; reelrl's served
conversation holds the frames so far instead (:mod:`reelrl.data.progress_prompt`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from reelrl.gym.reaching import REACH_GOAL
from reelrl.monitor.metrics import MetricsLogger
from reelrl.monitor.progress import progress_bar
from reelrl.online.progress import ProgressSource
from reelrl.online.reach import ACTIONS, HORIZON, ReachEnv

__all__ = ["OnlineConfig", "PixelPolicy", "discounted_returns", "evaluate", "reinforce_loss", "rollout",
           "train_policy"]

KEYPOINTS = 8


@dataclass
class OnlineConfig:
    """Settings of one online policy-gradient run."""

    iters: int = 60  # policy updates
    batch: int = 16  # episodes per update (stepped together; a served batch is one server batch per step)
    lr: float = 3e-3  # Adam learning rate
    gamma: float = 1.0  # discount of the dense progress rewards
    entropy_coef: float = 0.01  # entropy bonus
    hidden: int = 64  # hidden units of the policy MLP
    eval_episodes: int = 64  # greedy evaluation episodes after training
    seed: int = 0  # policy init, training episodes; evaluation uses seed + 10_000
    height: int = 112  # frame size (multiples of 28; the critic's training frames: recipe sole_r1)
    width: int = 112


class PixelPolicy(nn.Module):
    """Frames ``[n, H, W, 3]`` uint8 -> action logits ``[n, 8]`` (module docstring)."""

    def __init__(self, height: int, width: int, hidden: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, KEYPOINTS, 5, padding=2)
        self.register_buffer("grid", torch.stack(torch.meshgrid(torch.linspace(-1, 1, height),
                                                                torch.linspace(-1, 1, width), indexing="ij"))
                             .flatten(1), persistent=False)  # [2, H*W]
        self.net = nn.Sequential(nn.Linear(2 * KEYPOINTS, hidden), nn.Tanh(), nn.Linear(hidden, len(ACTIONS)))
        nn.init.zeros_(self.net[2].weight)  # a uniform policy at the start
        nn.init.zeros_(self.net[2].bias)

    def forward(self, frames: np.ndarray) -> Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0  # [n, 3, H, W]
        attn = self.conv(x).flatten(2).softmax(-1)  # [n, K, H*W]
        keypoints = torch.einsum("nkp,cp->nkc", attn, self.grid).flatten(1)  # [n, K*2]
        return self.net(keypoints)  # [n, 8]


def discounted_returns(rewards: Tensor, gamma: float) -> Tensor:
    """``rewards [n, T]`` -> returns-to-go ``G [n, T]``, ``G_t = r_t + gamma * G_{t+1}``."""
    out = torch.zeros_like(rewards)  # [n, T]
    running = torch.zeros_like(rewards[:, 0])  # [n]
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + gamma * running  # [n]
        out[:, t] = running
    return out


def reinforce_loss(logp: Tensor, entropy: Tensor, rewards: Tensor, gamma: float, entropy_coef: float) -> Tensor:
    """REINFORCE with a per-timestep batch baseline (module docstring).

    ``logp [n, T]``: log pi(a_t | s_t) of the actions taken; ``entropy [n, T]``; ``rewards [n, T]``.
    The advantage carries no gradient.
    """
    g = discounted_returns(rewards, gamma)  # [n, T]
    adv = (g - g.mean(0, keepdim=True)) / (g.std(0, keepdim=True) + 1e-6)  # [n, T]
    return -(adv.detach() * logp).mean() - entropy_coef * entropy.mean()


def rollout(policy: PixelPolicy, env: ReachEnv, source: ProgressSource, rng: np.random.Generator,
            greedy: bool = False) -> dict[str, Tensor | np.ndarray]:
    """One batch of episodes: ``logp``/``entropy`` ``[n, T]``, ``progress`` (the source's) and ``true``
    ``[n, T+1]`` (frame 0 included), ``success`` ``[n]``."""
    frames = env.reset(rng)  # [n, H, W, 3]
    source.start(REACH_GOAL, env.n)
    try:
        progress, true = [source.observe(frames, env)], [env.true_progress()]  # [n] each
        logps, ents = [], []
        gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        for _ in range(HORIZON):
            dist = torch.distributions.Categorical(logits=policy(frames))  # [n, 8]
            a = dist.probs.argmax(-1) if greedy else torch.multinomial(dist.probs, 1, generator=gen)[:, 0]  # [n]
            logps.append(dist.log_prob(a))
            ents.append(dist.entropy())
            frames = env.step(a.numpy())  # [n, H, W, 3]
            progress.append(source.observe(frames, env))
            true.append(env.true_progress())
    finally:
        source.finish()
    return {"logp": torch.stack(logps, 1), "entropy": torch.stack(ents, 1),  # [n, T] each
            "progress": np.stack(progress, 1), "true": np.stack(true, 1), "success": env.success()}


def train_policy(cfg: OnlineConfig, source: ProgressSource, out: Path | None = None,
                 show_progress: bool = True) -> tuple[PixelPolicy, list[dict]]:
    """Train a :class:`PixelPolicy` for ``cfg.iters`` updates on ``source``'s progress as the only reward.

    Each update's metrics (``reward``: the source's mean progress over the batch's steps; ``true``: the true
    mean progress; ``success``: the batch's success rate; ``gap``: reward minus true) are logged to
    ``out/metrics.jsonl`` and TensorBoard when ``out`` is given, and returned.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    policy = PixelPolicy(cfg.height, cfg.width, cfg.hidden)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    env = ReachEnv(cfg.batch, cfg.height, cfg.width)
    logger = MetricsLogger(out, tensorboard=True) if out is not None else None
    history = []
    with progress_bar(f"online RL ({source.name} reward)", cfg.iters, enabled=show_progress) as bar:
        for it in range(cfg.iters):
            ro = rollout(policy, env, source, rng)
            rewards = torch.as_tensor(ro["progress"][:, 1:], dtype=torch.float32)  # [n, T]
            loss = reinforce_loss(ro["logp"], ro["entropy"], rewards, cfg.gamma, cfg.entropy_coef)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"online RL iteration {it}: loss is {loss.item()} (rewards {rewards})")
            opt.zero_grad()
            loss.backward()
            opt.step()
            m = {"reward": float(rewards.mean()), "true": float(ro["true"][:, 1:].mean()),
                 "success": float(ro["success"].mean()), "loss": float(loss.detach()), "entropy": float(ro["entropy"].detach().mean())}
            m["gap"] = m["reward"] - m["true"]
            history.append({"iter": it, **m})
            if logger is not None:
                logger.log(it, m)
            bar.advance(f"success {m['success']:.2f} reward {m['reward']:.3f}")
    if logger is not None:
        logger.close()
    return policy, history


def evaluate(policy: PixelPolicy, cfg: OnlineConfig, source: ProgressSource) -> dict[str, float]:
    """Greedy episodes from seed ``cfg.seed + 10_000``: success rate, mean final true progress, and the
    source's progress against the true one over every frame (mean of each, Pearson r)."""
    env = ReachEnv(cfg.eval_episodes, cfg.height, cfg.width)
    with torch.no_grad():
        ro = rollout(policy, env, source, np.random.default_rng(cfg.seed + 10_000), greedy=True)
    return {"success": float(ro["success"].mean()), "final_true": float(ro["true"][:, -1].mean()),
            **agreement(ro["progress"], ro["true"])}


def agreement(progress: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """A source's progress against the true one over the same frames: means and Pearson r (NaN when either
    is constant)."""
    p, t = np.asarray(progress, dtype=np.float64).ravel(), np.asarray(true, dtype=np.float64).ravel()
    r = float(np.corrcoef(p, t)[0, 1]) if p.std() > 1e-9 and t.std() > 1e-9 else float("nan")
    return {"source_mean": float(p.mean()), "true_mean": float(t.mean()), "pearson": r}


def save(out: Path, cfg: OnlineConfig, source: str, history: list[dict], result: dict) -> None:
    """``out/result.json``: the config, the source, the final metrics and the training curve."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps({"config": asdict(cfg), "reward": source, "eval": result,
                                                 "history": history}, indent=1))
