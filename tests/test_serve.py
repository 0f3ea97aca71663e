"""reelrl serve: streamed frames through the KV cache equal one fresh forward; the HTTP server end to end."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from reelrl.data.progress_prompt import PROGRESS_GOAL, PROGRESS_QUESTION, progress_messages, progress_target
from reelrl.models.load import load_model_and_processor
from reelrl.serve.answer import AnswerGrammar
from reelrl.serve.batcher import Batcher
from reelrl.serve.client import ProgressClient, ServeClientError
from reelrl.serve.critic import CriticLimits, ProgressCritic
from reelrl.serve.errors import CapacityError, UnknownEpisode
from reelrl.serve.server import BackgroundServer, ServeOptions, build_app

GOAL = "push the red block onto the green square"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from reelrl.models.tiny import build_tiny, default_corpus

    texts = list(default_corpus()) + [PROGRESS_GOAL.format(goal=GOAL), PROGRESS_QUESTION]
    texts += [progress_target(i / 20) for i in range(21)]
    return build_tiny(tmp_path_factory.mktemp("serve") / "model", texts, hidden_size=64, num_layers=2,
                      intermediate_size=128, vision_hidden=64, vision_depth=1, seed=0)


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_model_and_processor(model_dir)


def frames(n: int, h: int = 56, w: int = 56, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]  # [H, W, 3] each


# ----------------------------------------------------------------- prompt and answer
def test_prompt_pieces_tokenise_as_the_whole_conversation(loaded):
    _, proc = loaded
    critic = ProgressCritic(*loaded)
    p = critic.prompt
    assert p.image_tokens((56, 84, 3)) == 6  # (56/14) * (84/14) / 2**2
    sizes = [4, 6, 4]
    pieced = p.head_ids(GOAL) + [t for i, n in enumerate(sizes) for t in p.frame_ids(n, i == 0)] + p.tail_ids()
    whole = proc.tokenizer(p.full_text(GOAL, sizes), add_special_tokens=False)["input_ids"]
    assert pieced == whole
    text = proc.apply_chat_template(progress_messages(GOAL, 3), True)
    assert text.count("<|image_pad|>") == 3 and GOAL in text and PROGRESS_QUESTION in text
    assert proc.decode(p.tail_ids(), skip_special_tokens=False).endswith("<|im_start|>assistant\n<answer>")
    with pytest.raises(ValueError, match="goal: must not contain the special token"):
        p.head_ids("go <|image_pad|>")


def test_answer_grammar_allows_only_numbers_in_0_1(loaded):
    _, proc = loaded
    g = AnswerGrammar(proc.tokenizer, 10_000, decimals=2)
    d = {c: proc.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in "0123456789."}
    digits = {d[c] for c in "0123456789"}
    assert set(g.allowed("")) == {d["0"], d["1"]}
    assert set(g.allowed("0")) == {d["."], g.end_id} == set(g.allowed("1"))
    assert set(g.allowed("0.")) == digits  # a digit must follow the point
    assert set(g.allowed("1.")) == {d["0"]}  # nothing above 1
    assert set(g.allowed("0.4")) == digits | {g.end_id}
    assert set(g.allowed("1.0")) == {d["0"], g.end_id}
    assert g.allowed("0.42") == [] and g.max_tokens() == 5
    assert proc.tokenizer("</answer>", add_special_tokens=False)["input_ids"][0] == g.end_id


# ----------------------------------------------------------------- cache equivalence
def _reference(model, critic: ProgressCritic, ep, pixels: list[torch.Tensor], grids: list[torch.Tensor],
               answer: str) -> tuple[list[float], list[int]]:
    """One fresh forward over goal + frames + question + answer (the model builds its own 3D RoPE positions):
    the log-probs of the answer's tokens and the grammar-bound greedy tokens at each answer position."""
    g = critic.grammar
    answer_ids = [g.char_id[c] for c in answer]
    context = ep.ids + critic.prompt.tail_ids()
    ids = torch.tensor([context + answer_ids])  # [1, L]
    types = (ids == critic.prompt.image_id).int()  # [1, L]
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.cat(pixels),
                    image_grid_thw=torch.cat(grids), mm_token_type_ids=types, use_cache=False)
    lp = torch.log_softmax(out.logits[0, len(context) - 1:].float(), -1)  # [A+1, V]
    chosen = answer_ids + ([g.end_id] if g.allowed(answer) else [])
    greedy, text = [], ""
    for k in range(len(chosen)):
        tok = int(lp[k].masked_fill(~g.mask(text, lp.device), float("-inf")).argmax())
        greedy.append(tok)
        text += g.id_char.get(tok, "")
    return [float(lp[k, t]) for k, t in enumerate(chosen)], greedy


