"""MMVU (Zhao et al. 2025, arXiv 2501.12380): expert-level video questions in 27 subjects, 4 disciplines.

Published layout (Hugging Face ``yale-nlp/MMVU``)::

    ROOT/validation.json                  the annotations (a JSON list)
    ROOT/videos/<subject>/<n>.mp4         the videos

Record fields used: ``id``, ``question``, ``question_type``
(``multiple-choice`` / ``open-ended``), ``choices`` (``{"A": ..., ..., "E": ...}``
for multiple choice), ``answer`` (a letter, or free text), ``video`` (its URL
``.../resolve/main/videos/<subject>/<n>.mp4``; the local file is the part after
``resolve/main/``; a ``video_path`` field, as in lmms-eval's export, wins).

Prompt: lmms-eval ``tasks/mmvu`` (``multiple_choice_prompt`` /
``open_ended_prompt``, MMVU's direct-answer prompts), verbatim.

Scoring: MMVU's own script and lmms-eval judge with GPT-4o; reelrl runs
offline and uses lmms-eval's rule-based evaluation (``evaluate_with_rule_based``)
alone. Multiple choice: correct when the first standalone letter A-E (any
case) is the answer, or the answer letter stands alone anywhere, or the
answer's option text occurs in the output, or the letter occurs with one of
the option's words longer than 2 characters (lmms-eval uses the rules alone
for multiple choice too). Open-ended: the rule-based matches (normalised
equality, either a substring of the other, the first numbers within 0.01,
all words of a 2-5 word answer present, equal ``O(...)``); lmms-eval would
ask GPT-4o where these fail, so reelrl's open-ended accuracy is a lower bound;
an empty output is wrong (the reference's substring test would count it right).
Scores: accuracy overall, per discipline (lmms-eval's subject -> discipline
map), per subject and per question type.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

from reelrl.data.answers import extract_choice, extract_tag
from reelrl.data.schema import DataError, VideoRow
from reelrl.eval.bench.base import (
    Benchmark,
    accuracy_by,
    answer_text,
    find_annotations,
    make_row,
    mean,
    read_records,
    require,
    resolve_video,
    unique_ids,
)
from reelrl.eval.bench.registry import BENCHMARKS

MULTIPLE_CHOICE_PROMPT = """
Question:{question}
A: {a}
B: {b}
C: {c}
D: {d}
E: {e}
Visual Information: processed video
Do not generate any intermediate reasoning process. Answer directly with the option letter from the
given choices.
"""
OPEN_ENDED_PROMPT = """
Question:{question}
Visual Information: processed video
Do not generate any intermediate reasoning process. Directly output the final answer.
"""
DISCIPLINES: dict[str, str] = {
    **{s: "Science" for s in ("Biology", "Chemistry", "Modern_Physics", "Astronomy", "Geography",
                              "Materials_Science", "Neurobiology", "Electromagnetism", "Thermodynamics",
                              "Mechanics")},
    **{s: "Engineering" for s in ("Civil_Engineering", "Electrical_Engineering", "Mechanical_Engineering",
                                  "Biomedical_Engineering", "Electronics_and_Communication", "Computer_Science")},
    **{s: "Healthcare" for s in ("Clinical_Medicine", "Basic_Medicine", "Preventive_Medicine", "Pharmacy",
                                 "Dentistry")},
    **{s: "Humanities_and_Social_Science" for s in ("Art", "Literature", "History", "Law", "Economics",
                                                    "Management")},
}
_SUPERSCRIPTS = {"²": "^2", "³": "^3", "¹": "^1", "⁰": "^0", "⁴": "^4", "⁵": "^5", "⁶": "^6", "⁷": "^7",
                 "⁸": "^8", "⁹": "^9"}


def _math(text: str) -> str:
    for sup, caret in _SUPERSCRIPTS.items():
        text = text.replace(sup, caret)
    return text


def _words(text: str) -> list[str]:
    return [w.strip(string.punctuation) for w in text.split() if w.strip(string.punctuation)]


def rule_based_choice(pred: str, answer: str, choices: dict[str, str]) -> bool:
    """lmms-eval's ``evaluate_with_rule_based`` for a multiple-choice question."""
    pred, answer = pred.strip(), answer.strip()
    m = re.search(r"\b([A-E])\b", pred, re.IGNORECASE)
    if m and m.group(1).upper() == answer.upper():
        return True
    if answer.upper() in pred.upper() and re.search(rf"\b{re.escape(answer)}\b", pred, re.IGNORECASE):
        return True
    if answer in choices:
        choice, low = choices[answer].strip().lower(), pred.lower()
        if choice in low:
            return True
        if answer.upper() in pred.upper():
            words = [w for w in (x.strip(string.punctuation) for x in choice.split()) if len(w) > 2]
            if words and any(w in low for w in words):
                return True
    return False


