"""Clue traces (Video-Thinker): events read off the gym's pixels, clue parsing, the clue rewards, SFT targets."""

from __future__ import annotations

import re

import numpy as np
import pytest

from reelrl.config import ConfigError, config_from_dict
from reelrl.data.schema import VideoRow
from reelrl.data.templates import get_template
from reelrl.gym import GymSpec
from reelrl.gym.clues import EVENTS, TRACES, ClueError, clue_trace, events_of, row_clues
from reelrl.gym.generate import make_sample, sample_row
from reelrl.gym.tasks import TASKS
from reelrl.rewards import REWARDS
from reelrl.rewards.clues import clue_score, gold_spans, has_clue_format, parse_clues
from reelrl.rewards.functions import tiou
from tests.gym_pixels import color_masks

BUILT_IN = ["count", "order", "direction", "color_change", "multi_select", "progress", "temporal_grounding"]


def _gym_row(family: str, index: int, **spec) -> tuple[VideoRow, np.ndarray]:
    s = GymSpec(**{"families": [family], "frames": 32, "difficulty": 0.3, **spec})
    fam, sample = make_sample(s, "train", index)
    return sample_row(s, "train", index, fam, sample, f"{fam}.mp4"), sample.frames  # frames [T, H, W, 3]


def _frames_of(ev, fps: float) -> range:
    """Frame indices ``[start, end)`` of an event in seconds (the gym's times are exact multiples of 1 / fps)."""
    return range(round(ev.start * fps), round(ev.end * fps))


def _visible(frames: np.ndarray, color: str, min_pixels: int = 20) -> np.ndarray:
    """Per frame: at least ``min_pixels`` pixels of ``color`` -> bool[T]."""
    return color_masks(frames)[color].sum(axis=(1, 2)) >= min_pixels  # [T]


def _caption_color(caption: str) -> str:
    from reelrl.gym.render import COLOR_NAMES

    words = [c for c in COLOR_NAMES if re.search(rf"\b{c}\b", caption)]
    assert len(words) == 1, caption
    return words[0]


# ------------------------------------------------------------------ events against the rendered frames


@pytest.mark.parametrize("family", ["count", "order", "multi_select", "progress", "temporal_grounding"])
@pytest.mark.parametrize("frames_per_step", [1, 2])
def test_a_flash_event_shows_its_colour_exactly_during_its_span(family: str, frames_per_step: int) -> None:
    for index in range(6):
        row, frames = _gym_row(family, index, frames_per_step=frames_per_step)
        fps, T = row.meta["fps"], frames.shape[0]
        clues = row_clues(row)
        assert clues.events and clues.conclusion
        for ev in clues.events:
            seen = _visible(frames, _caption_color(ev.caption))  # [T]
            span = _frames_of(ev, fps)
            assert len(span) >= 1 and span.stop <= T
            assert seen[span.start : span.stop].all(), (family, index, ev)
            for outside in (span.start - 1, span.stop):  # the object is gone just before and just after
                if 0 <= outside < T:
                    assert not seen[outside], (family, index, ev, outside)


