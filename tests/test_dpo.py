"""Tests for reelrl.algos.dpo: DPO / IPO on hand-computed numbers, gradients, accumulation."""

from __future__ import annotations

import math

import pytest
import torch

from reelrl.algos import PAIR_LOSSES, dpo_loss, ipo_loss, sequence_logp

# pair 0: h = (-1 - -2) - (-3 - -2) = 2 ; pair 1: h = (-4 - -3) - (-1 - -2) = -2
PC = [-1.0, -4.0]
PR = [-3.0, -1.0]
RC = [-2.0, -3.0]
RR = [-2.0, -2.0]


def leaves(*xs: list[float]) -> list[torch.Tensor]:
    return [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]


def test_dpo_hand_values_and_metrics() -> None:
    pc, pr, rc, rr = leaves(PC, PR, RC, RR)
    out = dpo_loss(pc, pr, rc, rr, beta=0.1)
    # -log sigmoid(0.2) = log(1 + e^-0.2) = 0.5981389 ; -log sigmoid(-0.2) = 0.7981389
    assert out.loss.item() == pytest.approx(0.6981388693815918, abs=1e-6)
    assert out.metrics["rewards_chosen"] == pytest.approx(0.0, abs=1e-7)  # 0.1 * (+1, -1)
    assert out.metrics["rewards_rejected"] == pytest.approx(0.0, abs=1e-7)  # 0.1 * (-1, +1)
    assert out.metrics["reward_margin"] == pytest.approx(0.0, abs=1e-7)  # (0.2, -0.2)
    assert out.metrics["reward_accuracy"] == pytest.approx(0.5)
    out.loss.backward()
    # d/d logp_c = -beta * sigmoid(-beta h) / P ; d/d logp_r is its negative
    g = [-0.02250830013437611, -0.0274916998656239]
    torch.testing.assert_close(pc.grad, torch.tensor(g, dtype=torch.float64), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(pr.grad, -torch.tensor(g, dtype=torch.float64), rtol=1e-5, atol=1e-7)
    assert rc.grad is None and rr.grad is None


def test_dpo_single_pair_metrics() -> None:
    out = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    # h = 2, beta 0.5 -> log(1 + e^-1) = 0.3132617
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-6)
    assert out.metrics["rewards_chosen"] == pytest.approx(0.5)
    assert out.metrics["rewards_rejected"] == pytest.approx(-0.5)
    assert out.metrics["reward_margin"] == pytest.approx(1.0)
    assert out.metrics["reward_accuracy"] == pytest.approx(1.0)


def test_dpo_label_smoothing_hand() -> None:
    t = [torch.tensor([v[0]]) for v in (PC, PR, RC, RR)]
    out = dpo_loss(*t, beta=0.1, label_smoothing=0.1)
    # 0.9 * log(1 + e^-0.2) + 0.1 * log(1 + e^0.2)
    assert out.loss.item() == pytest.approx(0.6181388693815918, abs=1e-6)


def test_dpo_is_log2_when_policy_equals_reference() -> None:
    x = torch.randn(5, generator=torch.Generator().manual_seed(0))
    y = torch.randn(5, generator=torch.Generator().manual_seed(1))
    out = dpo_loss(x, y, x, y)
    assert out.loss.item() == pytest.approx(math.log(2.0), abs=1e-6)
    assert out.metrics["reward_accuracy"] == 0.0  # margin 0 is not a win


def test_ipo_hand_values() -> None:
    pc, pr, rc, rr = leaves(PC, PR, RC, RR)
    out = PAIR_LOSSES.get("ipo")(pc, pr, rc, rr, beta=0.1)
    # (h - 1 / (2 * 0.1))^2: (2 - 5)^2 = 9, (-2 - 5)^2 = 49 -> mean 29
    assert out.loss.item() == pytest.approx(29.0, abs=1e-5)
    out.loss.backward()
    # d/d logp_c = 2 (h - 5) / P = -3, -7
    torch.testing.assert_close(pc.grad, torch.tensor([-3.0, -7.0], dtype=torch.float64))
    assert rc.grad is None


@pytest.mark.parametrize("name", ["dpo", "ipo"])
def test_pair_loss_accumulation(name: str) -> None:
    gen = torch.Generator().manual_seed(3)
    data = [torch.randn(8, generator=gen, dtype=torch.float64) for _ in range(4)]
    full_pc = data[0].clone().requires_grad_(True)
    micro_pc = data[0].clone().requires_grad_(True)
    fn = PAIR_LOSSES.get(name)
    full = fn(full_pc, data[1], data[2], data[3]).loss
    full.backward()
    total = 0.0
    for k in range(4):
        sl = slice(2 * k, 2 * k + 2)
        loss = fn(micro_pc[sl], data[1][sl], data[2][sl], data[3][sl], num_pairs=8).loss
        loss.backward()
        total += loss.item()
    assert total == pytest.approx(full.item(), rel=1e-6)
    torch.testing.assert_close(micro_pc.grad, full_pc.grad, rtol=1e-6, atol=1e-7)


def test_sequence_logp_sums_completion_tokens_only() -> None:
    tok = torch.tensor([[-1.0, -2.0, float("nan")], [-0.5, -0.25, -0.25]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    s = sequence_logp(tok, mask)
    torch.testing.assert_close(s, torch.tensor([-3.0, -1.0]))
    s.sum().backward()
    torch.testing.assert_close(tok.grad, mask)


def test_pair_loss_validation_and_registry() -> None:
    one, two = torch.zeros(1), torch.zeros(2)
    with pytest.raises(ValueError, match=r"must all be \[P\]"):
        dpo_loss(one, two, one, one)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(one, one, one, one, beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(one, one, one, one, label_smoothing=0.5)
    with pytest.raises(ValueError, match="beta"):
        ipo_loss(one, one, one, one, beta=-1.0)
    assert PAIR_LOSSES.names() == ["dpo", "ipo"]
    with pytest.raises(ValueError, match="already registered"):
        PAIR_LOSSES.register("dpo")(dpo_loss)
    with pytest.raises(KeyError, match="valid names: dpo, ipo"):
        PAIR_LOSSES.get("kto")
