"""Rollout and log-prob equivalences: forked KV cache vs per-sequence, cached vision vs recomputed."""

from __future__ import annotations

import pytest
import torch

from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import load_jsonl
from reelrl.models.load import load_model_and_processor
from reelrl.models.vlm import VLM, token_logprobs
from reelrl.rollout.hf import (
    Prefill,
    SamplingParams,
    StopStrings,
    _filter_top_p,
    decode_groups,
    make_generators,
    prefill_group,
)
from reelrl.video.sample import VideoSampling
from tests.engine_for_tests import generate_group


@pytest.fixture(scope="module")
def setup(tiny_gym, tiny_model_dir):
    model, processor = load_model_and_processor(tiny_model_dir)
    vlm = VLM(model)
    enc = PromptEncoder(processor, VideoSampling(nframes=16, min_pixels=3136, max_pixels=3136), "{question}")
    rows = load_jsonl(tiny_gym / "train.jsonl")
    return vlm, processor, enc, rows


def _params(processor, **kw) -> SamplingParams:
    tok = processor.tokenizer
    return SamplingParams(eos_ids=(tok.eos_token_id,), pad_id=tok.pad_token_id, **kw)


def test_greedy_group_equals_per_sequence_and_hf_generate(setup):
    vlm, processor, enc, rows = setup
    prompt = enc.encode(rows[0])
    params = _params(processor, max_new_tokens=12, temperature=0.0)
    group = generate_group(vlm, prompt, 4, params)
    single = generate_group(vlm, prompt, 1, params)
    for i in range(4):  # every forked sequence equals the unforked greedy one
        assert torch.equal(group.tokens[i, : group.lengths[i]], single.tokens[0, : single.lengths[0]])
    # and transformers' own generate (full prompt, pixels, its own position ids) agrees token for token
    inputs = {"input_ids": prompt.input_ids, "attention_mask": torch.ones_like(prompt.input_ids),
              "mm_token_type_ids": prompt.mm_token_type_ids, **prompt.vision_inputs}
    ref = vlm.model.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=params.eos_ids[0],
                             pad_token_id=params.pad_id)
    ref_new = ref[0, prompt.length :]
    n = int(single.lengths[0])
    assert torch.equal(single.tokens[0, :n], ref_new[:n])


def test_sampled_group_equals_per_sequence_with_same_generators(setup):
    vlm, processor, enc, rows = setup
    prompt = enc.encode(rows[1])
    params = _params(processor, max_new_tokens=10, temperature=1.0, top_p=0.9)
    group = generate_group(vlm, prompt, 5, params, make_generators(123, 5))
    for i, gen in enumerate(make_generators(123, 5)):
        one = generate_group(vlm, prompt, 1, params, [gen])
        n = int(group.lengths[i])
        assert int(one.lengths[0]) == n
        assert torch.equal(group.tokens[i, :n], one.tokens[0, :n])
    # different generators give different samples (the test above could otherwise pass trivially)
    other = generate_group(vlm, prompt, 5, params, make_generators(124, 5))
    assert not torch.equal(other.tokens, group.tokens)


def test_stop_sequence_ends_completion_and_mask(setup):
    vlm, processor, enc, rows = setup
    prompt = enc.encode(rows[2])
    free = generate_group(vlm, prompt, 1, _params(processor, max_new_tokens=8, temperature=0.0))
    assert int(free.lengths[0]) == 8 and bool(free.truncated[0])
    stop = tuple(free.tokens[0, 2:4].tolist())  # the greedy 3rd and 4th tokens as a stop sequence
    cut = generate_group(vlm, prompt, 2, _params(processor, max_new_tokens=8, temperature=0.0, stop_seqs=(stop,)))
    seq = free.tokens[0].tolist()
    expected = next(k for k in range(2, 9) if tuple(seq[k - 2 : k]) == stop)  # first place the stop completes
    assert cut.lengths.tolist() == [expected, expected]
    assert cut.mask.tolist() == [[1.0] * expected] * 2
    assert cut.tokens[0, :expected].tolist() == seq[:expected]
    assert not bool(cut.truncated.any())


def test_top_p_keeps_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = _filter_top_p(probs, 0.75)
    assert torch.allclose(out, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))


