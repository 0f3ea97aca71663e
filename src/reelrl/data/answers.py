"""Answer extraction from model completions: tags, letters, numbers, time spans.

Every parser here is a pure function of a string that returns ``None`` when it
cannot find an answer it is confident about, never a guess. Rewards turn
``None`` into 0 accuracy; the evaluation code reports it as "unparsed".

The completion format (algorithms.md, "Shared pieces") is::

    <think> reasoning </think> <answer> final answer </answer>

Choice answers can be read in two modes (:func:`extract_choice`): ``"strict"``
(the ``<answer>`` tag is required and parsed by :func:`parse_choice`; what the
rewards use) and ``"benchmark"`` (Video-MME's official
``extract_characters_regex``, :func:`videomme_letter`, applied to the tag's
content or, without tags, to the whole output; what official benchmark scripts
report).
"""

from __future__ import annotations

import re
from typing import Literal, Sequence

from reelrl.data.schema import LETTERS, VideoRow
from reelrl.data.spans import parse_span, parse_time

__all__ = [
    "EXTRACTION_MODES",
    "ExtractionMode",
    "VIDEOMME_ANSWER_PREFIXES",
    "claims",
    "extract_choice",
    "videomme_letter",
    "final_claim",
    "normalised_answer",
    "extract_tag",
    "has_format",
    "parse_choice",
    "parse_choices",
    "parse_number",
    "parse_span",
    "parse_time",
]

_FORMAT_RE = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)


def extract_tag(text: str, tag: str = "answer") -> str | None:
    """Content of the LAST ``<tag>...</tag>`` pair in ``text``, stripped; ``None`` if absent.

    An opening tag without a closing one does not count.
    """
    matches = re.findall(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", text, flags=re.DOTALL)
    return matches[-1].strip() if matches else None


def has_format(text: str) -> bool:
    """True when ``text`` is exactly ``<think>...</think> <answer>...</answer>``.

    Whitespace around and between the two blocks is allowed; anything else
    outside them, or a second copy of any of the four tags, makes it False.
    """
    if _FORMAT_RE.fullmatch(text) is None:
        return False
    return all(text.count(t) == 1 for t in ("<think>", "</think>", "<answer>", "</answer>"))


# ---------------------------------------------------------------- choice letters

# Words after which a standalone "A" / "I" is still read as an option letter ("A is right").
_OPTION_FOLLOWERS = frozenset({"and", "or", "is", "was", "seems", "fits", "matches", "because", "since"})
_OPEN = r"[\(\[]"
_CLOSE = r"[\)\]]"


def _valid(n_options: int) -> str:
    if not 1 <= n_options <= len(LETTERS):
        raise ValueError(f"n_options must be in 1..{len(LETTERS)}, got {n_options}")
    return LETTERS[:n_options]


def parse_choice(text: str, n_options: int) -> str | None:
    """One option letter (upper case) among the first ``n_options``, or ``None``.

    Rules, in order of precedence (the first rule that yields a valid letter wins):

    1. The whole text is a letter, optionally bracketed and/or followed by
       "." or ":" -- ``"B"``, ``"b"``, ``"(B)"``, ``"[b]"``, ``"B."``, ``"B)"``.
    2. The text starts with a letter and a delimiter, then the option text --
       ``"B. red"``, ``"(B) red"``, ``"b) red"``, ``"B: red"``. A letter followed
       only by a space (``"A ball"``) does not match this rule, and neither
       does a hedge naming another bracketed letter (``"(A) or (C)"``).
    3. An explicit phrase; the last one wins -- ``"answer is B"``,
       ``"answer: (b)"``, ``"Option B"``, ``"choice C"``. Without brackets the
       letter must be upper case (``"the answer is a dog"`` is no answer).
    4. A bracketed letter anywhere (``"... so (C) fits"``) when exactly one
       distinct valid bracketed letter occurs.
    5. A standalone upper-case letter anywhere, when exactly one distinct valid
       one occurs. ``"A"`` and ``"I"`` followed by a lower-case word are read
       as English words ("A ball", "I think"), not as options, unless that word
       is one of a few verbs / conjunctions ("A is right", "A and C").

    Letters outside the first ``n_options`` are ignored by every rule.
    """
    valid = _valid(n_options)
    s = text.strip()

    def ok(letter: str) -> str | None:
        # re.IGNORECASE lets [A-Za-z] match "ſ", "ı", "İ" and the Kelvin sign, whose upper() can be ASCII.
        up = letter.upper() if letter.isascii() else ""
        return up if up and up in valid else None

    m = re.fullmatch(rf"{_OPEN}?\s*([A-Za-z])\s*{_CLOSE}?\s*[.:]?", s)
    if m and (r := ok(m.group(1))):
        return r
    m = re.match(rf"{_OPEN}?([A-Za-z])(?:{_CLOSE}|[.:])\s*\S", s)
    if m and (r := ok(m.group(1))):
        others = {ok(x) for x in re.findall(rf"{_OPEN}\s*([A-Za-z])\s*{_CLOSE}", s[m.end() - 1 :])} - {None, r}
        if not others:  # "(A) or (C)" is a hedge, not an answer
            return r
    phrase = re.compile(
        r"\b(?:answer|option|choice)s?\b(?:\s*(?:is|are|:|=))*\s*(?:(?:option|choice)\s*)?"
        rf"(?:{_OPEN}\s*([A-Za-z])\s*{_CLOSE}|([A-Z])(?![A-Za-z]))",
        flags=re.IGNORECASE,
    )
    found = []
    for m in phrase.finditer(s):
        letter = m.group(1) or m.group(2)
        # IGNORECASE also relaxes [A-Z] in group 2; re-impose upper case there.
        if m.group(2) is not None and not m.group(2).isupper():
            continue
        if ok(letter):
            found.append(letter.upper())
    if found:
        return found[-1]
    bracketed = {ok(x) for x in re.findall(rf"{_OPEN}\s*([A-Za-z])\s*{_CLOSE}", s)} - {None}
    if len(bracketed) == 1:
        return bracketed.pop()
    loose = set()
    for m in re.finditer(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])", s):
        nxt = re.match(r" ([a-z]+)", s[m.end() :])
        if m.group(1) in "AI" and nxt and nxt.group(1) not in _OPTION_FOLLOWERS:
            continue
        if ok(m.group(1)):
            loose.add(m.group(1))
    if len(loose) == 1:
        return loose.pop()
    return None


