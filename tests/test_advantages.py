"""Tests for reelrl.algos.advantages: hand-computed values, loops, invariances, filters."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from reelrl.algos.advantages import (
    ADVANTAGES,
    drop_all_correct,
    dynamic_sampling_mask,
)

# Three groups of G = 4: a split group, a constant group, a single-winner group.
REWARDS = torch.tensor(
    [
        [1.0, 0.0, 0.0, 1.0],
        [0.5, 0.5, 0.5, 0.5],
        [3.0, 0.0, 0.0, 0.0],
    ]
)  # [B=3, G=4]


def _close(actual: torch.Tensor, expected: list[list[float]], tol: float = 1e-6) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), rtol=0.0, atol=tol)


# ----------------------------------------------------------------- hand values


def test_grpo_hand_values() -> None:
    # group 0: mean 0.5, unbiased std sqrt(1/3) = 0.57735 -> 0.5 / 0.57745 = 0.865875
    # group 2: mean 0.75, unbiased std sqrt(6.75 / 3) = 1.5 -> 2.25 / 1.5001, -0.75 / 1.5001
    a = ADVANTAGES.get("grpo")(REWARDS)
    _close(
        a,
        [
            [0.8658754297607016, -0.8658754297607016, -0.8658754297607016, 0.8658754297607016],
            [0.0, 0.0, 0.0, 0.0],
            [1.4999000066662223, -0.49996666888874075, -0.49996666888874075, -0.49996666888874075],
        ],
    )


def test_grpo_population_std_option() -> None:
    # biased std: group 0 -> 0.5, group 2 -> sqrt(6.75 / 4) = 1.299038
    a = ADVANTAGES.get("grpo")(REWARDS, unbiased=False)
    _close(
        a,
        [
            [0.9998000399920016, -0.9998000399920016, -0.9998000399920016, 0.9998000399920016],
            [0.0, 0.0, 0.0, 0.0],
            [1.7319174844987586, -0.5773058281662529, -0.5773058281662529, -0.5773058281662529],
        ],
    )


def test_grpo_eps_is_used() -> None:
    # rewards [0, 1]: mean 0.5, unbiased std 0.70711; eps = 0.1 -> 0.5 / 0.80711 = 0.619497
    a = ADVANTAGES.get("grpo")(torch.tensor([[0.0, 1.0]]), eps=0.1)
    _close(a, [[-0.6194970487, 0.6194970487]])


def test_dr_grpo_hand_values() -> None:
    a = ADVANTAGES.get("dr_grpo")(REWARDS)
    _close(a, [[0.5, -0.5, -0.5, 0.5], [0.0, 0.0, 0.0, 0.0], [2.25, -0.75, -0.75, -0.75]])


def test_batch_std_hand_values() -> None:
    # std over all 12 rewards (unbiased) = 0.8483495563 -> centred / 0.8484495563
    a = ADVANTAGES.get("batch_std")(REWARDS)
    _close(
        a,
        [
            [0.5893102262586017, -0.5893102262586017, -0.5893102262586017, 0.5893102262586017],
            [0.0, 0.0, 0.0, 0.0],
            [2.651896018163708, -0.8839653393879027, -0.8839653393879027, -0.8839653393879027],
        ],
    )


def test_rloo_hand_values() -> None:
    # r_i - mean of the other three: group 2 -> 3 - 0 = 3, 0 - (3 + 0 + 0) / 3 = -1
    a = ADVANTAGES.get("rloo")(REWARDS)
    _close(a, [[2 / 3, -2 / 3, -2 / 3, 2 / 3], [0.0, 0.0, 0.0, 0.0], [3.0, -1.0, -1.0, -1.0]])


def test_reinforce_hand_values() -> None:
    # batch mean = (2 + 2 + 3) / 12 = 7/12
    a = ADVANTAGES.get("reinforce")(REWARDS)
    m = 7 / 12
    _close(a, [[1 - m, -m, -m, 1 - m], [0.5 - m] * 4, [3 - m, -m, -m, -m]])


def test_reg_grpo_hand_values() -> None:
    # (r - mean) / (std + 1e-6): the normalised group has unit (unbiased) std
    a = ADVANTAGES.get("reg_grpo")(REWARDS)
    _close(
        a,
        [
            [0.8660239037870368, -0.8660239037870368, -0.8660239037870368, 0.8660239037870368],
            [0.0, 0.0, 0.0, 0.0],
            [1.4999990000006667, -0.49999966666688894, -0.49999966666688894, -0.49999966666688894],
        ],
    )
    assert torch.allclose(a[[0, 2]].std(dim=1), torch.ones(2), atol=1e-5)


# ------------------------------------------------------ vectorised vs slow loop


def _slow(name: str, rewards: list[list[float]]) -> list[list[float]]:
    """Per-sample reference implementations with the statistics module."""
    flat = [x for g in rewards for x in g]
    out = []
    for g in rewards:
        mean = statistics.mean(g)
        row = []
        for i, r in enumerate(g):
            if name == "grpo":
                row.append((r - mean) / (statistics.stdev(g) + 1e-4))
            elif name == "dr_grpo":
                row.append(r - mean)
            elif name == "batch_std":
                row.append((r - mean) / (statistics.stdev(flat) + 1e-4))
            elif name == "rloo":
                others = [x for j, x in enumerate(g) if j != i]
                row.append(r - statistics.mean(others))
            elif name == "reinforce":
                row.append(r - statistics.mean(flat))
            elif name == "reg_grpo":
                row.append((r - mean) / (statistics.stdev(g) + 1e-6))
            else:
                raise AssertionError(name)
        out.append(row)
    return out


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "batch_std", "rloo", "reinforce", "reg_grpo"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_matches_loop(name: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.rand(5, 6, generator=gen, dtype=torch.float64)  # [B, G]
    rewards[1] = (rewards[1] > 0.5).double()  # a binary group too
    expected = _slow(name, rewards.tolist())
    actual = ADVANTAGES.get(name)(rewards)
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------- invariances


@pytest.mark.parametrize("name", ADVANTAGES.names())
def test_shift_invariance(name: str) -> None:
    # adding a constant to every reward changes no advantage
    gen = torch.Generator().manual_seed(3)
    rewards = torch.rand(4, 5, generator=gen)  # [B, G]
    a = ADVANTAGES.get(name)(rewards)
    b = ADVANTAGES.get(name)(rewards + 7.0)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reg_grpo"])
def test_groups_are_independent(name: str) -> None:
    # changing group 1 leaves group 0's advantages untouched (group-local estimators)
    rewards = REWARDS.clone()
    a = ADVANTAGES.get(name)(rewards)
    rewards[1] = torch.tensor([9.0, -4.0, 2.0, 0.0])
    b = ADVANTAGES.get(name)(rewards)
    torch.testing.assert_close(a[0], b[0])
    assert not torch.allclose(a[1], b[1])


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reg_grpo", "batch_std", "reinforce"])
def test_group_centred_estimators_sum_to_zero_per_group(name: str) -> None:
    a = ADVANTAGES.get(name)(REWARDS)
    sums = a.sum(dim=1)  # [B]
    if name == "reinforce":  # centred over the batch, not per group
        assert abs(float(a.sum())) < 1e-5
        assert abs(float(sums[2])) > 0.1
    else:
        torch.testing.assert_close(sums, torch.zeros(3), atol=1e-5, rtol=0.0)


# --------------------------------------------------------------- validation


@pytest.mark.parametrize("name", ADVANTAGES.names())
def test_rejects_1d_rewards(name: str) -> None:
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        ADVANTAGES.get(name)(torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("name", ["grpo", "rloo", "reg_grpo"])
def test_group_statistics_need_two_samples(name: str) -> None:
    with pytest.raises(ValueError, match="G >= 2"):
        ADVANTAGES.get(name)(torch.tensor([[1.0], [0.0]]))


def test_rejects_nan_rewards() -> None:
    with pytest.raises(ValueError, match="NaN"):
        ADVANTAGES.get("grpo")(torch.tensor([[1.0, float("nan")]]))


def test_output_shape_and_dtype_follow_input_shape() -> None:
    a = ADVANTAGES.get("grpo")(torch.tensor([[1, 0, 1], [0, 0, 1]], dtype=torch.int64))
    assert a.shape == (2, 3) and a.dtype == torch.float32


# ------------------------------------------------------------------ registry


def test_registry_lists_and_refuses_duplicates() -> None:
    assert ADVANTAGES.names() == ["batch_std", "dr_grpo", "grpo", "reg_grpo", "reinforce", "rloo"]
    with pytest.raises(ValueError, match="already registered"):
        ADVANTAGES.register("grpo")(lambda rewards, **kw: rewards)
    with pytest.raises(KeyError, match="valid names: batch_std, dr_grpo, grpo"):
        ADVANTAGES.get("gae")


# ------------------------------------------------------------------- filters


def test_dynamic_sampling_mask_hand() -> None:
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.3, 0.3, 0.3 + 1e-7]])
    keep = dynamic_sampling_mask(rewards)
    assert keep.dtype == torch.bool
    assert keep.tolist() == [False, False, True, False]
    assert dynamic_sampling_mask(rewards, eps=1e-8).tolist() == [False, False, True, True]


def test_drop_all_correct_extremes() -> None:
    acc = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    gen = torch.Generator().manual_seed(0)
    assert drop_all_correct(acc, drop_frac=0.0, generator=gen).tolist() == [True, True, True, True]
    assert drop_all_correct(acc, drop_frac=1.0, generator=gen).tolist() == [False, True, True, False]


def test_drop_all_correct_is_seeded_and_keeps_other_groups() -> None:
    acc = torch.ones(64, 4)  # [B, G]
    acc[::2, 0] = 0.0  # even groups are not all correct
    k1 = drop_all_correct(acc, 0.5, torch.Generator().manual_seed(7))
    k2 = drop_all_correct(acc, 0.5, torch.Generator().manual_seed(7))
    k3 = drop_all_correct(acc, 0.5, torch.Generator().manual_seed(8))
    assert torch.equal(k1, k2)
    assert not torch.equal(k1, k3)
    assert bool(k1[::2].all())  # never drops a group with a wrong rollout
    assert 0 < int((~k1[1::2]).sum()) < 32


def test_drop_all_correct_fraction_is_about_drop_frac() -> None:
    acc = torch.ones(20000, 2)  # all correct
    keep = drop_all_correct(acc, 0.8, torch.Generator().manual_seed(1))
    dropped = 1.0 - keep.float().mean().item()
    assert abs(dropped - 0.8) < 0.015


def test_drop_all_correct_rejects_bad_frac() -> None:
    with pytest.raises(ValueError, match="drop_frac"):
        drop_all_correct(torch.ones(2, 2), 1.5)


def test_math_reference_for_grpo_literal() -> None:
    # the literal in test_grpo_hand_values, re-derived by hand
    assert math.isclose(0.5 / (math.sqrt(1 / 3) + 1e-4), 0.8658754297607016, rel_tol=1e-12)