def test_streamed_frames_equal_one_fresh_forward_over_the_whole_conversation(loaded):
    """Two episodes streamed in shared batches (different lengths and frame sizes, one joining later):
    every answer's log-probs equal those of one fresh forward over its whole conversation to 1e-5, the
    greedy answer is the reference's, the cached KV equals a fresh prefill's, and the no-cache baseline agrees."""
    model, _ = loaded
    critic = ProgressCritic(*loaded)
    baseline = ProgressCritic(*loaded, reuse_context=False)
    a, b = critic.open(GOAL), critic.open("open the drawer")
    a0, b0 = baseline.open(GOAL), baseline.open("open the drawer")
    fa, fb = frames(4, seed=1), frames(2, 84, 56, seed=2)
    seen: dict[str, tuple[list, list]] = {a.id: ([], []), b.id: ([], [])}
    schedule = [[(a, fa[0], a0)], [(a, fa[1], a0), (b, fb[0], b0)], [(b, fb[1], b0), (a, fa[2], a0)],
                [(a, fa[3], a0)]]
    for step in schedule:
        results = critic.add_frames([(ep.id, f) for ep, f, _ in step])
        base = baseline.add_frames([(ep0.id, f) for _, f, ep0 in step])
        for (ep, f, _), r, r0 in zip(step, results, base):
            pv, grid = critic.prompt.patchify(f)
            seen[ep.id][0].append(pv)
            seen[ep.id][1].append(grid)
            ref_lp, greedy = _reference(model, critic, ep, *seen[ep.id], r.answer)
            assert r.batch_size == len(step)
            assert 0.0 <= r.progress <= 1.0 and r.progress == float(r.answer)
            assert greedy[: len(r.answer)] == [critic.grammar.char_id[c] for c in r.answer]
            torch.testing.assert_close(torch.tensor(r.logprobs), torch.tensor(ref_lp), atol=1e-5, rtol=0)
            assert r0.answer == r.answer
            torch.testing.assert_close(torch.tensor(r0.logprobs), torch.tensor(r.logprobs), atol=1e-5, rtol=0)
    # the context holds goal + frames only (the question was cropped away), hand-counted
    assert len(a.ids) == len(a.head) + 4 * (2 + 4) and len(b.ids) == len(b.head) + 2 * (2 + 6)
    assert a.progress == [float(x) for x in a0.progress] and len(a.progress) == 4
    # the cached keys/values equal a fresh prefill of the same context (the model's own positions)
    ids = torch.tensor([a.ids])  # [1, K]
    with torch.no_grad():
        fresh = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.cat(seen[a.id][0]),
                      image_grid_thw=torch.cat(seen[a.id][1]), mm_token_type_ids=(ids == critic.prompt.image_id).int(),
                      use_cache=True).cache
    assert a.cache.get_seq_length() == len(a.ids)
    for mine, ref in zip(a.cache.layers, fresh.layers):
        torch.testing.assert_close(mine.keys, ref.keys, atol=1e-5, rtol=0)
        torch.testing.assert_close(mine.values, ref.values, atol=1e-5, rtol=0)


def test_eviction_of_idle_episodes_and_refusals(loaded):
    critic = ProgressCritic(*loaded, limits=CriticLimits(max_episodes=1, evict_idle_s=0.0, max_frames=1))
    old = critic.open(GOAL)
    new = critic.open(GOAL)  # full: the idle one goes
    with pytest.raises(UnknownEpisode, match="evicted"):
        critic.get(old.id)
    [r] = critic.add_frames([(new.id, frames(1)[0])])
    [refused] = critic.add_frames([(new.id, frames(1)[0])])
    assert "max_frames" in refused.message and refused.status == 409
    busy = ProgressCritic(*loaded, limits=CriticLimits(max_episodes=1, evict_idle_s=3600))
    busy.open(GOAL)
    with pytest.raises(CapacityError, match="max_episodes"):
        busy.open(GOAL)


def test_batcher_batches_distinct_episodes_and_keeps_an_episode_in_order(loaded):
    critic = ProgressCritic(*loaded)
    a, b = critic.open(GOAL), critic.open(GOAL)
    f = frames(3)
    batcher = Batcher(critic, max_batch=8, max_wait_s=0.0)

    async def go():
        tasks = [asyncio.create_task(batcher.submit(eid, fr)) for eid, fr in ((a.id, f[0]), (b.id, f[1]), (a.id, f[2]))]
        await asyncio.sleep(0.05)  # all three queued before the worker starts
        batcher.start()
        return await asyncio.gather(*tasks)

    try:
        r = asyncio.run(go())
    finally:
        batcher.stop()
    assert [x.batch_size for x in r] == [2, 2, 1]  # a's second frame waits for the next batch
    assert [(x.episode_id, x.t) for x in r] == [(a.id, 0), (b.id, 0), (a.id, 1)]
    assert batcher.stats == {"batches": 2, "frames": 3, "max_batch_seen": 2, "errors": 0}