def parse_choices(text: str, n_options: int) -> set[str] | None:
    """A set of option letters for multi-select answers, or ``None``.

    Rules, in order:

    1. Every token is a (bracketed) letter, with separators ``,`` ``;`` ``/``
       ``&`` whitespace or the word "and"; the words "option(s)", "choice(s)",
       "answer(s) is/are" are ignored -- ``"A, C"``, ``"A and C"``,
       ``"(A)(C)"``, ``"Options A and C"``.
    2. A run of distinct upper-case letters -- ``"AC"``.
    3. Comma / semicolon / newline separated parts that each parse with
       :func:`parse_choice` -- ``"A. red, C. blue"``.
    4. A single letter by :func:`parse_choice` -- ``"The answer is B"`` -> ``{"B"}``.

    A letter list that names a letter beyond the options (``"A, E"`` with four
    options) gives ``None``: it is a wrong answer, not a partial one.
    """
    valid = _valid(n_options)
    s = text.strip()
    if not s:
        return None
    body = re.sub(r"\b(?:the\s+)?answers?\s*(?:is|are|:)?", " ", s, flags=re.IGNORECASE)
    body = re.sub(r"\b(?:options?|choices?|and)\b", " ", body, flags=re.IGNORECASE)
    tokens = [t for t in re.split(r"[\s,;/&()\[\]]+|\.(?=\s|$)", body) if t]
    if tokens and all(len(t) == 1 and t.isalpha() for t in tokens):
        # A list of letters: one outside the options (or not an ASCII letter: "ı", "ﬅ") is a wrong answer, not noise.
        return {t.upper() for t in tokens} if all(t.isascii() and t.upper() in valid for t in tokens) else None
    if re.fullmatch(r"[A-Z]{2,}", s) and len(set(s)) == len(s) and all(c in valid for c in s):
        return set(s)
    parts = [p for p in re.split(r"[,;\n]+", s) if p.strip()]
    if len(parts) > 1:
        letters = [parse_choice(p, n_options) for p in parts]
        if all(letters):
            return {x for x in letters if x}
    one = parse_choice(s, n_options)
    return {one} if one else None


