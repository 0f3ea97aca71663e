"""Online RL with a served critic as the only reward: the reaching environment and probes by hand, the
REINFORCE loss against a hand computation, learning on the true reward, and the served source over real HTTP."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reelrl.gym.reaching import REACH_GOAL, reach_progress
from reelrl.online.policy import OnlineConfig, PixelPolicy, discounted_returns, evaluate, reinforce_loss, rollout, train_policy
from reelrl.online.progress import ServedProgress, TrueProgress
from reelrl.online.reach import ACTIONS, HORIZON, PROBES, STEP, ReachEnv, probe_path


def test_env_moves_clips_and_ends() -> None:
    env = ReachEnv(2)
    frames = env.reset(np.random.default_rng(0))
    assert frames.shape == (2, 56, 56, 3) and env.true_progress() == pytest.approx([0.0, 0.0])
    env.pos = np.array([[28.0, 10.0], [6.0, 6.0]])  # 18 px left of the goal; the top-left corner
    env.start = np.array([[28.0, 5.6], [6.0, 6.0]])
    env.step(np.array([0, 5]))  # action 0: +x (right); action 5: angle 225 deg, up-left
    assert env.pos[0] == pytest.approx([28.0, 14.0])
    assert env.pos[1] == pytest.approx([5.0, 5.0])  # clipped: the disc (side 10) stays inside the frame
    assert env.true_progress()[0] == pytest.approx(1 - 14.0 / 22.4)
    assert ACTIONS[2] == pytest.approx([1.0, 0.0]) and ACTIONS[1] == pytest.approx([math.sqrt(0.5)] * 2)
    env.pos[0] = [28.0, 28.0 - 0.2 * 22.4]  # exactly at the success threshold (progress 0.8)
    assert env.success().tolist() == [True, False]
    for _ in range(HORIZON - 1):
        env.step(np.array([0, 0]))
    with pytest.raises(RuntimeError, match="reset first"):
        env.step(np.array([0, 0]))


def test_probes_true_progress() -> None:
    rng = np.random.default_rng(1)
    paths = {name: probe_path(name, rng) for name in PROBES}
    goal = np.array([28.0, 28.0])
    prog = {k: reach_progress(p, s, goal) for k, (p, s) in paths.items()}  # [T] each
    assert prog["toward"][-1] == pytest.approx(1.0) and prog["toward"][1] == pytest.approx(STEP / 22.4)
    assert np.allclose(prog["orbit"], 0.0, atol=1e-6)  # circles the goal at the start distance
    assert np.all(prog["away"] == 0.0) and np.all(prog["corner"] == 0.0)
    assert prog["overshoot"].max() > 0.7 and prog["overshoot"][-1] < prog["overshoot"].max()
    with pytest.raises(ValueError, match="unknown probe"):
        probe_path("teleport", rng)


def test_returns_and_reinforce_loss_by_hand() -> None:
    rewards = torch.tensor([[0.1, 0.2, 0.5], [0.0, 0.4, 0.2]])  # [2, 3]
    g = discounted_returns(rewards, 0.5)
    torch.testing.assert_close(g, torch.tensor([[0.1 + 0.5 * 0.2 + 0.25 * 0.5, 0.2 + 0.25, 0.5],
                                                [0.0 + 0.5 * 0.4 + 0.25 * 0.2, 0.4 + 0.1, 0.2]]))
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -2.2]], requires_grad=True)  # [2, 3]
    ent = torch.tensor([[1.0, 2.0, 1.5], [0.5, 1.0, 1.0]])
    loss = reinforce_loss(logp, ent, rewards, 1.0, 0.1)
    # returns-to-go [[0.8, 0.7, 0.5], [0.6, 0.6, 0.2]]; per-step baseline over the 2 episodes: the
    # centred returns are +-0.1, +-0.05, +-0.15 and each column's std (unbiased) is sqrt(2) * |c|, so
    # every advantage is +-1/sqrt(2): the first episode +, the second -
    a = 1 / math.sqrt(2)
    want = -(a * (-1.0 - 2.0 - 0.5) - a * (-0.3 - 1.2 - 2.2)) / 6 - 0.1 * ent.mean()
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-a / 6] * 3, [a / 6] * 3]), atol=1e-5, rtol=0)


def test_policy_learns_to_reach_on_the_true_reward() -> None:
    torch.set_num_threads(1)
    cfg = OnlineConfig(iters=30, lr=0.03, seed=0, eval_episodes=32, height=56, width=56)
    untrained = evaluate(PixelPolicy(56, 56, cfg.hidden), cfg, TrueProgress())
    policy, history = train_policy(cfg, TrueProgress(), show_progress=False)
    trained = evaluate(policy, cfg, TrueProgress())
    assert untrained["success"] <= 0.1 and trained["success"] >= 0.8, (untrained, trained)
    assert np.mean([h["success"] for h in history[-5:]]) > np.mean([h["success"] for h in history[:5]]) + 0.5
    assert trained["pearson"] == pytest.approx(1.0) and all(abs(h["gap"]) < 1e-6 for h in history)


def test_served_source_over_http_equals_the_critic(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from reelrl.cli import app
    from reelrl.models.load import load_model_and_processor
    from reelrl.serve.critic import ProgressCritic
    from reelrl.serve.server import BackgroundServer, build_app

    policy = PixelPolicy(56, 56, 8)
    with BackgroundServer(build_app(tiny_model_dir)) as server:
        source = ServedProgress(server.url, workers=3)
        try:
            ro = rollout(policy, ReachEnv(3), source, np.random.default_rng(5))
            assert source._clients[0].health()["episodes"] == 0  # every server episode closed again
        finally:
            source.close()
    assert ro["progress"].shape == (3, HORIZON + 1) and np.all((ro["progress"] >= 0) & (ro["progress"] <= 1))
    # the same episodes replayed (same seed: the rollout draws its action generator right after the reset,
    # as here), their frames answered by the critic in-process, frame by frame
    env, rng = ReachEnv(3), np.random.default_rng(5)
    frames = [env.reset(rng)]
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    for _ in range(HORIZON):
        probs = torch.softmax(policy(frames[-1]), -1)
        frames.append(env.step(torch.multinomial(probs, 1, generator=gen)[:, 0].numpy()))
    model, processor = load_model_and_processor(tiny_model_dir)
    critic = ProgressCritic(model.eval(), processor)
    eps = [critic.open(REACH_GOAL) for _ in range(3)]
    direct = np.array([[r.progress for r in critic.add_frames([(e.id, f[i]) for i, e in enumerate(eps)])]
                       for f in frames]).T  # [3, T+1]
    np.testing.assert_allclose(ro["progress"], direct, atol=1e-6)
    np.testing.assert_allclose(ro["true"][:, -1], env.true_progress())

    out = tmp_path / "online"
    res = CliRunner().invoke(app, ["online-rl", str(out), "--reward", "served", "--critic", str(tiny_model_dir),
                                   "--iters", "1", "--batch", "2", "--eval-episodes", "2", "--size", "56"])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "result.json").read_text())
    assert result["reward"] == "served" and len(result["history"]) == 1 and 0 <= result["eval"]["success"] <= 1
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [0]
    bad = CliRunner().invoke(app, ["online-rl", str(tmp_path / "x"), "--reward", "served"])
    assert bad.exit_code != 0 and "exactly one of --url" in bad.output
    bad = CliRunner().invoke(app, ["online-rl", str(tmp_path / "x"), "--reward", "served", "--url",
                                   "http://127.0.0.1:9"])
    assert bad.exit_code != 0 and "no reelrl serve answers" in bad.output