def test_color_change_phases_and_direction_positions_match_the_pixels() -> None:
    for index in range(4):
        row, frames = _gym_row("color_change", index)
        before, after = row_clues(row).events
        y, x, s = row.meta["box"]
        centre = frames[:, y + s // 2, x + s // 2]  # [T, 3]
        a, b = _caption_color(before.caption), _caption_color(after.caption)
        masks = color_masks(centre[:, None, None, :])
        assert masks[a][_frames_of(before, 4.0)].all() and not masks[a][_frames_of(after, 4.0)].any()
        assert masks[b][_frames_of(after, 4.0)].all() and not masks[b][_frames_of(before, 4.0)].any()
        assert before.start == 0 and after.end == frames.shape[0] / 4.0 and before.end == after.start

        row, frames = _gym_row("direction", index)
        (ev,) = row_clues(row).events
        color = _caption_color(ev.caption)
        assert (ev.start, ev.end) == (0.0, frames.shape[0] / 4.0)
        (x0, y0), (x1, y1) = [tuple(map(int, p)) for p in re.findall(r"x=(\d+),y=(\d+)", ev.caption)]
        for t, (cx, cy) in ((0, (x0, y0)), (frames.shape[0] - 1, (x1, y1))):
            ys, xs = np.nonzero(color_masks(frames[t])[color])  # the ball's pixels
            assert abs(xs.mean() - cx) <= 1.0 and abs(ys.mean() - cy) <= 1.0, (index, t, ev.caption)


def test_every_built_in_family_has_an_extractor_and_a_new_family_without_one_is_refused(monkeypatch) -> None:
    assert set(BUILT_IN) <= set(EVENTS.names())
    row, _ = _gym_row("count", 0)
    monkeypatch.delitem(EVENTS._items, "count")  # as a family registered later, without an extractor
    assert "count" in TASKS
    with pytest.raises(ClueError, match=r"row train-count-000000: gym family 'count' has no event extractor.*"
                                         r"EVENTS.register\('count'\)"):
        row_clues(row)
    with pytest.raises(ClueError, match="has no event extractor"):  # the reward does not fall back to time_span
        REWARDS.get("clue")(["<time>1-2</time>"], **{k: [v] for k, v in row.model_dump().items()})


def test_events_follow_the_environment_and_meta_events_take_precedence() -> None:
    row, _ = _gym_row("temporal_grounding", 1, environment="noise_shapes")
    (ev,) = row_clues(row).events
    assert re.search(r"\b(diamond|triangle)\b", ev.caption) and not re.search(r"\b(square|disc)\b", ev.caption)
    assert ev.caption.split()[-2] in row.question  # the same shape word as the question
    own = VideoRow(id="x", video="v.mp4", question="q", answer="a", problem_type="free_form",
                   meta={"events": [{"start": 1, "end": 2.5, "caption": "a man opens a door"}], "conclusion": "ok."})
    assert clue_trace(row_clues(own)) == "<time>1-2.5</time> <caption>a man opens a door</caption> <think></think>\nok."
    for bad, msg in (([{"start": 2, "end": 1, "caption": "c"}], r"meta.events\[0\]: start 2.0 is after end 1.0"),
                     ([{"start": 1, "end": 1, "caption": "c"}], "end 1.0 is not after start 1.0"),
                     ([{"start": 1, "caption": "c"}], r"meta.events\[0\]: needs start, end"), ([], "non-empty")):
        with pytest.raises(ClueError, match=rf"row x: .*{msg}"):
            events_of("x", "free_form", {"events": bad})
    with pytest.raises(ClueError, match="row y: no clue events"):
        row_clues(own.model_copy(update={"id": "y", "meta": {}}))


# ------------------------------------------------------------------ SFT targets


COUNT_ROW = VideoRow(
    id="c1", video="v.mp4", question="How many times does the square flash?", options=["1", "2", "3", "4"],
    answer="B", problem_type="multiple_choice", task="count", reasoning="flashes at 0.25s, 1.25s. 2 flashes.",
    meta={"fps": 4.0, "frames": 16, "k": 2, "starts": [1, 5], "lengths": [2, 1], "color": "red", "box": [3, 3, 20]},
)


def test_the_sft_target_of_a_row_in_both_layouts() -> None:
    vt, default = get_template("video_thinker"), get_template("reelrl")
    blocks = TRACES.get("clues")(COUNT_ROW, vt.wrap_think)
    assert vt.target(blocks, COUNT_ROW.answer) == (
        "<time>0.25-0.75</time> <caption>the red square is shown</caption> <think>flash 1.</think>\n"
        "<time>1.25-1.5</time> <caption>the red square is shown</caption> <think>flash 2.</think>\n"
        "the square flashes 2 times.\n<answer>B</answer>")
    inline = TRACES.get("clues")(COUNT_ROW, default.wrap_think)
    assert default.target(inline, "B") == (
        "<think><time>0.25-0.75</time> <caption>the red square is shown</caption> flash 1. <time>1.25-1.5</time> "
        "<caption>the red square is shown</caption> flash 2. the square flashes 2 times.</think><answer>B</answer>")
    stepped = COUNT_ROW.model_copy(update={"meta": {**COUNT_ROW.meta, "frames": 32, "frames_per_step": 2}})
    assert TRACES.get("clues")(stepped, False).startswith("<time>0.5-1.5</time>")  # steps of 2 frames at 4 fps
    assert TRACES.get("plain")(COUNT_ROW, True) == COUNT_ROW.reasoning
    # each layout passes its own format reward, and the clues score 1 against the row's events
    cols = {k: [v] for k, v in COUNT_ROW.model_dump().items()}
    assert REWARDS.get("clue_format")([vt.target(blocks, "B")]) == [1.0]
    assert REWARDS.get("format")([default.target(inline, "B")]) == [1.0]
    assert REWARDS.get("clue_format")([default.target(inline, "B")]) == [0.0]  # one outer <think>: not blocks
    assert REWARDS.get("clue")([vt.target(blocks, "B")], **cols) == [1.0]
    assert REWARDS.get("clue")([default.target(inline, "B")], **cols) == [1.0]


def test_video_thinker_prompt_is_the_published_text() -> None:
    vt = get_template("video_thinker")
    row = COUNT_ROW
    assert vt.user_text(row, "sft") == vt.user_text(row, "rl") == vt.user_text(row, "eval") == (
        "How many times does the square flash?Options:\nA. 1\nB. 2\nC. 3\nD. 4\n\n\n"
        "Please analyze the video carefully by identifying key segments and their important visual clues within "
        "`<time> </time>`, `<caption> </caption>`, `<think> </think>` tags then conduct deep analysis and "
        "reasoning to arrive at your answer to the question, finally provide only the single option letter (e.g., "
        "A, B, C, D, E, F etc.) within the `<answer> </answer>` tags.Follow the format specified in the "
        "instructions.")
    system = vt.system_text("rl")
    assert system == vt.system_text("sft") == vt.system_text("eval") and len(system) == 1284
    assert system.startswith("You are an expert video analyst") and "such as such as" in system
    assert "`<time>start_time-end_time</time>`" in system and system.endswith("in `<answer> </answer>` tags.")


def test_sft_trace_is_validated_at_load(recipe_dict) -> None:
    assert config_from_dict(dict(recipe_dict, sft={"trace": "clues"})).sft.trace == "clues"
    with pytest.raises(ConfigError, match="sft.trace.*unknown SFT trace style 'clue'.*clues, plain"):
        config_from_dict(dict(recipe_dict, sft={"trace": "clue"}))


# ------------------------------------------------------------------ parsing clues


PAPER_TRACE = (  # the layout of Video-Thinker-7B's outputs (paper Fig. 2): clocks, free text between blocks
    "Let me watch this video. <time>00:00-00:10</time> <caption>A man in a tower is beating a drum.</caption> "
    "<think>Okay, so we have a man playing a drum.</think>Hmm, let's see...\n\n<time>00:22-00:34</time> "
    "<caption>A troll stands in a forest.</caption> <think>Ah! Now we see the troll.</think> The answer is C. "
    "<answer>C</answer>"
)


def test_parse_clues_reads_every_written_form() -> None:
    assert parse_clues(PAPER_TRACE) == [(0.0, 10.0), (22.0, 34.0)]
    assert has_clue_format(PAPER_TRACE)
    text = ("<think><time>1.5-3</time> a <time> 2 s to 4 seconds </time> <time>0:01:05–0:01:20</time> "
            "<time>3.5 ~ 7.25</time> <time>1:05 - 1:20.5</time></think><answer>A</answer>")
    assert parse_clues(text) == [(1.5, 3.0), (2.0, 4.0), (65.0, 80.0), (3.5, 7.25), (65.0, 80.5)]


@pytest.mark.parametrize("content", [
    "", "3", "about 2 to 4", "1.5-3-4", "-1-2", "1:75-2:00", "4-2", "2-2", "nan-5", "1e3-2e3", "\u0663-5",
    "2-\uff15", "1,5-3", "from 1 to 3", "1-2 and 3-4", "9" * 400 + "-" + "9" * 401, "1.2.3-4",
])
def test_a_malformed_clue_is_kept_as_none_never_misread(content: str) -> None:
    assert parse_clues(f"<time>{content}</time>") == [None]


def test_clues_in_the_answer_or_unclosed_are_not_read() -> None:
    assert parse_clues("<answer><time>1-2</time></answer>") == []
    assert parse_clues("<time>1-2") == [] and parse_clues("1-2</time>") == []
    assert parse_clues("<time><time>1-2</time></time>") == [None]  # content "<time>1-2": malformed
    assert parse_clues("<TIME>1-2</TIME>") == []


# ------------------------------------------------------------------ the clue reward, hand-computed


def test_clue_score_by_hand() -> None:
    gold = [(1.0, 2.0), (3.0, 5.0)]
    assert tiou((3.0, 4.0), (3.0, 5.0)) == 0.5
    assert clue_score([(1.0, 2.0), (3.0, 4.0)], gold) == pytest.approx(0.75)  # P = (1 + .5)/2, R = (1 + .5)/2
    assert clue_score([(0.0, 5.0)], gold) == pytest.approx((0.4 + (0.2 + 0.4) / 2) / 2)  # P .4, R .3
    assert clue_score([(1.0, 2.0)], gold) == pytest.approx((1.0 + 0.5) / 2)  # one event found of two
    assert clue_score([(1.0, 2.0), None], [(1.0, 2.0)]) == pytest.approx((0.5 + 1.0) / 2)  # a malformed clue
    assert clue_score([(1.0, 2.0)] * 4 + [(30.0, 40.0)] * 4, [(1.0, 2.0)]) == pytest.approx((0.5 + 1.0) / 2)
    assert clue_score([(10.0, 12.0)], [(1.0, 2.0)]) == 0.0  # outside the video: no overlap with any event
    assert clue_score([(1.0, 9999.0)], [(1.0, 2.0)]) == pytest.approx(1 / 9998)  # not clipped to the video
    assert clue_score([], gold) == 0.0 and clue_score([None], gold) == 0.0


def test_clue_reward_columns_gold_and_errors() -> None:
    fn = REWARDS.get("clue")
    done = "<time>1-2</time> <caption>c</caption> <think>t</think>\n<answer>A</answer>"
    # a non-gym row: time_span is its one event; a gym row: its events (meta), not its time_span
    assert fn([done, "no clue <answer>A</answer>"], time_span=[[1.0, 2.0]] * 2, task=["x", "x"]) == [1.0, 0.0]
    cols = {k: [v] for k, v in COUNT_ROW.model_dump().items()}
    assert gold_spans("c1", "count", COUNT_ROW.meta, COUNT_ROW.time_span) == [(0.25, 0.75), (1.25, 1.5)]
    assert fn(["<time>0.25-0.75</time>"], **cols) == [pytest.approx((1.0 + 0.5) / 2)]
    with pytest.raises(ClueError, match="row r9: the clue reward needs the true span"):
        fn(["<time>1-2</time>"], id=["r9"], task=["x"], time_span=[None])
    with pytest.raises(ClueError, match=r"row r9: event span \[3.0, 3.0\] has no length"):
        fn(["<time>1-2</time>"], id=["r9"], task=["x"], time_span=[[3.0, 3.0]])


def test_clue_format_by_hand() -> None:
    block = "<time>1-2</time> <caption>c</caption> <think>t</think>"
    assert has_clue_format(f"{block}\n{block} so A.\n<answer>A</answer>\n")
    assert not has_clue_format("<think>t</think><answer>A</answer>")  # no block
    assert not has_clue_format(f"{block}<caption>extra</caption><answer>A</answer>")  # a caption without its time
    assert not has_clue_format(f"{block}<answer>A</answer><answer>B</answer>")
    assert not has_clue_format(f"{block}<answer>A</answer> more")  # text after the answer
    assert not has_clue_format(f"<answer>A</answer>{block}")
    assert not has_clue_format("<time>1<caption>x</caption>-2</time> <caption>c</caption> <think>t</think>"
                               "<answer>A</answer>")  # tags inside a tag's content
    assert not has_clue_format(f"{block}")  # no answer