def rule_based_open(pred: str, answer: str) -> bool:
    """lmms-eval's ``evaluate_with_rule_based`` for an open-ended question (without the GPT-4o fallback)."""
    p_norm, a_norm = _math(pred.strip().lower()), _math(answer.strip().lower())
    p, a = " ".join(p_norm.split()), " ".join(a_norm.split())
    if not p:  # the reference's "pred in answer" would count an empty output right
        return False
    if p == a or a in p or p in a:
        return True
    pn, an = re.findall(r"\d+\.?\d*", p_norm), re.findall(r"\d+\.?\d*", a_norm)
    if pn and an and abs(float(an[0]) - float(pn[0])) < 0.01:
        return True
    aw, pw = _words(a), _words(p)
    if 2 <= len(aw) <= 5 and all(w in pw for w in aw if len(w) > 2):
        return True
    po, ao = re.search(r"O\s*\([^)]+\)", p, re.IGNORECASE), re.search(r"O\s*\([^)]+\)", a, re.IGNORECASE)
    return bool(po and ao and _math(po.group(0).lower()) == _math(ao.group(0).lower()))


def _local_video(rec: dict, where: str) -> str:
    if isinstance(rec.get("video_path"), str) and rec["video_path"].strip():
        return rec["video_path"]
    url = require(rec, "video", where)
    return url.split("/resolve/main/", 1)[1] if "/resolve/main/" in url else url


@BENCHMARKS.register("mmvu")
class MMVU(Benchmark):
    name = "mmvu"
    title = "MMVU"
    layout = "validation.json, videos/<subject>/<n>.mp4"
    source = "lmms-eval tasks/mmvu (rule-based scoring)"

    def load(self, root: Path, annotations: Path | None = None, check_videos: bool = True) -> list[VideoRow]:
        path = find_annotations(root, ["validation.json"], annotations, "MMVU")
        rows = []
        for where, rec in read_records(path):
            rid = require(rec, "id", where, (str, int))
            where = f"{where} (id {rid})"
            qtype = require(rec, "question_type", where)
            answer = require(rec, "answer", where, (str, int, float))
            local = _local_video(rec, where)
            parts = local.split("/")
            if len(parts) < 2:
                raise DataError(f"{where}: video {local!r} has no subject folder (videos/<subject>/<n>.mp4)")
            subject = parts[-2]
            fields = {"question_type": qtype, "subject": subject, "discipline": DISCIPLINES.get(subject, "other")}
            video = resolve_video([root / local], where, check_videos)
            common = dict(id=str(rid), video=str(video), question=require(rec, "question", where), task=subject,
                          meta={"bench": self.name, "fields": fields})
            if qtype == "multiple-choice":
                choices = require(rec, "choices", where, dict)
                if sorted(choices) != list("ABCDE") or not all(isinstance(v, str) for v in choices.values()):
                    raise DataError(f"{where}: field 'choices' must map A..E to strings, got {choices!r}")
                rows.append(make_row(where, **common, options=[choices[k] for k in "ABCDE"],
                                     answer=str(answer).strip(), problem_type="multiple_choice"))
            elif qtype == "open-ended":
                rows.append(make_row(where, **common, answer=str(answer), problem_type="free_form"))
            else:
                raise DataError(f"{where}: question_type must be 'multiple-choice' or 'open-ended', got {qtype!r}")
        return unique_ids(rows, path)

    def prompt(self, row: VideoRow) -> str:
        if row.problem_type == "multiple_choice":
            a, b, c, d, e = row.options or ()
            return MULTIPLE_CHOICE_PROMPT.format(question=row.question, a=a, b=b, c=c, d=d, e=e)
        return OPEN_ENDED_PROMPT.format(question=row.question)

    def judge(self, text: str, row: VideoRow, mode: str) -> dict[str, Any]:
        choice = row.problem_type == "multiple_choice"
        if mode == "strict":
            if choice:
                pred = extract_choice(text, 5, "strict")
                return {"pred": pred, "score": float(pred == row.answer)}
            tag = extract_tag(text)
            return {"pred": tag, "score": float(tag is not None and rule_based_open(tag, row.answer))}
        pred = answer_text(text)
        ok = (rule_based_choice(pred, row.answer, dict(zip("ABCDE", row.options or ()))) if choice
              else rule_based_open(pred, row.answer))
        return {"pred": pred, "score": float(ok)}

    def summarize(self, records: list[dict], mode: str) -> dict[str, Any]:
        return {"accuracy": mean([r[mode]["score"] for r in records]),
                **{key: accuracy_by(records, mode, key) for key in ("discipline", "subject", "question_type")}}
