"""Property-based tests of every registered reward: no completion makes a reward raise or leave its range.

For each name in ``REWARDS.names()`` (parametrized over the registry, so a
newly registered reward is covered, or fails until it is given a spec in
:data:`SPECS`), hypothesis draws a batch of completions -- arbitrary unicode,
text built from tags (nested, unclosed, repeated), numbers (huge, negative,
"nan", "inf", "1e400"), spans ("3.5 to 1.2", "nan-5"), letters and unicode
look-alikes, plain strings or TRL chat messages -- together with VALID gold
columns for that reward, and checks that the call returns one finite float
per completion inside the documented range (no built-in reward documents
``None``). A second property: the gold answer itself, correctly wrapped in
tags, gets the maximum score.

Gold data is valid by construction: bad gold may legitimately raise (a data
error naming the row); the property is about arbitrary *completions*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reelrl.data.answers import parse_choice, parse_choices, parse_number, parse_span
from reelrl.data.schema import LETTERS
from reelrl.rewards import REWARDS

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,  # CI sees the same examples on every run
    database=None,  # nothing written to .hypothesis/
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------ completions

# Characters that trip up regexes: Python's re.IGNORECASE matches "ſ" (U+017F) with "s", "ı" (U+0131) and
# "İ" (U+0130) with "i", the Kelvin sign (U+212A) with "k"; "ﬅ".upper() == "ST"; "٣" and "３" are \d digits.
TRICKY_CHARS = [
    "\u017f", "\u0131", "\u0130", "\u212a", "\ufb05", "\ufb06", "ß", "٣", "３",
    "\u200b", "\x00", "–", "—", "~", "é", "\n", "\t",
]

FRAGMENTS = [
    # tags, well-formed or not
    "<think>", "</think>", "<answer>", "</answer>", "<answer", "answer>", "</ answer>", "<ANSWER>", "<>",
    "<time>", "</time>", "<caption>", "</caption>", "<time>1-2</time>", "<time>00:03.5 - 00:07</time>",
    # numbers
    "0", "-0", "3", "-2.5", ".5", "1,000", "1,2,3", "1,00", "1e3", "1e400", "-1e400", "1e-400", "nan", "inf",
    "-inf", "NaN", "Infinity", "9" * 400, "-" + "9" * 320, "1.7976931348623157e308", "5e-324", "+7", "--3",
    "50%", "3.004", "1e99999999",
    # number words (see also _lookalikes)
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "Twenty", "SIX",
    # spans
    "3.5 to 1.2", "nan-5", "2-6", "[2, 6]", "(2.5, 7.0)", "1e400 to 5", "0-0", "2.5s to 7s", "5 to " + "9" * 400,
    "between 2 seconds and 6 seconds", "6 to 2", "2–6", "2~6",
    # letters
    "A", "b", "(B)", "[c]", "D.", "answer is C", "The answer is (ſ)", "option ı", "A, C", "A and C", "AC", "ABA",
    "(A) or (C)", "Z", "ﬅ", "ﬆ, A", "A ball", "I think",
    # words, whitespace
    "the cat sat", "running cats", " ", "", "\n\n",
]


_LOOKALIKES = str.maketrans({"s": "\u017f", "i": "\u0131", "I": "\u0130", "k": "\u212a", "K": "\u212a"})


def _lookalikes(text: str) -> str:
    """ASCII letters swapped for the non-ASCII letters re.IGNORECASE equates with them ("six" -> "ſıx")."""
    return text.replace("ST", "ﬅ").replace("st", "ﬆ").translate(_LOOKALIKES)


def _joined(pieces: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(pieces, max_size=6).map("".join)


_piece = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.sampled_from(FRAGMENTS).map(_lookalikes),
    st.sampled_from(TRICKY_CHARS),
    st.text(max_size=8),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.builds(lambda a, b: f"{a} to {b}", st.floats(), st.floats()),
)
_inner = st.one_of(
    _joined(_piece), st.sampled_from(FRAGMENTS), st.sampled_from(FRAGMENTS).map(_lookalikes), st.text(max_size=40)
)

completion_text = st.one_of(
    st.text(max_size=60),  # arbitrary unicode
    _joined(_piece),  # tags, numbers, spans, letters in any order, nested / unclosed / repeated
    st.builds(lambda t, a: f"<think>{t}</think><answer>{a}</answer>", _inner, _inner),  # well-formed
    st.builds(lambda t, a, b: f"<think>{t}</think>\n<answer>{a}</answer><answer>{b}</answer>", _inner, _inner, _inner),
    st.builds(lambda a: f"<answer><answer>{a}</answer></answer>", _inner),  # nested
    st.builds(lambda a: f"<think><answer>{a}</think>", _inner),  # unclosed answer
    st.builds(lambda a: f"<answer>{a}", _inner),
)


def _chat(text: st.SearchStrategy[str]) -> st.SearchStrategy[list[dict[str, Any]]]:
    """TRL conversational completions: the last message is scored; content a string or a list of text parts."""
    content = st.one_of(
        text,
        st.lists(text, min_size=0, max_size=3).map(lambda ps: [{"type": "text", "text": p} for p in ps]),
    )
    message = st.fixed_dictionaries({"role": st.just("assistant"), "content": content})
    return st.lists(message, min_size=1, max_size=2)


completion = st.one_of(completion_text, _chat(completion_text))


def wrap(answer: str) -> str:
    return f"<think>reasoning</think>\n<answer>{answer}</answer>"


# ------------------------------------------------------------------ valid gold rows, per problem type


@st.composite
def _choice_gold(draw: st.DrawFn, multi: bool = False) -> dict[str, Any]:
    k = draw(st.integers(min_value=2, max_value=len(LETTERS)))
    options = draw(st.one_of(st.none(), st.just([f"option {i}" for i in range(k)])))
    valid = LETTERS[:k] if options else LETTERS
    if multi:
        letters = draw(st.lists(st.sampled_from(valid), min_size=1, max_size=4, unique=True))
        sep = draw(st.sampled_from([",", ", ", " , "]))
        answer = sep.join(sorted(letters))
    else:
        letters = [draw(st.sampled_from(valid))]
        answer = draw(st.sampled_from([letters[0], letters[0].lower(), f" {letters[0]} "]))
    if draw(st.booleans()):
        answer = f"<answer>{answer}</answer>"  # a surrounding tag is tolerated
    return {"answer": answer, "options": options, "best": wrap(", ".join(sorted(letters)))}


@st.composite
def _number_gold(draw: st.DrawFn) -> dict[str, Any]:
    x = draw(st.one_of(st.integers(min_value=-(10**15), max_value=10**15),
                       st.floats(allow_nan=False, allow_infinity=False)))
    answer = draw(st.sampled_from([str(x), f"{x:,}" if isinstance(x, int) else repr(x)]))
    return {"answer": answer, "best": wrap(answer)}


@st.composite
def _progress_gold(draw: st.DrawFn, ranged: bool = True) -> dict[str, Any]:
    """A progress row: gold in its range ([0, 1] by default, or PRIMO's [0, 100]); maybe another problem type."""
    lo, hi = draw(st.sampled_from([(0.0, 1.0), (0.0, 100.0)])) if ranged else (0.0, 1.0)
    x = draw(st.floats(min_value=lo, max_value=hi, allow_nan=False))
    answer = draw(st.sampled_from([repr(x), str(x)]))
    ptype = draw(st.sampled_from([None, "progress", "multiple_choice"])) if ranged else "progress"
    return {"answer": answer, "problem_type": ptype, "meta": {"progress_range": [lo, hi]},
            "best": wrap(answer)}


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
# Two or more words with ASCII letters/digits: rouge-2 needs two tokens for a perfect score.
_sentence = st.lists(_word, min_size=2, max_size=8).map(" ".join)
_tag_free = st.text(alphabet=st.characters(exclude_characters="<>"), max_size=30)


@st.composite
def _text_gold(draw: st.DrawFn) -> dict[str, Any]:
    answer = draw(st.one_of(_sentence, _tag_free))
    return {"answer": answer, "best": wrap(answer)}


@st.composite
def _span_gold(draw: st.DrawFn) -> dict[str, Any]:
    a, b = sorted(draw(st.lists(st.integers(min_value=0, max_value=100_000), min_size=2, max_size=2, unique=True)))
    s, e = f"{a / 10:.1f}", f"{b / 10:.1f}"
    how = draw(st.sampled_from(["to", "dash", "brackets", "time_span", "time_span_and_text"]))
    answer = {"to": f"{s} to {e}", "dash": f"{s}-{e}", "brackets": f"[{s}, {e}]"}.get(how, "")
    if how == "time_span_and_text":
        answer = "the person opens the door"  # no span in the text: time_span is read
    time_span = [float(s), float(e)] if how.startswith("time_span") else draw(st.sampled_from([None, [0.0, 1.0]]))
    return {"answer": answer, "time_span": time_span, "best": wrap(f"{s} to {e}")}


@st.composite
def _box_gold(draw: st.DrawFn) -> dict[str, Any]:
    x1, x2 = sorted(draw(st.lists(st.integers(0, 4000), min_size=2, max_size=2, unique=True)))
    y1, y2 = sorted(draw(st.lists(st.integers(0, 4000), min_size=2, max_size=2, unique=True)))
    how = draw(st.sampled_from(["brackets", "json", "parens"]))
    answer = {"brackets": f"[{x1}, {y1}, {x2}, {y2}]", "json": f'{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}]}}',
              "parens": f"({x1},{y1},{x2},{y2})"}[how]
    return {"answer": answer, "best": wrap(f"[{x1}, {y1}, {x2}, {y2}]")}


@st.composite
def _stvg_gold(draw: st.DrawFn) -> dict[str, Any]:
    """STVG-R1 answers "Target ID: k, Time range: s to e" (0 <= s < e), in the label orders and forms it reads."""
    k = draw(st.integers(min_value=0, max_value=10**6))
    a, b = sorted(draw(st.lists(st.integers(min_value=0, max_value=100_000), min_size=2, max_size=2, unique=True)))
    s, e = f"{a / 100:g}", f"{b / 100:g}"
    how = draw(st.sampled_from(["stvg_r1", "time_first", "brackets"]))
    answer = {"stvg_r1": f"Target ID: {k}, Time range: {s} to {e}", "time_first": f"Time range: {s} and {e}. Target ID: {k}.",
              "brackets": f"target id: [{k}] time range: [{s} - {e}]"}[how]
    return {"answer": answer, "best": wrap(f"Target ID: {k}, Time range: {s} to {e}")}


GOLD_BY_TYPE: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "multiple_choice": _choice_gold(),
    "multi_choice": _choice_gold(multi=True),
    "numerical": _number_gold(),
    "regression": _number_gold(),
    "ocr": _text_gold(),
    "free_form": _text_gold(),
    "temporal_grounding": _span_gold(),
    "box": _box_gold(),
    "spatio_temporal_grounding": _stvg_gold(),
    "progress": _progress_gold(ranged=False),
}