# ----------------------------------------------------------------- HTTP end to end
@pytest.fixture(scope="module")
def server(model_dir):
    opts = ServeOptions(limits=CriticLimits(max_episodes=2, evict_idle_s=3600, max_frames=3, max_pixels=84 * 84),
                        max_body_bytes=64 << 10, max_wait_s=0.0)
    srv = BackgroundServer(build_app(model_dir, opts)).start()
    yield srv
    srv.stop()


def _frame_body(f: np.ndarray, **over) -> dict:
    body = {"shape": list(f.shape), "dtype": str(f.dtype), "data": base64.b64encode(f.tobytes()).decode()}
    return {**body, **over}


def test_http_stream_health_bad_inputs_and_still_serving(server, loaded):
    client = ProgressClient(server.url)
    h = client.health()
    assert h["status"] == "ok" and h["episodes"] == 0 and h["max_episodes"] == 2
    local = ProgressCritic(*loaded)
    ref = local.open(GOAL)
    fs = frames(3, seed=5)
    expected = [r.progress for fr in fs for r in local.add_frames([(ref.id, fr)])]
    with client.episode(GOAL) as ep:
        streamed = [ep.add_frame(fr) for fr in fs]
        assert streamed == expected  # same answers as the critic in-process
        assert ep.last["t"] == 2 and ep.last["context_tokens"] == len(ref.head) + 3 * 6
        assert ep.progress() == streamed
        http = httpx.Client(base_url=server.url)
        url = f"/episodes/{ep.id}/frames"
        f = frames(1)[0]

        def refused(status: int, needle: str, resp: httpx.Response) -> None:
            assert resp.status_code == status, resp.text
            assert needle in resp.json()["error"], resp.json()

        refused(409, "max_frames", http.post(url, json=_frame_body(f)))
        other = client.episode(GOAL)
        url2 = f"/episodes/{other.id}/frames"
        refused(400, "malformed JSON", http.post(url2, content=b'{"shape": [56,', headers={"content-type": "application/json"}))
        refused(422, "dtype", http.post(url2, json=_frame_body(f.astype(np.float32))))
        refused(422, "shape", http.post(url2, json=_frame_body(np.zeros((56, 56, 4), np.uint8))))
        refused(422, "multiple of 28", http.post(url2, json=_frame_body(np.zeros((56, 50, 3), np.uint8))))
        refused(422, "pixels", http.post(url2, json=_frame_body(np.zeros((112, 84, 3), np.uint8))))
        refused(422, "data: 12 bytes", http.post(url2, json=_frame_body(f, data=base64.b64encode(b"x" * 12).decode())))
        refused(422, "data: not valid base64", http.post(url2, json=_frame_body(f, data="@@@")))
        refused(422, "data: Field required", http.post(url2, json={"shape": [56, 56, 3], "dtype": "uint8"}))
        refused(413, "max_body_bytes", http.post(url2, json=_frame_body(np.zeros((150, 150, 3), np.uint8))))
        refused(404, "episode_id", http.post("/episodes/nope/frames", json=_frame_body(f)))
        refused(404, "episode_id", http.get("/episodes/nope"))
        refused(422, "goal: Field required", http.post("/episodes", json={}))
        refused(429, "max_episodes", http.post("/episodes", json={"goal": GOAL}))
        refused(404, "GET /nowhere", http.get("/nowhere"))
        with pytest.raises(ServeClientError, match="HTTP 429"):
            client.episode(GOAL)
        # still serving: the refused requests changed nothing
        assert other.add_frame(f) == pytest.approx(other.progress()[0]) and other.last["t"] == 0
        assert client.health()["episodes"] == 2
        assert other.close() == [other.last["progress"]]
    assert client.health()["episodes"] == 0  # both closed (the context managers)


def test_concurrent_episodes_share_batches_and_shutdown_stops_serving(model_dir):
    import threading

    srv = BackgroundServer(build_app(model_dir, ServeOptions(max_wait_s=0.02))).start()
    out: dict[int, list[float]] = {}

    def stream(i: int) -> None:
        with ProgressClient(srv.url) as c, c.episode(GOAL) as ep:
            out[i] = [ep.add_frame(fr) for fr in frames(3, seed=10 + i)]

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    h = ProgressClient(srv.url).health()
    assert sorted(out) == [0, 1, 2, 3] and all(len(v) == 3 for v in out.values())
    assert h["frames"] == 12 and h["max_batch_seen"] >= 2  # concurrent episodes ran in shared forwards
    srv.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url + "/health", timeout=2)


def test_cli_serve_starts_and_answers_health(model_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "reelrl", "serve", str(model_dir), "--port", str(port),
                             "--max-episodes", "3", "--threads", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, health = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health is not None, proc.stdout.read().decode() if proc.poll() is not None else "no answer"
        assert health["status"] == "ok" and health["max_episodes"] == 3 and health["reuse_context"] is True
    finally:
        proc.terminate()
        proc.wait(30)