def test_cached_vision_and_shared_prefix_logprobs_equal_recomputed(setup):
    vlm, processor, enc, rows = setup
    prompt = enc.encode(rows[3])
    gens = make_generators(0, 3)
    ro = generate_group(vlm, prompt, 3, _params(processor, max_new_tokens=7, temperature=1.0), gens)
    with torch.no_grad():
        vision = vlm.encode_vision(prompt)
        fast = token_logprobs(vlm.completion_logits(prompt, ro.tokens, vision, share_prefix=True), ro.tokens)
        naive = token_logprobs(vlm.completion_logits(prompt, ro.tokens, None, share_prefix=False), ro.tokens)
        mixed = token_logprobs(vlm.completion_logits(prompt, ro.tokens, vision, share_prefix=False), ro.tokens)
    assert fast.shape == ro.tokens.shape
    assert torch.allclose(fast, naive, atol=1e-5)
    assert torch.allclose(mixed, naive, atol=1e-5)


def test_gradients_through_shared_prefix_equal_full_forward(setup):
    vlm, processor, enc, rows = setup
    prompt = enc.encode(rows[4])
    ro = generate_group(vlm, prompt, 3, _params(processor, max_new_tokens=5, temperature=1.0), make_generators(5, 3))
    grads = []
    for share in (True, False):
        vlm.model.zero_grad()
        vision = vlm.encode_vision(prompt)  # with gradient: the vision tower trains here
        logp = token_logprobs(vlm.completion_logits(prompt, ro.tokens, vision, share_prefix=share), ro.tokens)
        (logp * ro.mask).sum().backward()
        grads.append({n: p.grad.clone() for n, p in vlm.model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert any("visual" in n for n in grads[0])  # the vision tower received gradient through the cache
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4), n
    vlm.model.zero_grad()


def test_gradient_checkpointing_never_drops_the_shared_prefix(tiny_model_dir, setup):
    """Checkpointed layers drop the KV cache in training mode with gradients on (transformers' rule), so the
    shared-prefix paths must score full sequences there: same logits and gradients as without checkpointing."""
    _, processor, enc, rows = setup
    model, _ = load_model_and_processor(tiny_model_dir)
    vlm = VLM(model)
    prompts = [enc.encode(rows[6]), enc.encode(rows[7])]
    tokens = [torch.randint(0, 200, (3, 5), generator=torch.Generator().manual_seed(k)) for k in range(2)]  # [G, T]
    results = []
    for checkpointing in (False, True):
        if checkpointing:
            model.activation_checkpointing_enable()
        model.train()
        assert vlm.keeps_cache() is not checkpointing
        model.zero_grad()
        one = vlm.completion_logits(prompts[0], tokens[0])  # [G, T, V]
        many = vlm.completion_logits_many(prompts, tokens)
        loss = sum(token_logprobs(lg, t).sum() for lg, t in zip([one, *many], [tokens[0], *tokens]))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append(([one.detach(), *(m.detach() for m in many)], grads))
        with torch.no_grad():  # without gradients the cache is kept (rollouts, reference passes)
            assert vlm.keeps_cache()
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    for n in results[0][1]:
        torch.testing.assert_close(results[0][1][n], results[1][1][n], atol=1e-5, rtol=1e-4)


def test_temporal_rope_input_reaches_every_pass(setup):
    vlm, processor, enc, rows = setup
    prompt = enc.encode(rows[5])
    tokens = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        base = vlm.completion_logits(prompt, tokens)
        slow = type(prompt)(key="slow", input_ids=prompt.input_ids, mm_token_type_ids=prompt.mm_token_type_ids,
                            vision_inputs={**prompt.vision_inputs,
                                           "second_per_grid_ts": prompt.vision_inputs["second_per_grid_ts"] * 4})
        changed = vlm.completion_logits(slow, tokens)
    pos_a, _ = vlm.positions(prompt)
    pos_b, _ = vlm.positions(slow)
    assert not torch.equal(pos_a[0], pos_b[0])  # temporal positions follow second_per_grid_ts
    assert not torch.allclose(base, changed)


def test_naive_rollout_without_shared_prefix_gives_same_tokens(setup):
    vlm, processor, enc, rows = setup
    prompt = enc.encode(rows[6])
    greedy = _params(processor, max_new_tokens=8, temperature=0.0)
    fork = generate_group(vlm, prompt, 3, greedy)
    calls = []
    real = vlm.core.get_video_features
    vlm.core.get_video_features = lambda pv, grid, **kw: calls.append(int(grid.shape[0])) or real(pv, grid, **kw)
    try:
        naive = generate_group(vlm, prompt, 3, greedy, share_prefix=False)  # video re-encoded for each copy
    finally:
        del vlm.core.get_video_features
    assert calls == [3]  # one vision call over 3 copies of the video
    assert torch.equal(naive.tokens, fork.tokens) and torch.equal(naive.lengths, fork.lengths)
    params = _params(processor, max_new_tokens=8, temperature=1.0)
    a = generate_group(vlm, prompt, 4, params, make_generators(9, 4))
    b = generate_group(vlm, prompt, 4, params, make_generators(9, 4), share_prefix=False)
    assert torch.equal(a.tokens, b.tokens)


def test_suppressed_ids_are_never_sampled(setup):
    vlm, processor, enc, rows = setup
    prompt = enc.encode(rows[7])
    free = generate_group(vlm, prompt, 2, _params(processor, max_new_tokens=6, temperature=0.0))
    banned = tuple(sorted(set(free.tokens[0].tolist())))  # every token the greedy completion used
    out = generate_group(vlm, prompt, 4, _params(processor, max_new_tokens=6, temperature=1.0, suppress_ids=banned),
                         make_generators(3, 4))
    assert not torch.isin(out.tokens[out.mask.bool()], torch.tensor(banned)).any()
    from reelrl.train.policy import _vision_token_ids

    assert vlm.model.config.video_token_id in _vision_token_ids(vlm)


def test_suppression_samples_the_masked_distribution_and_keeps_other_draws():
    from reelrl.rollout.hf import sample_next

    probs = torch.tensor([0.1, 0.4, 0.2, 0.3])  # token 1 is banned -> masked distribution [1/6, 0, 1/3, 1/2]
    logits = probs.log().expand(20000, -1)  # [N, 4]
    plain, banned = SamplingParams(), SamplingParams(suppress_ids=(1,))
    torch.manual_seed(0)
    free = sample_next(logits, plain, None)  # [N]
    torch.manual_seed(0)
    masked = sample_next(logits, banned, None)  # [N]
    assert not bool((masked == 1).any())
    freq = torch.bincount(masked, minlength=4).float() / len(masked)
    assert torch.allclose(freq, torch.tensor([1 / 6, 0.0, 1 / 3, 1 / 2]), atol=0.015), freq
    kept = free != 1
    assert torch.equal(masked[kept], free[kept])  # rows that drew an allowed token drew the same one
    greedy = sample_next(logits[:2], SamplingParams(temperature=0.0, suppress_ids=(1,)), None)
    assert greedy.tolist() == [3, 3]


@pytest.mark.parametrize("share_prefix", [True, False])
def test_prompts_of_different_lengths_decode_together_as_alone(setup, share_prefix):
    """One decode batch over several prompts (left-padded caches) gives each prompt's own rollout."""
    vlm, processor, enc, rows = setup
    prompts = [enc.encode(r) for r in rows[:4]]
    assert len({p.length for p in prompts}) > 1  # the padding path is exercised
    ns = [3, 1, 4, 2]
    for temperature in (0.0, 1.0):
        params = _params(processor, max_new_tokens=10, temperature=temperature)
        gens = [make_generators(40 + i, n) for i, n in enumerate(ns)]
        vision = [vlm.encode_vision(p) for p in prompts]
        together = decode_groups(vlm, [prefill_group(vlm, p, n, v, share_prefix)
                                       for p, n, v in zip(prompts, ns, vision)], params, gens)
        for i, (p, n, v) in enumerate(zip(prompts, ns, vision)):
            alone = generate_group(vlm, p, n, params, make_generators(40 + i, n), v)
            assert torch.equal(together[i].lengths, alone.lengths)
            assert torch.equal(together[i].tokens, alone.tokens)
            assert torch.equal(together[i].truncated, alone.truncated)
    assert any(int(r.lengths.min()) != int(r.lengths.max()) or r.truncated.any() for r in together)
    with pytest.raises(ValueError, match="every prompt or for none"):
        decode_groups(vlm, [prefill_group(vlm, p, 1) for p in prompts[:2]], params, [None, make_generators(0, 1)])


def test_many_prompt_logprobs_and_gradients_equal_one_prompt_passes(setup):
    """Prompts of different lengths, group sizes and completion widths in one left-padded update pass."""
    vlm, processor, enc, rows = setup
    by_len = {}
    for r in rows:
        p = enc.encode(r)
        by_len.setdefault(p.length, p)
    prompts = list(by_len.values())[:3]
    assert len({p.length for p in prompts}) == 3  # the padding is exercised
    params = _params(processor, max_new_tokens=6, temperature=1.0)
    comps = [generate_group(vlm, p, n, params, make_generators(40 + n, n)).tokens for p, n in zip(prompts, (3, 2, 4))]
    comps[1] = comps[1][:, :2]  # a narrower completion block than the others
    masks = [torch.rand(c.shape, generator=torch.Generator().manual_seed(i)) for i, c in enumerate(comps)]
    results = []
    for many in (True, False):
        vlm.model.zero_grad()
        visions = [vlm.encode_vision(p) for p in prompts]  # with gradient: the vision tower trains here
        if many:
            logits = vlm.completion_logits_many(prompts, comps, visions)
        else:
            logits = [vlm.completion_logits(p, c, v) for p, c, v in zip(prompts, comps, visions)]
        logps = [token_logprobs(lg, c) for lg, c in zip(logits, comps)]  # [G_i, T_i]
        sum((lp * m).sum() for lp, m in zip(logps, masks)).backward()
        grads = {n: p.grad.clone() for n, p in vlm.model.named_parameters() if p.grad is not None}
        results.append(([lp.detach() for lp in logps], grads))
    (many_lp, many_g), (one_lp, one_g) = results
    for a, b in zip(many_lp, one_lp):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5)
    assert many_g.keys() == one_g.keys() and any("visual" in n for n in many_g)
    for n in many_g:
        assert torch.allclose(many_g[n], one_g[n], atol=1e-5, rtol=1e-4), n
    with torch.no_grad():  # pixels instead of cached embeddings take the same path
        pix = vlm.completion_logits_many(prompts, comps, None)
    for a, c, b in zip(pix, comps, many_lp):
        assert torch.allclose(token_logprobs(a, c), b, atol=1e-5)
    vlm.model.zero_grad()