@st.composite
def _accuracy_gold(draw: st.DrawFn) -> dict[str, Any]:
    ptype = draw(st.sampled_from(sorted(GOLD_BY_TYPE)))
    row = draw(GOLD_BY_TYPE[ptype])
    return {"problem_type": ptype, **row}


# ------------------------------------------------------------------ the spec of each registered reward


@dataclass(frozen=True)
class Spec:
    """How to test one reward: its gold rows, its documented range, and when the gold answer scores ``hi``."""

    gold: st.SearchStrategy[dict[str, Any]]  # one row: columns plus "best", a completion that must score hi
    columns: tuple[str, ...]  # the dataset columns the reward is given (lists of N entries, also for N = 0)
    lo: float = 0.0
    hi: float = 1.0
    values: frozenset[float] | None = None  # documented as exactly these values
    allows_none: bool = False  # no built-in reward documents None ("not applicable")
    best_scores_hi: Callable[[dict[str, Any]], bool] = lambda row: True


BINARY = frozenset({0.0, 1.0})


def _rouge_has_two_tokens(row: dict[str, Any]) -> bool:
    from rouge_score import tokenize

    return len(tokenize.tokenize(row["answer"], None)) >= 2


def _accuracy_best(row: dict[str, Any]) -> bool:
    return row["problem_type"] != "free_form" or _rouge_has_two_tokens(row)


