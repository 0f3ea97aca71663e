"""Tests of answer extraction, reward functions and their weighted combination.

Expected values are computed by hand in the comments next to them.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch

from reelrl.rewards import (
    REWARDS,
    RewardSpec,
    compute_rewards,
    extract_tag,
    has_format,
    parse_choice,
    parse_choices,
    parse_number,
    parse_span,
    resolve_reward,
)
from reelrl.data.answers import extract_choice, videomme_letter
from reelrl.rewards.functions import (
    mra_score,
    rouge_fmeasures,
    rouge_mean_f1,
    tiou,
    word_error_rate,
)


def wrap(answer: str, think: str = "some reasoning") -> str:
    """A well-formatted completion with the given answer."""
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


def call(name: str, completions: list, **columns) -> list:
    return REWARDS.get(name)(completions, **columns)


# ------------------------------------------------------------------ extraction


class TestExtractTag:
    def test_last_answer_stripped(self) -> None:
        assert extract_tag("<answer> A </answer> then <answer>\n B\n</answer>") == "B"

    def test_missing_or_unclosed(self) -> None:
        assert extract_tag("no tags here") is None
        assert extract_tag("<answer>B") is None

    def test_other_tag_multiline(self) -> None:
        assert extract_tag("<think>line 1\nline 2</think>", "think") == "line 1\nline 2"


class TestHasFormat:
    @pytest.mark.parametrize(
        "text",
        [
            "<think>x</think><answer>B</answer>",
            "  <think>a\nb</think>\n\n<answer>\nB\n</answer>\n",
        ],
    )
    def test_accepts(self, text: str) -> None:
        assert has_format(text)

    @pytest.mark.parametrize(
        "text",
        [
            "<think>x</think><answer>B</answer><answer>C</answer>",  # two answers
            "<think>x</think><think>y</think><answer>B</answer>",  # two thinks
            "<think>x</think> so <answer>B</answer>",  # text between blocks
            "Sure! <think>x</think><answer>B</answer>",  # text before
            "<think>x</think><answer>B</answer> done",  # text after
            "<answer>B</answer>",  # no think
            "<answer>B</answer><think>x</think>",  # wrong order
            "<think>x <answer>B</answer></think><answer>B</answer>",  # nested extra answer
        ],
    )
    def test_rejects(self, text: str) -> None:
        assert not has_format(text)


class TestParseChoice:
    @pytest.mark.parametrize(
        "text",
        ["B", "b", " (B) ", "(b)", "[B]", "B.", "B)", "B:", "B. blue", "(B) blue", "b) blue",
         "The answer is B", "the answer is: (b)", "Answer: B.", "Option B", "I think the answer is option B.",
         "so (B) fits best", "B is correct", "A is wrong; the answer is B"],
    )
    def test_reads_b(self, text: str) -> None:
        assert parse_choice(text, 4) == "B"

    @pytest.mark.parametrize(
        "text",
        ["A ball", "the answer is a dog", "I think so", "", "it is red", "A or C", "(A) or (C)", "blue"],
    )
    def test_no_confident_letter(self, text: str) -> None:
        assert parse_choice(text, 4) is None

    def test_letters_beyond_options_ignored(self) -> None:
        assert parse_choice("E", 4) is None
        assert parse_choice("E", 5) == "E"
        assert parse_choice("The answer is E", 4) is None

    def test_explicit_phrase_beats_loose_letters(self) -> None:
        # "C" appears loose, but the explicit phrase names D.
        assert parse_choice("C looked likely, but the answer is D", 4) == "D"
        # Leading delimiter rule beats a later loose letter.
        assert parse_choice("A. the blue one, not C", 4) == "A"

    def test_bad_n_options(self) -> None:
        with pytest.raises(ValueError, match="n_options"):
            parse_choice("A", 0)

    @pytest.mark.parametrize("text", ["The answer is (ſ)", "answer is (ı)", "Option [ı]"])
    def test_non_ascii_lookalikes_are_no_letters(self, text: str) -> None:
        # Regression: re.IGNORECASE lets [A-Za-z] match "ſ" (U+017F) and "ı" (U+0131), whose upper() is "S" / "I";
        # "The answer is (ſ)" was read as option S.
        assert parse_choice(text, 26) is None


class TestExtractChoice:
    """Strict (tags required) and benchmark (Video-MME's official regex) extraction of a choice letter."""

    @pytest.mark.parametrize(
        "text,expected",
        [
            # Video-MME extract_characters_regex, case by case:
            ("C", "C"),
            ("The best answer is C.", "C"),  # prefix removed -> " C." -> C
            ("The answer is (B) the red ball", "B"),
            ("The answer B", "B"),  # "The answer" is a prefix too
            ("(D) He opens the door.", "D"),
            ("A ball rolls to the left.", "A"),  # the first upper-case A-D, whatever it means
            ("Answer: D", "A"),  # "Answer:" is not a prefix: the "A" of "Answer" is found first
            ("Considering the motion, the answer is B", "C"),  # "the answer is" (lower case) stays
            ("The best option is D", "D"),  # no capital A-D before "D"
            ("Best option: C", "B"),  # "Best option:" alone is never stripped (missing comma in the reference)
            ("Best answer:Best option: C", "C"),  # the joined reference string is
            ("I think it's the cat", None),  # no A-D in upper case
            ("b", None),  # case-sensitive
            ("E", None),  # four options: the class is ABCD
            ("one two three four five six seven eight nine ten eleven twelve", None),  # > 10 words, no letter
            ("<think>B looks likely</think><answer>C</answer>", "C"),  # tags: only their content
            ("<think>blue first</think><answer>The best answer is D</answer>", "D"),
            ("<answer>no idea</answer> but then D", None),  # the tag's content is read, not the rest
        ],
    )
    def test_benchmark_mode(self, text: str, expected: str | None) -> None:
        assert extract_choice(text, 4, "benchmark") == expected

    @pytest.mark.parametrize(
        "text,expected",
        [
            ("<think>x</think><answer>C</answer>", "C"),
            ("<think>x</think><answer>The answer is B</answer>", "B"),
            ("<think>x</think><answer>(b)</answer>", "B"),
            ("<answer>A ball</answer>", None),  # parse_choice reads "A ball" as English
            ("The best answer is C.", None),  # no tags: no answer
            ("<answer>Answer: D</answer>", "D"),
        ],
    )
    def test_strict_mode(self, text: str, expected: str | None) -> None:
        assert extract_choice(text, 4, "strict") == expected
        assert extract_choice(text, 4) == expected  # strict is the default

    def test_more_than_four_options_widen_the_class(self) -> None:
        assert extract_choice("E", 5, "benchmark") == "E"
        assert extract_choice("E", 3, "benchmark") is None  # class stays ABCD below four options
        assert extract_choice("D", 3, "benchmark") == "D"  # returned as the reference does; simply wrong

    @pytest.mark.parametrize(
        "text,expected",
        [
            # extract_characters_regex by hand: strip, delete each prefix, first of [ABCD] or ""
            ("The correct answer is (C).", "C"),  # prefix deleted -> " (C)." -> C
            ("Best answer: A", "B"),  # only the joined "Best answer:Best option:" is a prefix: the B of "Best"
            ("The correct option is B", "B"),  # not a prefix on its own (joined in the list); no A-D before B
            ("the answer is d", ""),  # case-sensitive prefixes and letters
            ("  D. Sitting down  ", "D"),
            ("After the Door opens, A", "A"),  # the A of "After"
            ("The answerB", "B"),  # "The answer" deleted -> "B"
            ("", ""),
            ("Option C", "C"),
        ],
    )
    def test_videomme_letter_hand_computed(self, text: str, expected: str) -> None:
        assert videomme_letter(text) == expected

    def test_bad_mode(self) -> None:
        with pytest.raises(ValueError, match="valid: strict, benchmark"):
            extract_choice("A", 4, "lenient")  # type: ignore[arg-type]


class TestParseChoices:
    @pytest.mark.parametrize(
        "text", ["A, C", "A,C", "A and C", "(A)(C)", "AC", "Options A and C", "c, a", "A. red, C. blue", "[A] [C]"]
    )
    def test_reads_a_c(self, text: str) -> None:
        assert parse_choices(text, 4) == {"A", "C"}

    def test_single(self) -> None:
        assert parse_choices("The answer is B", 4) == {"B"}
        assert parse_choices("b", 4) == {"B"}

    @pytest.mark.parametrize("text", ["", "a dog", "A, E", "ABA"])
    def test_none(self, text: str) -> None:
        assert parse_choices(text, 4) is None

    @pytest.mark.parametrize("text", ["ſ", "option ı", "ﬅ", "A, ﬅ", "A and ı"])
    def test_non_ascii_lookalikes_are_no_letters(self, text: str) -> None:
        # Regression (found by tests/test_reward_properties.py): a one-character token whose upper() is ASCII was
        # taken as a letter: "ſ" -> {"S"}, "option ı" -> {"I"}, and "ﬅ".upper() == "ST" passed `in LETTERS`
        # as a substring -> {"ST"}.
        assert parse_choices(text, 26) is None


class TestParseNumber:
    @pytest.mark.parametrize(
        "text,value",
        [
            ("3", 3.0), ("3.0", 3.0), ("-2.5", -2.5), ("1,000", 1000.0), ("1,234,567.5", 1234567.5),
            ("about 7 times", 7.0), ("five", 5.0), ("Twenty", 20.0), ("first 2 then 4 people", 4.0),
            ("3-5", 5.0), ("x=-2", -2.0), ("1,2,3", 3.0), ("1e3", 1000.0), ("50%", 50.0), (".5", 0.5),
            ("one of them, 9 in total", 9.0),  # digits take precedence over words
        ],
    )
    def test_values(self, text: str, value: float) -> None:
        assert parse_number(text) == value

    @pytest.mark.parametrize("text", ["", "none", "someone", "many"])
    def test_none(self, text: str) -> None:
        assert parse_number(text) is None

    @pytest.mark.parametrize("text", ["ſix", "FİVE", "fıve", "ſeventeen", "nıne"])
    def test_lookalike_number_words_are_no_numbers(self, text: str) -> None:
        # Regression (found by tests/test_reward_properties.py): re.IGNORECASE matched "ſix" (U+017F) and "FİVE"
        # (U+0130) as number words, then the lookup of their lower() raised KeyError, so the numeric, regression,
        # mra and accuracy rewards raised on a completion such as "<answer>FİVE</answer>".
        assert parse_number(text) is None
        assert parse_number(f"six {text}") == 6.0  # the last REAL number word
        for name in ("numeric", "regression", "mra"):
            assert call(name, [wrap(text)], answer=["5"]) == [0.0]
        assert call("accuracy", [wrap(text)], answer=["5"], problem_type=["numerical"]) == [0.0]


class TestParseSpan:
    @pytest.mark.parametrize(
        "text",
        ["2.5 to 7", "2.5 and 7", "2.5-7", "2.5 - 7.0", "[2.5, 7]", "(2.5, 7.0)", "from 2.5s to 7s",
         "between 2.5 seconds and 7 seconds.", "2.5–7", "The event happens at 2.5 to 7."],
    )
    def test_syntaxes(self, text: str) -> None:
        assert parse_span(text) == (2.5, 7.0)

    def test_last_span_and_reversed(self) -> None:
        assert parse_span("first 1-2, then 4 to 6") == (4.0, 6.0)
        assert parse_span("7 to 3") == (7.0, 3.0)

    @pytest.mark.parametrize("text", ["", "no span", "at 5 seconds", "2 cats and 3 dogs"])
    def test_none(self, text: str) -> None:
        assert parse_span(text) is None


# ------------------------------------------------------------------ metrics


def test_word_error_rate_hand_computed() -> None:
    assert word_error_rate("the cat sat", "the cat sat") == 0.0
    assert word_error_rate("the cat sat", "the cat sat down") == pytest.approx(1 / 3)  # 1 insertion
    assert word_error_rate("the cat sat", "a cat") == pytest.approx(2 / 3)  # 1 substitution + 1 deletion
    assert word_error_rate("a b", "x y z w") == pytest.approx(2.0)  # 2 substitutions + 2 insertions
    assert word_error_rate("The", "the") == 1.0  # case-sensitive
    assert word_error_rate("", "") == 0.0


def test_rouge_hand_computed() -> None:
    # ref "the cat sat", pred "the cat": unigram overlap 2 -> P=1, R=2/3, F=0.8;
    # bigram overlap 1 ("the cat") -> P=1, R=1/2, F=2/3; LCS 2 -> F=0.8.
    assert rouge_fmeasures("the cat sat", "the cat") == pytest.approx((0.8, 2 / 3, 0.8))
    # Reversed order: unigrams all match, no bigram matches, LCS = 1 -> F = 1/3.
    assert rouge_fmeasures("a b c", "c b a") == pytest.approx((1.0, 0.0, 1 / 3))
    # Lower-cased, punctuation dropped.
    assert rouge_fmeasures("The cat.", "the CAT") == pytest.approx((1.0, 1.0, 1.0))
    # Clipped counts: "the the the" vs "the cat": overlap 1 -> P=1/3, R=1/2, F=0.4.
    assert rouge_fmeasures("the cat", "the the the")[0] == pytest.approx(0.4)
    assert rouge_fmeasures("", "anything") == (0.0, 0.0, 0.0)


def test_rouge_stems_as_video_r1() -> None:
    # use_stemmer=True: Porter stems of tokens longer than 3 characters.
    # ref "the cats were running" -> [the, cat, were, run]; pred "a cat runs" -> [a, cat, run].
    # unigrams: overlap {cat, run} = 2 -> P = 2/3, R = 2/4, F = 2 * (1/3) / (7/6) = 4/7;
    # bigrams: (the cat) (cat were) (were run) vs (a cat) (cat run) -> 0; LCS "cat run" = 2 -> F = 4/7.
    assert rouge_fmeasures("the cats were running", "a cat runs") == pytest.approx((4 / 7, 0.0, 4 / 7))
    assert rouge_mean_f1("the cats were running", "a cat runs") == pytest.approx(8 / 21)  # unstemmed: 0
    assert call("rouge", [wrap("a cat runs")], answer=["the cats were running"]) == [pytest.approx(8 / 21)]
    # "café" keeps only its ASCII part, as rouge_score's tokenizer does
    assert rouge_fmeasures("café", "caf") == pytest.approx((1.0, 0.0, 1.0))


@pytest.mark.parametrize(
    "gold,pred",
    [
        ("The man is slicing a tomato on the cutting board.", "A person slices tomatoes."),
        ("two dogs are playing fetch in the park", "Two dogs played fetch in a park!"),
        ("He opened the door and walked outside", "the door was opened"),
        ("nothing in common", "zebra"),
    ],
)
def test_rouge_reward_is_mean_of_rouge_score_fmeasures(gold: str, pred: str) -> None:
    from rouge_score import rouge_scorer

    scores = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(gold, pred)
    expected = (scores["rouge1"].fmeasure + scores["rouge2"].fmeasure + scores["rougeL"].fmeasure) / 3
    assert call("rouge", [wrap(pred)], answer=[gold]) == [expected]
    assert call("accuracy", [wrap(pred)], answer=[gold], problem_type=["free_form"]) == [expected]


def test_tiou_hand_computed() -> None:
    assert tiou((4.0, 8.0), (2.0, 6.0)) == pytest.approx(2 / 6)
    assert tiou((2.0, 6.0), (2.0, 6.0)) == 1.0
    assert tiou((7.0, 9.0), (2.0, 6.0)) == 0.0
    assert tiou((3.0, 4.0), (2.0, 6.0)) == pytest.approx(1 / 4)  # inside
    assert tiou((6.0, 2.0), (2.0, 6.0)) == 0.0  # reversed prediction


@pytest.mark.parametrize(
    "pred,gold,expected",
    [
        # VSI-Bench: hit when rel <= 1 - t, with 1 - t computed in float64 from np.linspace(0.5, 0.95, 10):
        # 1 - t = 0.5, 0.44999999999999996, 0.4, 0.35, 0.30000000000000004, 0.25,
        #         0.19999999999999996, 0.15000000000000002, 0.10000000000000009, 0.050000000000000044
        (10.0, 10.0, 1.0),
        (5.0, 10.0, 0.1),  # rel 0.5 <= 0.5 (t = .50 only); a strict < gave 0.0
        (15.0, 10.0, 0.1),  # same error above the gold
        (8.0, 10.0, 0.6),  # rel 0.2 > 0.19999999999999996: t = .50 .. .75 -> 6/10 (float64, as the reference)
        (12.0, 10.0, 0.6),
        (9.0, 10.0, 0.9),  # rel 0.1 <= 0.10000000000000009: t = .50 .. .90 -> 9/10; a strict < gave 0.8
        (9.5, 10.0, 1.0),  # rel 0.05 <= 0.050000000000000044: every threshold; a strict < gave 0.9
        (10.5, 10.0, 1.0),
        (7.0, 10.0, 0.5),  # rel 0.3 <= 0.30000000000000004: t = .50 .. .70
        (6.0, 10.0, 0.3),  # rel 0.4 <= 0.4: t = .50 .55 .60
        (9.4, 10.0, 0.9),  # rel 0.06 fails only t = .95
        (15.5, 10.0, 0.0),  # rel 0.55 > 0.5
        (-5.0, -4.0, 0.6),  # rel |-1| / |-4| = 0.25 <= .5 .45 .4 .35 .3 .25: 6/10
        (0.0, 0.0, 1.0),
        (0.1, 0.0, 0.0),
    ],
)
def test_mra_hand_computed(pred: float, gold: float, expected: float) -> None:
    assert mra_score(pred, gold) == expected  # exact: a mean of 10 booleans


def test_mra_matches_vsibench_formula() -> None:
    """The reference expression, verbatim, over many integer and half-integer cases."""
    conf = np.linspace(0.5, 0.95, int((0.95 - 0.5) / 0.05 + 2))
    for gold in (1.0, 3.0, 4.0, 10.0, 20.0, 40.0, 100.0):
        for pred in np.arange(0.0, 2.5 * gold, gold / 40):
            ref = float((abs(pred - gold) / gold <= 1 - conf).mean())
            assert mra_score(float(pred), gold) == ref, (pred, gold)


@pytest.mark.parametrize(
    "answer,gold,expected",
    [
        # VSI-Bench reads float(first word, trailing dots stripped); reelrl parse_number on the tag content.
        # Where the two read the same number, the scores are those of mean_relative_accuracy by hand:
        ("3", "4", 0.6),  # rel 0.25 <= 0.5 .45 .4 .35 .3 .25 -> 6 / 10
        ("3.", "4", 0.6),  # "3.".rstrip(".") = "3"
        ("3 chairs", "4", 0.6),  # first word "3"
        ("4", "4", 1.0),
        ("8", "4", 0.0),  # rel 1.0
        # Deliberate differences (functions module docstring): VSI-Bench reads no number from these (0);
        # reelrl reads the last number of the answer.
        ("about 3", "4", 0.6),
        ("1,000", "800", 0.6),  # rel 0.25
        ("", "4", 0.0),  # no number: 0 in both
    ],
)
def test_mra_reward_reads_the_answer(answer: str, gold: str, expected: float) -> None:
    assert call("mra", [wrap(answer)], answer=[gold]) == [expected]


@pytest.mark.parametrize(
    "answer,gold,expected",
    [
        # Video-R1 numerical: round(out, 2) == round(gt, 2) with Python's round on float64
        ("2.675", "2.67", 1.0),  # 2.675 is 2.67499999... in binary: round -> 2.67
        ("2.675", "2.68", 0.0),
        ("0.125", "0.12", 1.0),  # exactly 1/8: round half to even -> 0.12
        ("0.125", "0.13", 0.0),
        ("0.375", "0.38", 1.0),  # exactly 3/8: half to even -> 0.38
        ("-3.004", "-3", 1.0),
        ("-3.006", "-3", 0.0),  # -3.01
        ("1,234.5", "1234.50", 1.0),  # both have a decimal mark: Video-R1 scores 1 too
        ("", "3", 0.0),
        # Deliberate differences (functions module docstring); Video-R1 scores each of these 0:
        ("3.0", "3", 1.0),  # "." in one of them only
        ("1,000", "1000", 1.0),  # "," in one of them only
        ("3 apples", "3", 1.0),  # float("3 apples") fails there
        ("between 2 and 3", "3", 1.0),  # the last number
    ],
)
def test_numeric_reward_hand_computed(answer: str, gold: str, expected: float) -> None:
    assert call("numeric", [wrap(answer)], answer=[gold]) == [expected]
    assert call("accuracy", [wrap(answer)], answer=[gold], problem_type=["numerical"]) == [expected]


@pytest.mark.parametrize(
    "answer,gold,expected",
    [
        # 1 - min(1, |p - g| / |g|); Video-R1 adds 1e-9 to numerator and denominator (documented difference):
        ("10", "10", 1.0),  # Video-R1: 1 - 1e-9 / (10 + 1e-9) = 0.9999999999
        ("12", "10", 0.8),
        ("7.5", "10", 0.75),
        ("-8", "-10", 0.8),  # |-8 - -10| / |-10| = 0.2
        ("30", "10", 0.0),  # relative error 2, clipped to 1
        ("0", "10", 0.0),
        ("1,500", "1000", 0.5),
        ("no idea", "10", 0.0),
    ],
)
def test_regression_reward_hand_computed(answer: str, gold: str, expected: float) -> None:
    assert call("regression", [wrap(answer)], answer=[gold]) == [pytest.approx(expected, abs=1e-15)]


def test_ocr_reward_edges_hand_computed() -> None:
    # clip(1 - WER, 0, 1), WER = word edit distance / max(1, len(reference words)), as Video-R1
    assert call("ocr", [wrap("")], answer=["STOP here"]) == [0.0]  # 2 deletions / 2
    assert call("ocr", [wrap("STOP")], answer=["STOP here"]) == [0.5]  # 1 deletion / 2
    assert call("ocr", [wrap("stop here")], answer=["STOP here"]) == [0.5]  # case-sensitive: 1 substitution
    assert call("ocr", [wrap("STOP  here\n")], answer=["STOP here"]) == [1.0]  # whitespace split
    assert call("ocr", [wrap("")], answer=[""]) == [1.0]  # 0 / max(1, 0)
    assert call("ocr", [wrap("x")], answer=[""]) == [0.0]  # 1 insertion / 1


def test_multi_choice_soft_reads_letters_not_raw_parts() -> None:
    # TW-GRPO splits the answer on "," after removing spaces: "A C" -> {"AC"} (0), "A," -> {"A", ""} (0);
    # reelrl reads letters (documented difference): {A, C} = Q -> 1, {A} subset of {A, C} -> 1/2.
    opts = [["w", "x", "y", "z"]]
    assert call("multi_choice_soft", [wrap("A C")], answer=["A,C"], options=opts) == [1.0]
    assert call("multi_choice_soft", [wrap("A,")], answer=["A,C"], options=opts) == [0.5]
    # as TW-GRPO: strict subset |P| / |Q|, any wrong option 0
    assert call("multi_choice_soft", [wrap("C")], answer=["A,B,C,D"], options=opts) == [0.25]
    assert call("multi_choice_soft", [wrap("A,B,C,D")], answer=["A,B,C"], options=opts) == [0.0]


# ------------------------------------------------------------------ reward functions


def test_format_reward() -> None:
    comps = [wrap("B"), "<answer>B</answer>", wrap("B") + "<answer>C</answer>", "B"]
    assert call("format", comps) == [1.0, 0.0, 0.0, 0.0]


def test_accuracy_multiple_choice_robustness() -> None:
    answers = ["(B)", "b", "B.", "The answer is B", "B. blue", "C"]
    comps = [wrap(a) for a in answers] + ["The answer is B"]  # last: no tags
    n = len(comps)
    opts = [["r", "b", "g", "y"]] * n
    out = call("accuracy", comps, answer=["B"] * n, problem_type=["multiple_choice"] * n, options=opts)
    assert out == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_accuracy_uses_last_answer_tag() -> None:
    comp = "<think>x</think><answer>A</answer><answer>B</answer>"
    out = call("accuracy", [comp], answer=["B"], problem_type=["multiple_choice"], options=[["x", "y"]])
    assert out == [1.0]
    assert call("format", [comp]) == [0.0]


def test_accuracy_dispatches_per_row() -> None:
    rows = [
        # (completion answer, gold, problem_type, options, time_span, expected)
        ("A, C", "A,C", "multi_choice", ["p", "q", "r", "s"], None, 1.0),
        ("A", "A,C", "multi_choice", ["p", "q", "r", "s"], None, 0.0),  # exact set needed
        ("1,000", "1000", "numerical", None, None, 1.0),
        ("3.004", "3", "numerical", None, None, 1.0),  # rounds to 3.00
        ("3.006", "3", "numerical", None, None, 0.0),  # rounds to 3.01
        ("about 12 m", "10", "regression", None, None, 0.8),  # 1 - 2/10
        ("25", "10", "regression", None, None, 0.0),  # capped
        ("0", "0", "regression", None, None, 1.0),
        ("0.5", "0", "regression", None, None, 0.0),
        ("the cat sat down", "the cat sat", "ocr", None, None, 2 / 3),  # 1 - WER(1/3)
        ("x y z w", "a b", "ocr", None, None, 0.0),  # WER 2 clipped
        ("the cat", "the cat sat", "free_form", None, None, 34 / 45),  # (0.8 + 2/3 + 0.8) / 3
        ("4 to 8", "2-6", "temporal_grounding", None, None, 1 / 3),
        ("[2, 6]", "", "temporal_grounding", None, (2.0, 6.0), 1.0),  # gold from time_span
        ("no idea", "2-6", "temporal_grounding", None, None, 0.0),
    ]
    out = call(
        "accuracy",
        [wrap(r[0]) for r in rows],
        answer=[r[1] for r in rows],
        problem_type=[r[2] for r in rows],
        options=[r[3] for r in rows],
        time_span=[r[4] for r in rows],
        some_unused_column=[0] * len(rows),
    )
    assert out == pytest.approx([r[5] for r in rows])


def test_accuracy_missing_tags_scores_zero_not_none() -> None:
    out = call("accuracy", ["12", "the cat"], answer=["12", "the cat"], problem_type=["numerical", "free_form"])
    assert out == [0.0, 0.0]


def test_accuracy_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="row 0: unknown problem_type 'multiple choice'"):
        call("accuracy", [wrap("B")], answer=["B"], problem_type=["multiple choice"])
    with pytest.raises(KeyError, match="reward 'accuracy' needs the dataset column 'problem_type'"):
        call("accuracy", [wrap("B")], answer=["B"])
    with pytest.raises(ValueError, match="column 'answer' has 1 entries for 2 completions"):
        call("accuracy", [wrap("B"), wrap("C")], answer=["B"], problem_type=["multiple_choice"] * 2)
    with pytest.raises(ValueError, match="gold answer 'ten' is not a number"):
        call("accuracy", [wrap("10")], answer=["ten"], problem_type=["numerical"])