class _ScriptedVLM:
    """Emits a fixed token script (greedy over one-hot logits): enough of the VLM interface for decode_groups."""

    def __init__(self, script: list[int], vocab: int) -> None:
        self.script, self.vocab, self.t = script, vocab, 0

    def logits(self, n: int) -> torch.Tensor:
        out = torch.zeros(n, self.vocab)  # [N, V]
        out[:, self.script[min(self.t, len(self.script) - 1)]] = 1.0
        self.t += 1
        return out

    def stack_prefills(self, prompts, caches, counts):
        n = sum(counts)
        return None, torch.ones(n, 1, dtype=torch.long), torch.zeros(n, dtype=torch.long)

    def decode_step(self, tokens, cache, positions, mask):
        return self.logits(tokens.shape[0]).unsqueeze(1)  # [N, 1, V]


@pytest.mark.parametrize("text,stop_at", [
    ("ok </answer> more", "ok </answer>"),  # the string spelled one character per token
    ("x</answer>\nmore", "x</answer>"),
    ("<answer>B</answ", None),  # never completed: runs to max_new_tokens
])
def test_stop_strings_match_decoded_text_of_any_tokenization(setup, text, stop_at):
    _, processor, _, _ = setup
    tok = processor.tokenizer
    script = [tok.encode(ch, add_special_tokens=False)[0] for ch in text]  # one token per character
    assert tok.decode(script) == text and len(script) > len(tok.encode(text, add_special_tokens=False))
    vlm = _ScriptedVLM(script, len(tok))
    params = SamplingParams(max_new_tokens=len(script) - 2, temperature=0.0, eos_ids=(tok.eos_token_id,),
                            pad_id=tok.pad_token_id, stop_strings=StopStrings(tok, ["</answer>"]))
    prefill = Prefill(prompt=None, n=2, logits=vlm.logits(2), cache=None)
    (ro,) = decode_groups(vlm, [prefill], params)
    n = len(stop_at) if stop_at else len(script) - 2
    assert ro.lengths.tolist() == [n, n]
    assert tok.decode(ro.tokens[0, :n].tolist()) == (stop_at or text[:n])
    assert ro.truncated.tolist() == [stop_at is None] * 2