@st.composite
def _clue_gold(draw: st.DrawFn) -> dict[str, Any]:
    """True events as meta.events (1-3, may overlap) or as the row's time_span; best = one exact clue per event."""
    spans = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        a, b = sorted(draw(st.lists(st.integers(min_value=0, max_value=100_000), min_size=2, max_size=2, unique=True)))
        spans.append((a / 10, b / 10))
    if draw(st.booleans()):
        meta = {"events": [{"start": s, "end": e, "caption": "the red square is shown"} for s, e in spans]}
        time_span = draw(st.sampled_from([None, [0.0, 1.0]]))  # meta.events take precedence
    else:
        spans, meta, time_span = spans[:1], draw(st.sampled_from([None, {}])), list(spans[0])
    best = "".join(f"<time>{s:.1f}-{e:.1f}</time> <caption>c</caption> <think>t</think>\n" for s, e in spans)
    return {"id": "r1", "task": "default", "meta": meta, "time_span": time_span, "best": best + "<answer>A</answer>"}


# clue_format reads no column; its best completion is one clue block of tag-free texts, then the answer
_clue_format_gold = st.builds(
    lambda c, t, a: {"best": f"Let me see. <time>1-2</time> <caption>{c}</caption> <think>{t}</think>\n"
                             f"<answer>{a}</answer>\n"}, _tag_free, _tag_free, _tag_free)