def test_single_type_rewards_apply_to_every_row() -> None:
    # problem_type is not read: "numeric" scores a row whatever its type.
    assert call("numeric", [wrap("3"), wrap("4")], answer=["3", "3"], problem_type=["ocr", "ocr"]) == [1.0, 0.0]
    assert call("choice", [wrap("(c)"), wrap("D")], answer=["C", "C"]) == [1.0, 0.0]
    assert call("multi_choice", [wrap("A and C")], answer=["A,C"], options=[["1", "2", "3"]]) == [1.0]
    assert call("regression", [wrap("-5")], answer=["-4"]) == [pytest.approx(0.75)]
    assert call("mra", [wrap("12"), "12"], answer=["10", "10"]) == [pytest.approx(0.6), 0.0]
    assert call("ocr", [wrap("the cat sat down")], answer=["the cat sat"]) == [pytest.approx(2 / 3)]
    assert call("rouge", [wrap("c b a")], answer=["a b c"]) == [pytest.approx(4 / 9)]  # (1 + 0 + 1/3) / 3
    assert call("tiou", [wrap("2.0 and 6.0 seconds"), wrap("6 to 2")], answer=["2-6", "2-6"]) == [1.0, 0.0]


@pytest.mark.parametrize(
    "pred,gold,expected",
    [
        ("A, C", "A,C", 1.0),  # P == Q
        ("A", "A,C", 0.5),  # strict subset: |P|/|Q| = 1/2
        ("A, C", "A,B,C", 2 / 3),
        ("A, B", "A,C", 0.0),  # a wrong option
        ("A, B, C", "A,C", 0.0),  # superset contains a wrong option
        ("A, E", "A,C", 0.0),  # option beyond the list
        ("none of them", "A,C", 0.0),  # empty prediction
        ("B", "B", 1.0),
    ],
)
def test_multi_choice_soft(pred: str, gold: str, expected: float) -> None:
    out = call("multi_choice_soft", [wrap(pred)], answer=[gold], options=[["w", "x", "y", "z"]])
    assert out == [pytest.approx(expected)]