# ------------------------------------------------------- benchmark-style extraction

ExtractionMode = Literal["strict", "benchmark"]
EXTRACTION_MODES: tuple[str, ...] = ("strict", "benchmark")

VIDEOMME_ANSWER_PREFIXES: tuple[str, ...] = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option isThe correct option is",
    "Best answer:Best option:",
)
"""Video-MME's answer prefixes, as its official scorer sees them.

The list in ``extract_characters_regex`` (Video-MME's ``eval_your_results.py``
and lmms-eval's ``tasks/videomme/utils.py``) misses two commas, so Python joins
"The best option is" with "The correct option is" and "Best answer:" with
"Best option:": those four phrases are never removed on their own. They are
written here joined, as the reference strings are.
"""


def videomme_letter(text: str, letters: str = "ABCD") -> str:
    """Video-MME's official ``extract_characters_regex``; ``""`` when it finds no letter.

    Verbatim: strip the text; delete every occurrence (anywhere, case-sensitive)
    of each :data:`VIDEOMME_ANSWER_PREFIXES` entry in order; if more than 10
    words remain and no letter of ``letters`` occurs, return ``""``; otherwise
    return the first character of ``[letters]`` in the text (an upper-case
    letter anywhere, even inside a word: "Answer: D" gives "A", "Considering
    the motion, B" gives "C"), or ``""``. (The 10-word test cannot change the
    result: without a letter the search returns ``""`` anyway.)

    Args:
        text: the model output (or the content of its ``<answer>`` tag).
        letters: the letter class; the reference's is ``"ABCD"`` (Video-MME
            has four options).
    """
    s = text.strip()
    for prefix in VIDEOMME_ANSWER_PREFIXES:
        s = s.replace(prefix, "")
    letter_class = f"[{letters}]"
    if len(s.split()) > 10 and not re.search(letter_class, s):
        return ""
    match = re.search(letter_class, s)
    return "" if match is None else match[0]


def extract_choice(text: str, n_options: int, mode: ExtractionMode = "strict") -> str | None:
    """The option letter a whole completion answers, or ``None``, in one of two modes.

    ``"strict"`` (training, and the ``accuracy`` of evaluation): the text of
    the last ``<answer>`` tag read by :func:`parse_choice`; no tag, no answer.

    ``"benchmark"``: what an official benchmark script would extract --
    :func:`videomme_letter` on the last ``<answer>`` tag's content, or on the
    whole output when it has no such tag. The letter class is Video-MME's
    ``ABCD`` for rows of up to four options, widened to the first
    ``n_options`` letters for rows with more (the reference has no such rows);
    a letter beyond a 2- or 3-option row's options is returned, as the
    reference returns it, and is then simply wrong. Video-MME's official
    script drops rows with no extracted letter from its denominator, lmms-eval
    counts them as wrong; a ``None`` here is wrong (lmms-eval's choice).

    Raises:
        ValueError: an unknown ``mode`` or ``n_options`` outside 1..26.
    """
    valid = _valid(n_options)
    if mode not in EXTRACTION_MODES:
        raise ValueError(f"unknown extraction mode {mode!r}; valid: {', '.join(EXTRACTION_MODES)}")
    answer = extract_tag(text)
    if mode == "strict":
        return None if answer is None else parse_choice(answer, n_options)
    letters = LETTERS[: max(4, len(valid))]
    return videomme_letter(text if answer is None else answer, letters) or None


# ---------------------------------------------------------------------- numbers