@st.composite
def _judge_gold(draw: st.DrawFn) -> dict[str, Any]:
    """A reference the rule judge reads: a physics-gym description or a hand paraphrase; not free_form -> None."""
    from reelrl.gym.physics import DESCRIPTIONS

    refs = sorted(set(DESCRIPTIONS.values())) + ["The ball vanishes and reappears elsewhere.",
                                                 "It does not bounce; it sinks through the floor.",
                                                 "Instead of falling, the ball floats upward."]
    answer = draw(st.sampled_from(refs))
    ptype = draw(st.sampled_from([None, "free_form", "multiple_choice"]))
    return {"answer": answer, "problem_type": ptype, "question": "What happens to the ball?", "best": wrap(answer)}


# format reads no column; its best completion is any tag-free think and answer in the two blocks
_format_gold = st.builds(lambda t, a: {"best": f"  <think>{t}</think>\n<answer>{a}</answer>\n"}, _tag_free, _tag_free)

SPECS: dict[str, Spec] = {
    "format": Spec(_format_gold, (), values=BINARY),
    "accuracy": Spec(
        _accuracy_gold(), ("answer", "problem_type", "options", "time_span"), best_scores_hi=_accuracy_best
    ),
    "choice": Spec(_choice_gold(), ("answer", "options"), values=BINARY),
    "multi_choice": Spec(_choice_gold(multi=True), ("answer", "options"), values=BINARY),
    "multi_choice_soft": Spec(_choice_gold(multi=True), ("answer", "options")),
    "numeric": Spec(_number_gold(), ("answer",), values=BINARY),
    "regression": Spec(_number_gold(), ("answer",)),
    "mra": Spec(_number_gold(), ("answer",), values=frozenset(i / 10 for i in range(11))),
    "ocr": Spec(_text_gold(), ("answer",)),
    "rouge": Spec(_text_gold(), ("answer",), best_scores_hi=_rouge_has_two_tokens),
    "tiou": Spec(_span_gold(), ("answer", "time_span")),
    "box_iou": Spec(_box_gold(), ("answer",)),
    "stvg": Spec(_stvg_gold(), ("answer",), hi=3.0),  # tIoU + 1[ID] + format, STVG-R1's unit weights
    # PRIMO R1's max(0, 1 - |p - g| / range); rows of another problem type are not applicable (None)
    "progress": Spec(_progress_gold(), ("answer", "problem_type", "meta"), allows_none=True,
                     best_scores_hi=lambda row: row["problem_type"] in (None, "progress")),
    "clue": Spec(_clue_gold(), ("id", "task", "meta", "time_span")),
    "clue_format": Spec(_clue_format_gold, (), values=BINARY),
    # rows that are not free_form are not applicable (None); the rule judge (default) scores the others
    "judge": Spec(_judge_gold(), ("answer", "problem_type", "question"), allows_none=True,
                  best_scores_hi=lambda row: row["problem_type"] != "multiple_choice"),
    # an environment's own reward, whatever the completion: the column's value, None where the turn has none
    "env_reward": Spec(st.builds(lambda v: {"env_reward": v, "best": "<answer>x</answer>"},
                                 st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0))),
                       ("env_reward",), allows_none=True, best_scores_hi=lambda row: False),
}