def test_conversational_completions() -> None:
    conv = [
        [{"role": "assistant", "content": wrap("B")}],
        [{"role": "assistant", "content": [{"type": "text", "text": wrap("C")}]}],
    ]
    assert call("choice", conv, answer=["B", "B"]) == [1.0, 0.0]
    assert call("format", conv) == [1.0, 1.0]


def test_registry_names_and_unknown() -> None:
    expected = {"format", "accuracy", "choice", "multi_choice", "multi_choice_soft", "numeric",
                "regression", "mra", "ocr", "rouge", "tiou"}
    assert expected <= set(REWARDS.names())
    with pytest.raises(KeyError, match="valid names: .*accuracy"):
        REWARDS.get("acuracy")


# ------------------------------------------------------------------ combination


def test_compute_rewards_weighting() -> None:
    # Long-RL weighting: 0.9 * accuracy + 0.1 * format.
    comps = [wrap("B"), "<answer>B</answer>", wrap("C"), "B"]
    cols = {"answer": ["B"] * 4, "problem_type": ["multiple_choice"] * 4, "options": [["a", "b", "c"]] * 4}
    specs = [RewardSpec("accuracy", 0.9), RewardSpec("format", 0.1)]
    total, per = compute_rewards(specs, comps, cols)
    assert total.shape == (4,) and total.dtype == torch.float32
    torch.testing.assert_close(total, torch.tensor([1.0, 0.9, 0.1, 0.0]))
    torch.testing.assert_close(per["accuracy"], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(per["format"], torch.tensor([1.0, 0.0, 1.0, 0.0]))


@pytest.fixture
def user_rewards(tmp_path, monkeypatch):
    """An importable module of user reward functions."""
    (tmp_path / "my_rewards_mod.py").write_text(
        textwrap.dedent(
            """
            def even_only(completions, scale=1.0, **kwargs):
                return [scale if i % 2 == 0 else None for i in range(len(completions))]

            def never(completions, **kwargs):
                return [None] * len(completions)

            def short(completions, **kwargs):
                return [1.0] * (len(completions) - 1)

            def bad_value(completions, **kwargs):
                return ["high"] * len(completions)

            NOT_CALLABLE = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rewards_mod"


def test_compute_rewards_none_is_nan_and_ignored(user_rewards: str) -> None:
    comps = [wrap("B"), wrap("C"), wrap("B")]
    cols = {"answer": ["B"] * 3}
    specs = [RewardSpec(f"{user_rewards}:even_only", 2.0, {"scale": 0.5}), RewardSpec("choice", 1.0)]
    total, per = compute_rewards(specs, comps, cols)
    col = per[f"{user_rewards}:even_only"]
    assert col[0].item() == 0.5 and math.isnan(col[1].item()) and col[2].item() == 0.5
    torch.testing.assert_close(total, torch.tensor([2.0, 0.0, 2.0]))  # 2*0.5 + 1, 0 + 0, 2*0.5 + 1


def test_compute_rewards_errors(user_rewards: str) -> None:
    comps, cols = [wrap("B"), wrap("B")], {"answer": ["B", "B"]}
    msg = r"rows \[0, 1\]: every reward returned None \(rewards: my_rewards_mod:never\)"
    with pytest.raises(ValueError, match=msg):
        compute_rewards([RewardSpec(f"{user_rewards}:never")], comps, cols)
    with pytest.raises(ValueError, match="reward 'my_rewards_mod:short' returned 1 values for 2 completions"):
        compute_rewards([RewardSpec("format"), RewardSpec(f"{user_rewards}:short")], comps, cols)
    with pytest.raises(TypeError, match="reward 'my_rewards_mod:bad_value' returned 'high' for row 0"):
        compute_rewards([RewardSpec(f"{user_rewards}:bad_value")], comps, cols)
    with pytest.raises(ValueError, match="duplicate reward names"):
        compute_rewards([RewardSpec("format"), RewardSpec("format", 2.0)], comps, cols)
    with pytest.raises(ValueError, match="collide with dataset columns"):
        compute_rewards([RewardSpec("choice", kwargs={"answer": ["C", "C"]})], comps, cols)
    with pytest.raises(ValueError, match="column 'answer' has 2 entries for 3 completions"):
        compute_rewards([RewardSpec("choice")], comps + [wrap("B")], cols)
    with pytest.raises(ValueError, match="at least one"):
        compute_rewards([], comps, cols)


def test_resolve_reward_errors(user_rewards: str) -> None:
    assert resolve_reward("format") is REWARDS.get("format")
    with pytest.raises(ImportError, match="cannot import module 'no_such_module_xyz'"):
        resolve_reward("no_such_module_xyz:f")
    with pytest.raises(AttributeError, match="has no attribute 'missing'"):
        resolve_reward(f"{user_rewards}:missing")
    with pytest.raises(TypeError, match="not callable"):
        resolve_reward(f"{user_rewards}:NOT_CALLABLE")
    with pytest.raises(KeyError, match="unknown reward 'nope'"):
        resolve_reward("nope")