_WORD_NUMBERS = {
    w: float(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
# A number: optional sign (not glued to a word), then "1,000,000.5", "12.5", "3" or ".5",
# optional exponent. Never starts inside another number.
_NUM_RE = re.compile(
    r"(?:(?<![\w.])[-+])?(?<![\d.])"
    r"(?:\d{1,3}(?:,\d{3})+(?![\d])(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:[eE][-+]?\d+)?"
)
_WORD_RE = re.compile(r"\b(" + "|".join(_WORD_NUMBERS) + r")\b", re.IGNORECASE)


def parse_number(text: str) -> float | None:
    """The LAST number written in ``text``, or ``None``.

    Digits take precedence over words: the last digit number if there is one
    ("3", "3.0", "-2.5", "1,000", "about 7 times", "1e3"), otherwise the last
    number word among zero..twenty ("five"). Thousands commas need groups of
    exactly three digits; "1,2,3" is three numbers (the result is 3).
    """
    nums = _NUM_RE.findall(text)
    if nums:
        return float(nums[-1].replace(",", ""))
    # re.IGNORECASE also matches look-alikes ("ſix", "FİVE"), which are not number words.
    words = [w.lower() for w in _WORD_RE.findall(text) if w.lower() in _WORD_NUMBERS]
    if words:
        return _WORD_NUMBERS[words[-1]]
    return None


_LETTER_CLAIM = re.compile(
    r"\b(?:answer|option|choice)\s*(?:is\s*|:\s*)?[\(\[]?\s*([A-Z])\s*[\)\]]?(?![A-Za-z])|[\(\[]([A-Z])[\)\]]"
)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w]|\.\d)")


# ------------------------------------------------------------------ claims about a row's answer


def _option_patterns(options: Sequence[str]) -> list[tuple[re.Pattern, str]]:
    """Regexes for each option's text (longest first), mapped to its letter."""
    order = sorted(range(len(options)), key=lambda i: -len(options[i]))
    return [
        (re.compile(rf"(?<![\w.]){re.escape(options[i].strip())}(?![\w]|\.\d)", re.IGNORECASE), LETTERS[i])
        for i in order
        if options[i].strip()
    ]


def _number_key(x: float) -> str:
    return f"{round(x, 2):g}"


def claims(text: str, row: VideoRow) -> list[tuple[int, str]]:
    """Claims ``(position, normalised claim)`` that ``text`` makes about ``row``'s answer, in order.

    ``multiple_choice``: each mention of an option text (word-bounded, numbers
    not followed by a decimal part) or of a letter in "answer/option/choice
    X" or "(X)" form -> the letter. ``numerical`` / ``regression`` / ``progress``: each
    number -> rounded to 2 decimals. Other types: no claims.
    """
    found: list[tuple[int, str]] = []
    if row.problem_type == "multiple_choice" and row.options:
        taken: list[tuple[int, int]] = []
        for rx, letter in _option_patterns(row.options):
            for m in rx.finditer(text):
                if any(s < m.end() and m.start() < e for s, e in taken):
                    continue  # inside a longer option's match
                taken.append((m.start(), m.end()))
                found.append((m.start(), letter))
        valid = LETTERS[: len(row.options)]
        for m in _LETTER_CLAIM.finditer(text):
            letter = m.group(1) or m.group(2)
            if letter in valid:
                found.append((m.start(), letter))
    elif row.problem_type in ("numerical", "regression", "progress"):
        found = [(m.start(), _number_key(float(m.group(0)))) for m in _NUMBER.finditer(text)]
    return sorted(found)


def final_claim(think: str, row: VideoRow) -> str | None:
    """The last claim of the reasoning (see :func:`claims`), or None."""
    found = claims(think, row)
    return found[-1][1] if found else None


def normalised_answer(answer: str | None, row: VideoRow) -> str | None:
    """The ``<answer>`` as a letter (choice) or a rounded number (numeric), else the stripped text."""
    if answer is None:
        return None
    if row.problem_type == "multiple_choice" and row.options:
        letter = parse_choice(answer, len(row.options))
        if letter is None:
            found = claims(answer, row)
            letter = found[-1][1] if found else None
        return letter
    if row.problem_type in ("numerical", "regression", "progress"):
        x = parse_number(answer)
        return None if x is None else _number_key(x)
    return answer.strip()