def _spec(name: str) -> Spec:
    if name not in SPECS:
        pytest.fail(f"reward {name!r} is registered but has no Spec in tests/test_reward_properties.py: add its "
                    "gold columns and documented range to SPECS")
    return SPECS[name]


def _columns(spec: Spec, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [r.get(k) for r in rows] for k in spec.columns}


def _check_values(name: str, spec: Spec, out: Any, n: int) -> None:
    assert isinstance(out, list), f"{name} returned {type(out).__name__}, not a list"
    assert len(out) == n, f"{name} returned {len(out)} values for {n} completions"
    for i, v in enumerate(out):
        if v is None:
            assert spec.allows_none, f"{name} returned None for row {i}; it does not document None"
            continue
        assert isinstance(v, float), f"{name} row {i}: {v!r} is {type(v).__name__}, not float"
        assert math.isfinite(v), f"{name} row {i}: {v} is not finite"
        assert spec.lo <= v <= spec.hi, f"{name} row {i}: {v} outside [{spec.lo}, {spec.hi}]"
        if spec.values is not None:
            assert any(math.isclose(v, x, abs_tol=1e-12) for x in spec.values), (
                f"{name} row {i}: {v} not in {sorted(spec.values)}"
            )


# ------------------------------------------------------------------ properties


def test_the_registry_holds_the_rewards_this_file_knows() -> None:
    """A stale entry in SPECS (a reward renamed or removed) is a test to update, not silently dead code."""
    assert sorted(SPECS) == REWARDS.names()


@pytest.mark.parametrize("name", REWARDS.names())
def test_no_completion_makes_a_reward_raise_or_leave_its_range(name: str) -> None:
    spec = _spec(name)
    fn = REWARDS.get(name)

    @SETTINGS
    @given(batch=st.lists(st.tuples(completion, spec.gold), max_size=4))
    def prop(batch: list[tuple[Any, dict[str, Any]]]) -> None:
        completions = [c for c, _ in batch]
        out = fn(completions, **_columns(spec, [r for _, r in batch]))
        _check_values(name, spec, out, len(completions))

    prop()


@pytest.mark.parametrize("name", REWARDS.names())
def test_the_gold_answer_in_tags_gets_the_maximum(name: str) -> None:
    spec = _spec(name)
    fn = REWARDS.get(name)

    @SETTINGS
    @given(row=spec.gold, chat=st.booleans())
    def prop(row: dict[str, Any], chat: bool) -> None:
        best = row["best"]
        completion = [{"role": "assistant", "content": best}] if chat else best
        out = fn([completion], **_columns(spec, [row]))
        _check_values(name, spec, out, 1)
        if spec.best_scores_hi(row):
            assert out == [spec.hi], f"{name}: {best!r} against gold {row} scored {out}, not {spec.hi}"

    prop()


# ------------------------------------------------------------------ the parsers the rewards rely on

PARSER_SETTINGS = settings(SETTINGS, max_examples=1000)  # the parsers are cheap: search harder
_n_options = st.one_of(st.just(len(LETTERS)), st.integers(min_value=1, max_value=len(LETTERS)))


@PARSER_SETTINGS
@given(text=completion_text, n=_n_options)
def test_parse_choice_gives_a_valid_letter_or_none(text: str, n: int) -> None:
    r = parse_choice(text, n)
    assert r is None or (len(r) == 1 and r in LETTERS[:n]), r
    assert r is None or r in text or r.lower() in text, f"{r!r} is not written in {text!r}"


@PARSER_SETTINGS
@given(text=completion_text, n=_n_options)
def test_parse_choices_gives_valid_letters_or_none(text: str, n: int) -> None:
    r = parse_choices(text, n)
    assert r is None or (r and all(len(x) == 1 and x in LETTERS[:n] for x in r)), r
    assert r is None or all(x in text or x.lower() in text for x in r), f"{r!r} is not written in {text!r}"


@PARSER_SETTINGS
@given(text=completion_text)
def test_parse_number_and_span_never_raise(text: str) -> None:
    x = parse_number(text)
    assert x is None or isinstance(x, float)
    span = parse_span(text)
    assert span is None or (len(span) == 2 and all(isinstance(v, float) and v >= 0 for v in span))
