"""Tests for reelrl.algos.losses, reelrl.algos.kl and reelrl.algos.token_weights.

Hand-computed values, vectorised-vs-loop checks over seeds, gradient routing,
clip gating, padding invariance and gradient-accumulation equivalence.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from reelrl.algos import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    LOSSES,
    LossOutput,
    PolicyBatch,
    aggregate,
    tw_grpo_weights,
    tw_grpo_weights_from_logits,
)

LN2 = math.log(2.0)
K3_LN2 = 2.0 - LN2 - 1.0  # k3 at d = ln 2: exp(d) - d - 1 = 0.3068528


def leaf(x: list | Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.as_tensor(x, dtype=dtype).clone().requires_grad_(True)


def close(actual: Tensor | float, expected: Any, tol: float = 1e-6) -> None:
    a = torch.as_tensor(actual, dtype=torch.float64)
    e = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(a, e, rtol=tol, atol=tol)


# =============================================================== KL estimators


def test_kl_hand_values_and_gradients() -> None:
    for name, value, grad in [
        ("k1", -LN2, 1.0),  # logp - ref; d/dlogp = 1
        ("k2", 0.5 * LN2**2, -LN2),  # 0.5 (logp - ref)^2; d/dlogp = logp - ref
        ("k3", K3_LN2, -1.0),  # exp(d) - d - 1, d = ref - logp; d/dlogp = 1 - exp(d)
        ("low_var_kl", K3_LN2, -1.0),
    ]:
        logp = leaf([[0.0]])
        ref = leaf([[LN2]])
        kl = KL_ESTIMATORS.get(name)(logp, ref)
        kl.sum().backward()
        close(kl, [[value]])
        close(logp.grad, [[grad]])
        assert ref.grad is None, name


def test_k3_clamps_d_and_low_var_kl_clamps_result() -> None:
    logp = torch.zeros(1, 4)
    ref = torch.tensor([[15.0, 10.0, -10.5, -15.0]])  # d = ref - logp
    k3 = KL_ESTIMATORS.get("k3")(logp, ref)
    # d clamped to +-10: e^10 - 11, e^10 - 11, e^-10 + 9, e^-10 + 9
    close(k3, [[22015.465794806718, 22015.465794806718, 9.000045399929762, 9.000045399929762]], tol=1e-5)
    lv = KL_ESTIMATORS.get("low_var_kl")(logp, ref)
    # d clamped to +-20, result to [-10, 10]: d = -10.5 -> e^-10.5 + 9.5
    close(lv, [[10.0, 10.0, 9.50002753644935, 10.0]], tol=1e-6)


def test_kl_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="ref_logp shape"):
        KL_ESTIMATORS.get("k3")(torch.zeros(2, 3), torch.zeros(2, 4))


def test_kl_registry() -> None:
    assert KL_ESTIMATORS.names() == ["k1", "k2", "k3", "low_var_kl"]
    with pytest.raises(ValueError, match="already registered"):
        KL_ESTIMATORS.register("k3")(lambda a, b: a)


# ================================================================ aggregation

VALUES = torch.tensor([[1.0, 2.0, 99.0], [3.0, 4.0, 5.0]])  # [2, 3]; 99 is padding
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # [2, 3]


def test_aggregate_hand_values() -> None:
    close(aggregate(VALUES, MASK, "token-mean"), 15 / 5)
    close(aggregate(VALUES, MASK, "seq-mean-token-mean"), (1.5 + 4.0) / 2)
    close(aggregate(VALUES, MASK, "seq-mean-token-sum", max_len=4), (3 / 4 + 12 / 4) / 2)
    # global counts override the local ones
    close(aggregate(VALUES, MASK, "token-mean", num_tokens=10), 1.5)
    close(aggregate(VALUES, MASK, "seq-mean-token-mean", num_seqs=4), 1.375)
    close(aggregate(VALUES, MASK, "seq-mean-token-sum", max_len=4, num_seqs=4), 0.9375)


def test_aggregate_ignores_nan_in_padding() -> None:
    v = VALUES.clone()
    v[0, 2] = float("nan")
    for mode in AGGREGATIONS.names():
        assert torch.isfinite(aggregate(v, MASK, mode, max_len=3))


def test_aggregate_empty_sequence_counts_in_seq_mean() -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    close(aggregate(VALUES, mask, "seq-mean-token-mean"), 1.5 / 2)
    close(aggregate(VALUES, mask, "token-mean"), 1.5)


def test_aggregate_errors() -> None:
    with pytest.raises(ValueError, match="max_len"):
        aggregate(VALUES, MASK, "seq-mean-token-sum")
    with pytest.raises(ValueError, match="3 tokens > max_len=2"):
        aggregate(VALUES, MASK, "seq-mean-token-sum", max_len=2)
    with pytest.raises(KeyError, match="valid names: seq-mean-token-mean, seq-mean-token-sum, token-mean"):
        aggregate(VALUES, MASK, "sum")
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        aggregate(VALUES, MASK[:, :2], "token-mean")


# ======================================================= hand-computed losses
# Case A: two sequences; seq 0 has 2 tokens (A = +1), seq 1 has 3 tokens (A = -1).
# Ratios: seq 0 [1.5, 0.5], seq 1 [1.5, 0.5, 1.0]. With eps 0.2 the per-token
# surrogate -min(rho A, clip(rho) A) is seq 0 [-1.2, -0.5], seq 1 [1.5, 0.8, 1.0].

OLD_A = [[-1.0, -2.0, -0.3], [-0.5, -1.5, -0.7]]
RATIO_A = [[1.5, 0.5, 1.0], [1.5, 0.5, 1.0]]
MASK_A = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
ADV_A = [1.0, -1.0]


def case_a(with_ref: bool = False, **extra: Any) -> tuple[PolicyBatch, Tensor]:
    old = torch.tensor(OLD_A, dtype=torch.float64)  # [2, 3]
    logp = leaf(old + torch.log(torch.tensor(RATIO_A, dtype=torch.float64)))  # [2, 3]
    ref = (logp.detach() + LN2) if with_ref else None  # k3 = 0.3068528 per token
    batch = PolicyBatch(
        logp=logp, old_logp=old, ref_logp=ref, advantages=torch.tensor(ADV_A), mask=torch.tensor(MASK_A), **extra
    )
    return batch, logp


def test_grpo_hand_value_gradient_and_metrics() -> None:
    batch, logp = case_a()
    out = LOSSES.get("grpo")(batch, beta=0.0)
    assert isinstance(out, LossOutput)
    # seq means: (-1.2 - 0.5) / 2 = -0.85 and (1.5 + 0.8 + 1.0) / 3 = 1.1 -> 0.125
    close(out.loss, 0.125)
    out.loss.backward()
    # clipped tokens have zero grad; unclipped: d(-rho A)/dlogp = -rho A / len / N
    close(logp.grad, [[0.0, -0.125, 0.0], [0.25, 0.0, 1 / 6]])
    assert out.metrics["clip_frac_high"] == pytest.approx(0.2)  # seq 0 tok 0
    assert out.metrics["clip_frac_low"] == pytest.approx(0.2)  # seq 1 tok 1
    assert out.metrics["clip_frac"] == pytest.approx(0.4)
    assert out.metrics["ratio_mean"] == pytest.approx(1.0)
    assert out.metrics["pg_loss"] == pytest.approx(0.125)


def test_grpo_with_k3_kl_hand_value() -> None:
    batch, logp = case_a(with_ref=True)
    out = LOSSES.get("grpo")(batch)  # beta 0.04, k3
    close(out.loss, 0.125 + 0.04 * K3_LN2)
    assert out.metrics["kl"] == pytest.approx(K3_LN2)
    out.loss.backward()
    # KL grad per token: beta * (1 - e^ln2) / len / N = -0.04 / len / 2
    close(logp.grad, [[-0.01, -0.125 - 0.01, 0.0], [0.25 - 0.04 / 6, -0.04 / 6, 1 / 6 - 0.04 / 6]])


def test_grpo_aggregation_modes_hand() -> None:
    batch, _ = case_a()
    close(LOSSES.get("grpo")(batch, beta=0.0, agg="token-mean").loss, 1.6 / 5)
    close(LOSSES.get("grpo")(batch, beta=0.0, agg="seq-mean-token-sum", max_len=4).loss, 0.2)


def test_grpo_beta_needs_ref_and_beta_zero_does_not() -> None:
    batch, _ = case_a()
    with pytest.raises(ValueError, match="needs PolicyBatch.ref_logp"):
        LOSSES.get("grpo")(batch, beta=0.04)
    assert torch.isfinite(LOSSES.get("grpo")(batch, beta=0.0).loss)


def test_dapo_hand_value() -> None:
    batch, logp = case_a()
    out = LOSSES.get("dapo")(batch)
    # clip_high 0.28: seq 0 tok 0 -> -1.28; token-mean over 5 tokens
    close(out.loss, (-1.28 - 0.5 + 1.5 + 0.8 + 1.0) / 5)
    out.loss.backward()
    close(logp.grad, [[0.0, -0.5 / 5, 0.0], [1.5 / 5, 0.0, 1.0 / 5]])
    # a ratio of 1.25 is clipped by GRPO (1.2) but not by DAPO (1.28)
    b2 = PolicyBatch(
        logp=torch.tensor([[math.log(1.25)]]), old_logp=torch.zeros(1, 1),
        advantages=torch.tensor([1.0]), mask=torch.ones(1, 1),
    )
    close(LOSSES.get("dapo")(b2).loss, -1.25)
    close(LOSSES.get("grpo")(b2, beta=0.0).loss, -1.2)


def test_dr_grpo_hand_value_and_max_len_required() -> None:
    batch, logp = case_a()
    with pytest.raises(ValueError, match="max_len"):
        LOSSES.get("dr_grpo")(batch)
    out = LOSSES.get("dr_grpo")(batch, max_len=4)
    close(out.loss, 0.2)  # (-1.7 / 4 + 3.3 / 4) / 2
    out.loss.backward()
    close(logp.grad, [[0.0, -0.5 / 8, 0.0], [1.5 / 8, 0.0, 1.0 / 8]])


def test_tw_grpo_hand_value_and_needs_weights() -> None:
    batch, _ = case_a()
    with pytest.raises(ValueError, match="token_weights"):
        LOSSES.get("tw_grpo")(batch)
    weights = torch.tensor([[2.0, 0.5, 9.0], [1.0, 3.0, 0.5]])  # 9.0 sits on padding
    batch, logp = case_a(token_weights=weights)
    out = LOSSES.get("tw_grpo")(batch)
    # seq 0: (-1.2*2 - 0.5*0.5) / 2 = -1.325; seq 1: (1.5 + 0.8*3 + 1.0*0.5) / 3 = 1.4667
    close(out.loss, (-2.65 / 2 + 4.4 / 3) / 2)
    out.loss.backward()
    close(logp.grad, [[0.0, -0.5 * 0.5 / 4, 0.0], [1.5 / 6, 0.0, 0.5 / 6]])


def test_gspo_hand_value_and_sequence_level_clipping() -> None:
    old = torch.zeros(2, 2, dtype=torch.float64)
    # seq 0: mean log-ratio 0.2 -> s = e^0.2, clipped to 1.0004 (A = +1)
    # seq 1: mean log-ratio 1e-4 -> s = 1.0001 (inside the clip range, A = -2)
    logp = leaf([[0.1, 0.3], [-0.0001, 0.0003]])
    batch = PolicyBatch(logp=logp, old_logp=old, advantages=torch.tensor([1.0, -2.0]), mask=torch.ones(2, 2))
    out = LOSSES.get("gspo")(batch)
    close(out.loss, (-1.0004 + 2 * math.exp(1e-4)) / 2, tol=1e-6)
    out.loss.backward()
    # whole sequence 0 is clipped; seq 1 tokens: -A * s / len / N = 2 * e^1e-4 / 4
    g1 = math.exp(1e-4) / 2
    close(logp.grad, [[0.0, 0.0], [g1, g1]], tol=1e-6)
    assert out.metrics["clip_frac"] == pytest.approx(0.5)
    assert out.metrics["seq_ratio_mean"] == pytest.approx((math.exp(0.2) + math.exp(1e-4)) / 2, rel=1e-6)


def test_gspo_token_advantages_use_stop_gradient_ratio() -> None:
    # GSPO-token: s_i,t = sg[s_i] * pi_t / sg[pi_t] -> d s_i,t / d logp_t' = s_i * [t == t'].
    # seq: log-ratios [-1e-4, 3e-4] -> s = e^1e-4 (unclipped); per-token A = [-2, -4].
    logp = leaf([[-0.0001, 0.0003]])
    batch = PolicyBatch(logp=logp, old_logp=torch.zeros(1, 2), advantages=torch.tensor([[-2.0, -4.0]]),
                        mask=torch.ones(1, 2))
    out = LOSSES.get("gspo")(batch)
    s = math.exp(1e-4)
    close(out.loss, (2 * s + 4 * s) / 2)
    out.loss.backward()
    # token t gets -A_t * s / len (a plain broadcast of s_i would give both tokens 3 * s / 2)
    close(logp.grad, [[s, 2 * s]])


def test_reg_grpo_hand_value_and_gradient() -> None:
    # G = 3, rho = [0.3, -0.1, 0.1] -> A_hat = [0.2, -0.2, 0] / (0.2 + 1e-4); target A = [1, 0, -1]
    old = torch.zeros(3, 2, dtype=torch.float64)
    logp = leaf([[0.1, 0.2], [0.0, -0.1], [0.15, -0.05]])
    batch = PolicyBatch(
        logp=logp, old_logp=old, advantages=torch.tensor([1.0, 0.0, -1.0]), mask=torch.ones(3, 2), group_size=3
    )
    out = LOSSES.get("reg_grpo")(batch, beta=0.0)
    close(out.loss, 0.6663336664168332, tol=1e-5)
    out.loss.backward()
    # d loss / d rho (central differences in float64, done offline); every token of a sequence shares it
    g = [-1.6650020812636335, -1.6666654183428165, 3.3316674995509388]
    close(logp.grad, [[g[0], g[0]], [g[1], g[1]], [g[2], g[2]]], tol=1e-4)


def test_reg_grpo_kl_term() -> None:
    old = torch.zeros(3, 2, dtype=torch.float64)
    logp = leaf([[0.1, 0.2], [0.0, -0.1], [0.15, -0.05]])
    batch = PolicyBatch(
        logp=logp, old_logp=old, ref_logp=logp.detach() + LN2,
        advantages=torch.tensor([1.0, 0.0, -1.0]), mask=torch.ones(3, 2), group_size=3,
    )
    out = LOSSES.get("reg_grpo")(batch)  # beta 0.1, k3 token-mean
    close(out.loss, 0.6663336664168332 + 0.1 * K3_LN2, tol=1e-5)


def test_reg_grpo_first_step_gradient_is_finite_and_follows_advantage() -> None:
    # logp == old_logp -> rho = 0, A_hat = 0, loss = mean A^2 and
    # d loss / d rho_j = -2 (A_j - mean A) / (N (1e-6 + eps)) = -2 A_j / (3 * 1.01e-4)
    logp = leaf(torch.full((3, 2), -0.7, dtype=torch.float64))
    batch = PolicyBatch(
        logp=logp, old_logp=logp.detach(), advantages=torch.tensor([1.0, 0.0, -1.0]),
        mask=torch.ones(3, 2), group_size=3,
    )
    out = LOSSES.get("reg_grpo")(batch, beta=0.0)
    close(out.loss, 2 / 3)
    out.loss.backward()
    assert torch.isfinite(logp.grad).all()
    g = -2 / (3 * 1.01e-4)
    close(logp.grad, [[g, g], [0.0, 0.0], [-g, -g]], tol=1e-3)


def test_reg_grpo_validation() -> None:
    batch = PolicyBatch(logp=torch.zeros(4, 2), advantages=torch.zeros(4), mask=torch.ones(4, 2))
    with pytest.raises(ValueError, match="group_size >= 2"):
        LOSSES.get("reg_grpo")(batch, beta=0.0)
    batch = PolicyBatch(logp=torch.zeros(4, 2), advantages=torch.zeros(4, 2), mask=torch.ones(4, 2), group_size=2)
    with pytest.raises(ValueError, match="per-sequence advantages"):
        LOSSES.get("reg_grpo")(batch, beta=0.0)


# =================================================== vectorised vs slow loop


def _slow_agg(terms: list[list[Tensor]], agg: str, max_len: int) -> Tensor:
    """Aggregate lists of per-token scalar losses (one list per sequence) in a loop."""
    if agg == "token-mean":
        total = sum((t for seq in terms for t in seq), torch.tensor(0.0, dtype=torch.float64))
        return total / max(1, sum(len(seq) for seq in terms))
    out = torch.tensor(0.0, dtype=torch.float64)
    for seq in terms:
        s = sum(seq, torch.tensor(0.0, dtype=torch.float64))
        out = out + (s / max(1, len(seq)) if agg == "seq-mean-token-mean" else s / max_len)
    return out / len(terms)


def _slow_clipped(
    logp: Tensor, old: Tensor, ref: Tensor | None, adv: Tensor, mask: Tensor, weights: Tensor | None,
    *, clip_low: float, clip_high: float, beta: float, agg: str, max_len: int,
) -> Tensor:
    """Per-token python loop of the GRPO/DAPO/Dr.GRPO/TW-GRPO loss (k3 KL)."""
    terms: list[list[Tensor]] = []
    n, t = logp.shape
    for i in range(n):
        seq = []
        for j in range(t):
            if mask[i, j] == 0:
                continue
            rho = torch.exp(logp[i, j] - old[i, j])
            a = adv[i]
            term = -torch.min(rho * a, torch.clamp(rho, 1 - clip_low, 1 + clip_high) * a)
            if weights is not None:
                term = term * weights[i, j]
            if beta > 0:
                assert ref is not None
                d = torch.clamp(ref[i, j] - logp[i, j], -10, 10)
                term = term + beta * (torch.exp(d) - d - 1)
            seq.append(term)
        terms.append(seq)
    return _slow_agg(terms, agg, max_len)


def _slow_gspo(logp: Tensor, old: Tensor, adv: Tensor, mask: Tensor, *, clip_low: float, clip_high: float) -> Tensor:
    """The sequence-level GSPO objective -1/N sum_i min(s_i A_i, clip(s_i) A_i) in a loop."""
    total = torch.tensor(0.0, dtype=torch.float64)
    n, t = logp.shape
    for i in range(n):
        toks = [logp[i, j] - old[i, j] for j in range(t) if mask[i, j] > 0]
        s = torch.exp(sum(toks, torch.tensor(0.0, dtype=torch.float64)) / len(toks))
        total = total - torch.min(s * adv[i], torch.clamp(s, 1 - clip_low, 1 + clip_high) * adv[i])
    return total / n


def _slow_reg(
    logp: Tensor, old: Tensor, ref: Tensor, adv: Tensor, mask: Tensor, g: int, beta: float, eps: float
) -> Tensor:
    """Reg-GRPO in a loop: per-group normalised rho regressed on A, + beta * token-mean k3."""
    n, t = logp.shape
    rho = [sum((logp[i, j] - old[i, j] for j in range(t) if mask[i, j] > 0), torch.tensor(0.0, dtype=torch.float64))
           for i in range(n)]
    reg = torch.tensor(0.0, dtype=torch.float64)
    for start in range(0, n, g):
        grp = rho[start:start + g]
        mean = sum(grp) / g
        std = torch.sqrt(sum((r - mean) ** 2 for r in grp) / (g - 1))
        for k, r in enumerate(grp):
            reg = reg + (adv[start + k] - (r - mean) / (std + eps)) ** 2
    reg = reg / n
    kl_terms = []
    for i in range(n):
        for j in range(t):
            if mask[i, j] > 0:
                d = torch.clamp(ref[i, j] - logp[i, j], -10, 10)
                kl_terms.append(torch.exp(d) - d - 1)
    return reg + beta * sum(kl_terms) / len(kl_terms)


def random_case(seed: int, n: int = 6, t: int = 5, spread: float = 0.3) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=gen, dtype=torch.float64) * 3  # [N, T]
    logp = old + spread * torch.randn(n, t, generator=gen, dtype=torch.float64)  # [N, T]
    ref = old + 0.5 * torch.randn(n, t, generator=gen, dtype=torch.float64)  # [N, T]
    lengths = torch.randint(1, t + 1, (n,), generator=gen)  # [N]
    mask = (torch.arange(t)[None, :] < lengths[:, None]).double()  # [N, T]
    adv = torch.randn(n, generator=gen, dtype=torch.float64)  # [N]
    weights = 1 + torch.rand(n, t, generator=gen, dtype=torch.float64)  # [N, T]
    return {"old": old, "logp": logp, "ref": ref, "mask": mask, "adv": adv, "weights": weights}


LOOP_CASES = [
    ("grpo", dict(clip_low=0.2, clip_high=0.2, beta=0.04, agg="seq-mean-token-mean"), False),
    ("dapo", dict(clip_low=0.2, clip_high=0.28, beta=0.0, agg="token-mean"), False),
    ("dr_grpo", dict(clip_low=0.2, clip_high=0.2, beta=0.0, agg="seq-mean-token-sum"), False),
    ("tw_grpo", dict(clip_low=0.2, clip_high=0.2, beta=0.0, agg="seq-mean-token-mean"), True),
]


@pytest.mark.parametrize("name,params,weighted", LOOP_CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clipped_losses_match_loop(name: str, params: dict, weighted: bool, seed: int) -> None:
    c = random_case(seed)
    t = c["mask"].shape[1]
    logp_v, logp_s = leaf(c["logp"]), leaf(c["logp"])
    w = c["weights"] if weighted else None
    batch = PolicyBatch(
        logp=logp_v, old_logp=c["old"], ref_logp=c["ref"], advantages=c["adv"], mask=c["mask"], token_weights=w
    )
    kwargs = {"max_len": t} if params["agg"] == "seq-mean-token-sum" else {}
    out = LOSSES.get(name)(batch, **kwargs)
    expected = _slow_clipped(logp_s, c["old"], c["ref"], c["adv"], c["mask"], w, max_len=t, **params)
    close(out.loss, expected.detach(), tol=1e-5)
    out.loss.backward()
    expected.backward()
    close(logp_v.grad, logp_s.grad, tol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gspo_matches_sequence_objective_loop(seed: int) -> None:
    # spread 0.0005 puts some sequences inside the tiny GSPO clip range and some outside
    c = random_case(seed, n=8, spread=0.0005)
    logp_v, logp_s = leaf(c["logp"]), leaf(c["logp"])
    out = LOSSES.get("gspo")(PolicyBatch(logp=logp_v, old_logp=c["old"], advantages=c["adv"], mask=c["mask"]))
    expected = _slow_gspo(logp_s, c["old"], c["adv"], c["mask"], clip_low=3e-4, clip_high=4e-4)
    close(out.loss, expected.detach(), tol=1e-5)
    out.loss.backward()
    expected.backward()
    close(logp_v.grad, logp_s.grad, tol=1e-5)
    assert (logp_s.grad != 0).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reg_grpo_matches_loop(seed: int) -> None:
    c = random_case(seed, n=6)
    logp_v, logp_s = leaf(c["logp"]), leaf(c["logp"])
    batch = PolicyBatch(
        logp=logp_v, old_logp=c["old"], ref_logp=c["ref"], advantages=c["adv"], mask=c["mask"], group_size=3
    )
    out = LOSSES.get("reg_grpo")(batch)
    expected = _slow_reg(logp_s, c["old"], c["ref"], c["adv"], c["mask"], g=3, beta=0.1, eps=1e-4)
    close(out.loss, expected.detach(), tol=1e-5)
    out.loss.backward()
    expected.backward()
    close(logp_v.grad, logp_s.grad, tol=1e-4)


# ==================================================== gradient routing / gating

ALL_POLICY_LOSSES = [
    ("grpo", {}),
    ("dapo", {"beta": 0.01}),
    ("dr_grpo", {"max_len": 5, "beta": 0.01}),
    ("gspo", {"beta": 0.01}),
    ("tw_grpo", {"beta": 0.01}),
    ("reg_grpo", {}),
]


def _full_batch(c: dict[str, Tensor], **leaves: Tensor) -> PolicyBatch:
    return PolicyBatch(
        logp=leaves.get("logp", c["logp"]), old_logp=leaves.get("old", c["old"]), ref_logp=leaves.get("ref", c["ref"]),
        advantages=leaves.get("adv", c["adv"]), mask=c["mask"], token_weights=leaves.get("weights", c["weights"]),
        group_size=3,
    )


@pytest.mark.parametrize("name,params", ALL_POLICY_LOSSES)
def test_only_logp_gets_gradient(name: str, params: dict) -> None:
    c = random_case(5)
    leaves = {k: leaf(c[k]) for k in ("logp", "old", "ref", "adv", "weights")}
    out = LOSSES.get(name)(_full_batch(c, **leaves), **params)
    out.loss.backward()
    assert leaves["logp"].grad is not None and (leaves["logp"].grad != 0).any()
    for k in ("old", "ref", "adv", "weights"):
        assert leaves[k].grad is None, f"{name}: {k} received a gradient"


def test_clip_gating() -> None:
    # four 1-token sequences: (rho, A) = (1.5, +), (0.5, -), (1.5, -), (0.5, +)
    logp = leaf([[math.log(1.5)], [math.log(0.5)], [math.log(1.5)], [math.log(0.5)]])
    batch = PolicyBatch(
        logp=logp, old_logp=torch.zeros(4, 1), advantages=torch.tensor([1.0, -1.0, -1.0, 1.0]), mask=torch.ones(4, 1)
    )
    LOSSES.get("grpo")(batch, beta=0.0).loss.backward()
    # outside the clip range on the side the advantage pushes to: zero gradient;
    # outside on the other side: gradient -A * rho / N
    close(logp.grad, [[0.0], [0.0], [1.5 / 4], [-0.5 / 4]])


def test_old_logp_none_means_on_policy() -> None:
    logp = leaf([[-1.0, -2.0]])
    batch = PolicyBatch(logp=logp, advantages=torch.tensor([2.0]), mask=torch.ones(1, 2))
    out = LOSSES.get("grpo")(batch, beta=0.0)
    close(out.loss, -2.0)  # ratio 1 everywhere
    out.loss.backward()
    close(logp.grad, [[-1.0, -1.0]])  # -A * rho / len


# ========================================================== padding invariance


@pytest.mark.parametrize("name,params", ALL_POLICY_LOSSES)
@pytest.mark.parametrize("garbage", [1e4, -1e4, float("nan"), float("inf")])
def test_padding_changes_nothing(name: str, params: dict, garbage: float) -> None:
    c = random_case(11)
    pad = c["mask"] == 0
    assert pad.any()
    la = leaf(c["logp"])
    out_a = LOSSES.get(name)(_full_batch(c, logp=la), **params)
    out_a.loss.backward()
    dirty = {k: torch.where(pad, torch.full_like(c[k], garbage), c[k]) for k in ("old", "ref", "weights")}
    dirty_adv = torch.where(pad, torch.full_like(c["old"], garbage), c["adv"][:, None].expand_as(c["old"]))
    lb = leaf(torch.where(pad, torch.full_like(c["logp"], garbage), c["logp"]))
    adv_b = c["adv"] if name == "reg_grpo" else dirty_adv  # reg_grpo takes [N] advantages only
    out_b = LOSSES.get(name)(_full_batch(c, logp=lb, adv=adv_b, **dirty), **params)
    out_b.loss.backward()
    close(out_b.loss, out_a.loss.detach(), tol=1e-6)
    close(lb.grad, la.grad, tol=1e-6)
    assert (lb.grad[pad] == 0).all()


# ====================================================== gradient accumulation


def _grad_accum_check(
    name: str, params: dict, n: int, g: int, micro: int, global_counts: bool = True
) -> tuple[Tensor, Tensor]:
    c = random_case(21, n=n, t=5)
    lf, lm = leaf(c["logp"]), leaf(c["logp"])

    def batch(logp: Tensor, sl: slice) -> PolicyBatch:
        return PolicyBatch(
            logp=logp[sl], old_logp=c["old"][sl], ref_logp=c["ref"][sl], advantages=c["adv"][sl],
            mask=c["mask"][sl], token_weights=c["weights"][sl], group_size=g,
        )

    full = LOSSES.get(name)(batch(lf, slice(None)), **params).loss
    full.backward()
    counts = {"num_tokens": float(c["mask"].sum()), "num_seqs": float(n)} if global_counts else {}
    total = torch.tensor(0.0, dtype=torch.float64)
    for start in range(0, n, micro):
        loss = LOSSES.get(name)(batch(lm, slice(start, start + micro)), **params, **counts).loss
        loss.backward()  # gradients accumulate in lm.grad like in a training loop
        total = total + loss.detach()
    close(total, full.detach(), tol=1e-6)
    close(lm.grad, lf.grad, tol=1e-6)
    return total, full


@pytest.mark.parametrize(
    "name,params",
    [
        ("grpo", {"agg": "token-mean"}),
        ("grpo", {"agg": "seq-mean-token-mean"}),
        ("grpo", {"agg": "seq-mean-token-sum", "max_len": 5}),
        ("dapo", {}),
        ("dr_grpo", {"max_len": 5, "beta": 0.02}),
        ("gspo", {}),
        ("tw_grpo", {"beta": 0.02}),
        ],
)
def test_batch1_accum4_equals_batch4_accum1(name: str, params: dict) -> None:
    # 4 prompts x G = 2 completions; micro-batches of one prompt (2 sequences)
    _grad_accum_check(name, params, n=8, g=1, micro=2)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_reg_grpo_grad_accum_over_whole_groups(agg: str) -> None:
    _grad_accum_check("reg_grpo", {"agg": agg}, n=8, g=2, micro=2)


def test_grad_accum_needs_global_token_count() -> None:
    # without the global count each micro-batch normalises by its own tokens -> differs
    with pytest.raises(AssertionError):
        _grad_accum_check("dapo", {}, n=8, g=1, micro=2, global_counts=False)


# ================================================================ validation


def test_policy_batch_validation() -> None:
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="PolicyBatch.logp"):
        PolicyBatch(logp=torch.zeros(3), mask=torch.ones(3))
    with pytest.raises(ValueError, match="PolicyBatch.mask must have shape"):
        PolicyBatch(logp=z, mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="only 0 and 1"):
        PolicyBatch(logp=z, mask=torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="PolicyBatch.old_logp"):
        PolicyBatch(logp=z, mask=torch.ones(2, 3), old_logp=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="PolicyBatch.advantages"):
        PolicyBatch(logp=z, mask=torch.ones(2, 3), advantages=torch.zeros(3))
    with pytest.raises(ValueError, match="group_size"):
        PolicyBatch(logp=z, mask=torch.ones(2, 3), group_size=3)
    with pytest.raises(ValueError, match="needs PolicyBatch.advantages"):
        LOSSES.get("grpo")(PolicyBatch(logp=z, mask=torch.ones(2, 3)), beta=0.0)
    batch = PolicyBatch(logp=z, mask=torch.ones(2, 3), advantages=torch.zeros(2))
    with pytest.raises(ValueError, match="clip_low"):
        LOSSES.get("grpo")(batch, beta=0.0, clip_low=1.0)
    with pytest.raises(TypeError):
        LOSSES.get("grpo")(batch, beta=0.0, clip_eps=0.2)  # typo in a parameter name


def test_policy_batch_detaches_old_and_counts() -> None:
    old = leaf([[0.0, 1.0]])
    b = PolicyBatch(logp=torch.zeros(1, 2), mask=torch.tensor([[1.0, 0.0]]), old_logp=old)
    assert not b.old_logp.requires_grad  # type: ignore[union-attr]
    assert b.num_tokens == 1.0 and b.num_seqs == 1


def test_bf16_inputs_give_float32_loss() -> None:
    batch = PolicyBatch(
        logp=torch.zeros(2, 3, dtype=torch.bfloat16), mask=torch.ones(2, 3), advantages=torch.tensor([1.0, -1.0])
    )
    out = LOSSES.get("dapo")(batch)
    assert out.loss.dtype == torch.float32
    close(out.loss, 0.0)


def test_loss_registry() -> None:
    assert LOSSES.names() == ["dapo", "dr_grpo", "grpo", "gspo", "reg_grpo", "tw_grpo"]
    with pytest.raises(ValueError, match="already registered"):
        LOSSES.register("grpo")(lambda batch, **kw: None)
    with pytest.raises(KeyError, match="valid names: dapo, dr_grpo"):
        LOSSES.get("ppo")
    assert AGGREGATIONS.names() == ["seq-mean-token-mean", "seq-mean-token-sum", "token-mean"]


# ======================================================= TW-GRPO token weights


def _lp(probs: list[list[list[float]]]) -> Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()  # [G, T, V]


U3 = [1 / 3] * 3


def test_tw_weights_uniform_gives_ones() -> None:
    lp = torch.full((4, 6, 10), -math.log(10))  # every position uniform
    mask = torch.ones(4, 6)
    mask[2, 3:] = 0
    w = tw_grpo_weights(lp, mask, alpha=1.7)
    torch.testing.assert_close(w, torch.ones(4, 6))
    # identical (non-uniform) distributions across the group: s = 0 everywhere -> 1
    lp2 = torch.log_softmax(torch.randn(1, 6, 10, generator=torch.Generator().manual_seed(0)), -1).expand(4, 6, 10)
    torch.testing.assert_close(tw_grpo_weights(lp2, torch.ones(4, 6)), torch.ones(4, 6))


def test_tw_weights_hand_v3() -> None:
    # G = 2, T = 4, V = 3.
    # t0: [.5,.25,.25] vs [.25,.5,.25] -> d = +-ln2/2 -> s = sqrt2 + 1/sqrt2 - 2 = 0.1213203
    # t1: [.5,.25,.25] vs padding (uniform 1/3) -> s = 0.0413467 (offline python calculation)
    # t2: identical distributions -> s = 0 (the minimum)
    # t3: padding in both -> outside every completion -> w = 1
    lp = _lp([
        [[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [0.2, 0.3, 0.5], U3],
        [[0.25, 0.5, 0.25], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5], U3],
    ])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    w = tw_grpo_weights(lp, mask, alpha=1.7)  # the 0.9 row at seq 1, t1 is padding: replaced by uniform
    s0, s1 = math.sqrt(2) + 1 / math.sqrt(2) - 2, 0.04134666832334777
    w1 = 1 + 0.7 * s1 / (s0 + 1e-8)
    expected = [1.69999994230152, 1.238563991755224, 1.0, 1.0]
    assert w1 == pytest.approx(expected[1], rel=1e-12)
    close(w, [expected, expected], tol=1e-6)
    assert not w.requires_grad


def test_tw_weights_clamp_d_at_11() -> None:
    # V = 2: t0 rows [0, -30] / [-30, 0] -> d = +-15 clamped to +-11 -> s = e^11 + e^-11 - 2
    #        t1 rows [0, -13] / [-13, 0] -> d = +-6.5 -> s = e^6.5 + e^-6.5 - 2;  t2 equal -> s = 0
    lp = torch.tensor([[[0.0, -30.0], [0.0, -13.0], [0.0, -5.0]], [[-30.0, 0.0], [-13.0, 0.0], [0.0, -5.0]]])
    w = tw_grpo_weights(lp, torch.ones(2, 3), alpha=2.0)
    s_a = math.exp(11) + math.exp(-11) - 2
    s_b = math.exp(6.5) + math.exp(-6.5) - 2
    close(w[0], [2.0, 1 + s_b / s_a, 1.0], tol=1e-5)


def _slow_tw(lp: list, mask: list, alpha: float) -> list[list[float]]:
    """TW-GRPO weights for one group with python loops and the math module."""
    g, t, v = len(lp), len(lp[0]), len(lp[0][0])
    s, valid = [], []
    for j in range(t):
        rows = [lp[i][j] if mask[i][j] > 0 else [-math.log(v)] * v for i in range(g)]
        mean = [sum(r[k] for r in rows) / g for k in range(v)]
        tot = 0.0
        for r in rows:
            for k in range(v):
                d = max(-11.0, min(11.0, mean[k] - r[k]))
                tot += math.exp(d) - d - 1
        s.append(tot / g)
        valid.append(any(mask[i][j] > 0 for i in range(g)))
    lo = min(x for x, ok in zip(s, valid) if ok)
    hi = max(x for x, ok in zip(s, valid) if ok)
    w = [1 + (alpha - 1) * (x - lo) / (hi - lo + 1e-8) if ok else 1.0 for x, ok in zip(s, valid)]
    return [w for _ in range(g)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tw_weights_match_loop_and_chunked_logits(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    b, g, t, v = 2, 3, 7, 5
    logits = 2 * torch.randn(b * g, t, v, generator=gen, dtype=torch.float64)  # [N, T, V]
    lengths = torch.randint(1, t + 1, (b * g,), generator=gen)  # [N]
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()  # [N, T]
    mask[:g, -1] = 0  # group 0 has at least one position outside every completion
    lp = torch.log_softmax(logits, dim=-1)  # [N, T, V]
    w = tw_grpo_weights(lp, mask, alpha=1.7, group_size=g)  # [N, T]
    expected = []
    for k in range(b):
        sl = slice(k * g, (k + 1) * g)
        expected += _slow_tw(lp[sl].tolist(), mask[sl].tolist(), 1.7)
    close(w, expected, tol=1e-5)
    # per-group call gives the same as the batched call
    close(tw_grpo_weights(lp[:g], mask[:g], alpha=1.7), w[:g], tol=1e-6)
    # chunked computation from logits, in a low-precision dtype too
    for chunk in (1, 3, 64):
        close(tw_grpo_weights_from_logits(logits, mask, 1.7, group_size=g, chunk_size=chunk), w, tol=1e-5)
    w_bf16 = tw_grpo_weights_from_logits(logits.to(torch.bfloat16), mask, 1.7, group_size=g)
    assert torch.allclose(w_bf16.double(), w.double(), atol=0.05)


def test_tw_weights_temperature_and_validation() -> None:
    logits = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(4))
    mask = torch.ones(2, 4)
    close(
        tw_grpo_weights_from_logits(logits, mask, temperature=0.7),
        tw_grpo_weights(torch.log_softmax(logits / 0.7, -1), mask),
        tol=1e-5,
    )
    with pytest.raises(ValueError, match="mask must be"):
        tw_grpo_weights(torch.zeros(2, 4, 6), torch.ones(2, 3))
    with pytest.raises(ValueError, match="group_size"):
        tw_grpo_weights(torch.zeros(4, 4, 6), torch.ones(4, 4), group_size=3)


def test_tw_weights_feed_the_tw_grpo_loss() -> None:
    lp = torch.log_softmax(torch.randn(4, 5, 7, generator=torch.Generator().manual_seed(2)), -1)
    mask = torch.ones(4, 5)
    w = tw_grpo_weights(lp, mask, group_size=2)
    logp = leaf(torch.zeros(4, 5))
    batch = PolicyBatch(logp=logp, advantages=torch.tensor([1.0, -1.0, 0.5, -0.5]), mask=mask, token_weights=w)
    out = LOSSES.get("tw_grpo")(batch)
    out.loss.backward()
    # on-policy (ratio 1): d loss / d logp_it = -A_i * w_t / T / N
    expected = -torch.tensor([1.0, -1.0, 0.5, -0.5], dtype=torch.float64)[:, None] * w.double() / 5 / 4
    close(logp.grad, expected, tol=1e-6)


def test_advantage_weighted_losses_give_no_gradient_at_zero_advantage() -> None:
    """The trait the trainer's rl.skip_zero_advantage relies on, checked off the ratio 1 point too."""
    names = [n for n in LOSSES.names() if LOSSES.trait(n, "advantage_weighted", False)]
    assert set(names) == {"grpo", "dapo", "dr_grpo", "tw_grpo", "gspo"}
    c = random_case(0)
    t = c["mask"].shape[1]
    for name in names:
        logp = leaf(c["logp"])
        batch = PolicyBatch(logp=logp, old_logp=c["old"], advantages=torch.zeros(c["mask"].shape[0]),
                            mask=c["mask"], token_weights=c["weights"] if name == "tw_grpo" else None)
        LOSSES.get(name)(batch, beta=0.0, max_len=t).loss.backward()
        assert torch.equal(logp.grad, torch.zeros_like(logp)), name
    # reg_grpo is not one: off-policy, its regression target pulls the ratio back even at A = 0
    logp = leaf(c["logp"])
    batch = PolicyBatch(logp=logp, old_logp=c["old"], advantages=torch.zeros(c["mask"].shape[0]), mask=c["mask"],
                        group_size=2)
    LOSSES.get("reg_grpo")(batch, beta=0.0).loss.backward()
    assert logp.grad.abs().max() > 0
    assert LOSSES.trait("reg_grpo", "advantage_weighted", False) is False
