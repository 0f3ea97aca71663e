"""Prompt templates: how a row becomes the user turn, the system turn and the SFT target, by stage.

A recipe names one in ``prompt.template``: a registered name (:data:`TEMPLATES`,
``reelrl templates`` lists them), a ``module.path:factory`` of your own
returning a :class:`PromptTemplate`, or a format string holding ``{question}``
(the question with lettered options, reelrl's layout). A checkpoint fine-tuned
with a paper's prompt should be trained further and evaluated with that same
prompt, so the paper recipes name their paper's template.

Registered templates
--------------------
``reelrl``
    reelrl's default: ``{question}\\nThink inside <think></think>, then answer
    inside <answer></answer>.``; options as ``A. text`` lines after the
    question; target ``<think>r</think><answer>a</answer>``; no system turn
    (the chat template's default).
``video_r1``
    Video-R1 (github.com/tulerfeng/Video-R1, ``src/r1-v/src/open_r1/grpo.py``,
    ``sft_video.py``, ``src/eval_bench.py``), exactly: the user text is
    ``QUESTION_TEMPLATE.format(Question=q) + TYPE_TEMPLATE[problem_type]``,
    where a multiple-choice ``q`` is ``problem + "Options:\\n"`` followed by
    ``"A. option\\n"`` per option (Video-R1's data carries the letter in the
    option text; reelrl rows do not, so it is added here) and any other ``q``
    is the problem itself. Training (SFT, RL) uses the training
    ``QUESTION_TEMPLATE`` ("between the <think> </think> tags"), evaluation
    the one of ``eval_bench.py`` ("between the <think> and </think> tags").
    System turn: SFT passes ``"You are a helpful assistant"`` (no period, as
    ``sft_video.py``); RL and eval pass none, so the chat template's default
    applies. SFT target ``process + "\\n" + solution``:
    ``<think>r</think>\\n<answer>a</answer>``. Problem types Video-R1 has no
    format for (``multi_choice``, ``temporal_grounding``) are a data error.
``tw_grpo``
    TW-GRPO (github.com/longmalongma/TW-GRPO, ``src/open_r1/grpo.py``, the
    ``mixed`` question type): ``{Question}  Output the thinking process in
    <think> </think> and final answer (letters separated by , if multiple) in
    <answer> </answer> tags.`` (two spaces), no system turn. TW-GRPO's
    question text already holds its options; reelrl appends them as ``A.
    text`` lines (its data layout is not published beyond that).
``longvila_r1``
    LongVILA-R1 (github.com/NVlabs/Long-RL, ``verl/utils/dataset.py``
    ``QUESTION_TEMPLATE_VIDEO`` for training, ``eval/eval.py`` for
    evaluation, which asks for ``<answer> answer here </answer>`` instead of
    the letter), filled with reelrl's question layout; no system turn.

``video_thinker``
    Video-Thinker (arXiv 2510.23473; its SFT script's ``prepare_dataset``, Appendix D.1), the same in
    every stage ("Both training stages utilize the same prompt template"): its system message (clue blocks
    ``<time>`` ``<caption>`` ``<think>``, then ``<answer>``) and ``QUESTION_TEMPLATE``, whose question is
    ``problem + "Options:\\n"`` and one ``"A. option\\n"`` per option. Its answer clause exists only for
    multiple choice ("the single option letter"); other problem types get the same sentence with their
    answer's form (reelrl's). SFT target ``process + "\\n" + solution``: the trace as written (no outer
    ``<think>``; ``sft.trace: clues`` writes Video-Thinker's blocks), a newline, ``<answer>a</answer>``.
``stvg_r1``
    STVG-R1 (github.com/XiaowZhang00/stvg-r1, ``src/open_r1/trainer/grpo_trainer_video.py``
    ``QUESTION_TEMPLATE``, every stage; no system turn: its ``SYSTEM_PROMPT`` is commented out of the
    conversation), exactly, with the row's ``meta["event"]`` (the event sentence: lower-cased, final period
    removed, as its loader does) for ``[EVENT]``; a row without it is a data error. The text speaks of
    "a red number at its center"; reelrl's labels are black on white (:mod:`reelrl.video.glyphs`).

``served_progress``
    The served progress critic's conversation (``reelrl serve``, :mod:`reelrl.data.progress_prompt`;
    SOLE-R1): the user turn is the goal (the row's question), the row's images as the episode's frames
    (no video), the question; no system turn; target ``<answer>p</answer>``. Rows need ``images`` and
    ``problem_type: progress`` in [0, 1].

Every registered text is written from its repository; tests compare them
with the published strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

from reelrl.data.progress_prompt import PROGRESS_GOAL, PROGRESS_QUESTION
from reelrl.data.schema import LETTERS, DataError, VideoRow
from reelrl.registry import Registry

Stage = Literal["sft", "rl", "eval"]
#: the stages a prompt is built for: SFT targets, RL / DPO rollouts, evaluation
STAGES: tuple[str, ...] = ("sft", "rl", "eval")


def lettered_options(row: VideoRow) -> str:
    """reelrl's layout: the question, then one ``A. text`` line per option."""
    return row.prompt_text()


@dataclass(frozen=True)
class PromptTemplate:
    """One paper's (or reelrl's) prompt convention.

    ``user``: stage -> format string with ``{question}``; ``question``: row ->
    the text put in ``{question}``; ``type_suffix``: problem type -> text
    appended to the user text (Video-R1's answer formats); ``system``: stage
    -> the system message (None = the chat template's default);
    ``separator``: between ``</think>`` and ``<answer>`` in SFT targets; ``wrap_think``: False when the
    reasoning carries its own tags (Video-Thinker's clue blocks) and the target is ``reasoning``,
    the separator, ``<answer>answer</answer>``.
    """

    name: str
    user: dict[str, str]
    question: Callable[[VideoRow], str] = lettered_options
    type_suffix: dict[str, str] | None = None
    system: dict[str, str | None] = field(default_factory=dict)
    separator: str = ""
    wrap_think: bool = True
    #: the row's images (``VideoRow.images``) are an episode's frames, shown as the served progress conversation
    #: (:mod:`reelrl.data.progress_prompt`: goal = the row's question, the frames as images, the question); no video
    frames_as_images: bool = False

    def __post_init__(self) -> None:
        for stage in STAGES:
            if "{question}" not in self.user.get(stage, ""):
                raise ValueError(f"prompt template {self.name!r}: the {stage} text must contain {{question}}")

    def check_row(self, row: VideoRow) -> None:
        """Raise DataError naming the row if this template cannot prompt its problem type (or, for a
        ``frames_as_images`` template, a row without frames or with another answer than a progress in [0, 1])."""
        if self.frames_as_images:
            if not row.images:
                raise DataError(f"row {row.id}: field images: prompt template {self.name!r} shows the row's images "
                                "as the episode's frames, and the row names none")
            if row.problem_type != "progress" or tuple(row.meta.get("progress_range", (0.0, 1.0))) != (0.0, 1.0):
                raise DataError(f"row {row.id}: field problem_type: prompt template {self.name!r} asks the served "
                                "progress question, whose answer is a progress in [0, 1] (problem_type progress, "
                                f"meta.progress_range [0, 1]); got {row.problem_type!r}")
        if self.type_suffix is not None and row.problem_type not in self.type_suffix:
            raise DataError(f"row {row.id}: prompt template {self.name!r} has no answer format for problem_type "
                            f"{row.problem_type!r} (it has: {', '.join(self.type_suffix)})")

    def user_text(self, row: VideoRow, stage: Stage) -> str:
        """The user turn's text for ``row`` at ``stage``."""
        self.check_row(row)
        text = self.user[stage].replace("{question}", self.question(row))
        return text + (self.type_suffix[row.problem_type] if self.type_suffix is not None else "")

    def system_text(self, stage: Stage) -> str | None:
        return self.system.get(stage)

    def target(self, reasoning: str | None, answer: str | None) -> str:
        """The SFT assistant text: ``<think>reasoning</think>`` (if any), the separator, ``<answer>answer</answer>``;
        with ``answer=None`` (a streaming thought) the reasoning alone, ``<think>reasoning</think>``."""
        if answer is None:
            if reasoning is None:
                raise ValueError("an SFT target needs a reasoning or an answer")
            return f"<think>{reasoning}</think>" if self.wrap_think else reasoning
        if reasoning is None:
            return f"<answer>{answer}</answer>"
        if not self.wrap_think:
            return f"{reasoning}{self.separator}<answer>{answer}</answer>"
        return f"<think>{reasoning}</think>{self.separator}<answer>{answer}</answer>"

    def texts(self) -> list[str]:
        """The fixed texts of the template (for a tiny model's tokenizer corpus)."""
        out = list(dict.fromkeys(self.user.values()))
        out += list((self.type_suffix or {}).values()) + [s for s in self.system.values() if s]
        return out


TEMPLATES: Registry[Callable[[], PromptTemplate]] = Registry("prompt template")

REELRL_TEXT = "{question}\nThink inside <think></think>, then answer inside <answer></answer>."


def from_format(text: str, name: str = "custom") -> PromptTemplate:
    """A template from one format string (every stage), reelrl's question layout and target."""
    return PromptTemplate(name, {s: text for s in STAGES})


@TEMPLATES.register("reelrl")
def reelrl() -> PromptTemplate:
    return from_format(REELRL_TEXT, "reelrl")


# --- Video-R1 (tulerfeng/Video-R1): grpo.py / sft_video.py (train), eval_bench.py (eval)
_VR1_HEAD = (
    "{question}\n"
    "Please think about this question as if you were a human pondering deeply. "
    "Engage in an internal dialogue using expressions such as 'let me think', 'wait', 'Hmm', 'oh, I see', "
    "'let's break it down', etc, or other natural language thought expressions "
    "It's encouraged to include self-reflection or verification in the reasoning process. "
)
VIDEO_R1_TRAIN = _VR1_HEAD + (
    "Provide your detailed reasoning between the <think> </think> tags, "
    "and then give your final answer between the <answer> </answer> tags."
)
VIDEO_R1_EVAL = _VR1_HEAD + (
    "Provide your detailed reasoning between the <think> and </think> tags, "
    "and then give your final answer between the <answer> and </answer> tags."
)
#: Video-R1's TYPE_TEMPLATE under reelrl's problem-type names (its keys: multiple choice, numerical, OCR,
#: free-form, regression)
VIDEO_R1_TYPES = {
    "multiple_choice": " Please provide only the single option letter (e.g., A, B, C, D, etc.) within the "
                       "<answer> </answer> tags.",
    "numerical": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
    "ocr": " Please transcribe text from the image/video clearly and provide your text answer within the "
           "<answer> </answer> tags.",
    "free_form": " Please provide your text answer within the <answer> </answer> tags.",
    "regression": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
}


def video_r1_question(row: VideoRow) -> str:
    """Video-R1's question: ``problem + "Options:\\n" + "A. option\\n"...`` for multiple choice, else the problem."""
    if row.problem_type == "multiple_choice" and row.options:
        return row.question + "Options:\n" + "".join(f"{LETTERS[i]}. {o}\n" for i, o in enumerate(row.options))
    return row.question


@TEMPLATES.register("video_r1")
def video_r1() -> PromptTemplate:
    return PromptTemplate("video_r1", {"sft": VIDEO_R1_TRAIN, "rl": VIDEO_R1_TRAIN, "eval": VIDEO_R1_EVAL},
                          question=video_r1_question, type_suffix=VIDEO_R1_TYPES,
                          system={"sft": "You are a helpful assistant"}, separator="\n")


# --- TW-GRPO (longmalongma/TW-GRPO): src/open_r1/grpo.py, question_type "mixed"
TW_GRPO_TEXT = ("{question}  Output the thinking process in <think> </think> and final answer "
                "(letters separated by , if multiple) in <answer> </answer> tags.")


@TEMPLATES.register("tw_grpo")
def tw_grpo() -> PromptTemplate:
    return from_format(TW_GRPO_TEXT, "tw_grpo")


# --- LongVILA-R1 (NVlabs/Long-RL): verl/utils/dataset.py (train), eval/eval.py (eval)
_LONGVILA_HEAD = (
    "You are a helpful assistant. The user asks a question, and then you solves it.\n\n"
    "Please first think deeply about the question based on the given video, and then provide the final answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> "
)
LONGVILA_R1_TRAIN = _LONGVILA_HEAD + "<answer> the letter of your choice (A, B, C, or D) </answer>.\n\n Question: {question}"
LONGVILA_R1_EVAL = _LONGVILA_HEAD + "<answer> answer here </answer>.\n\n Question: {question}"


@TEMPLATES.register("longvila_r1")
def longvila_r1() -> PromptTemplate:
    return PromptTemplate("longvila_r1", {"sft": LONGVILA_R1_TRAIN, "rl": LONGVILA_R1_TRAIN, "eval": LONGVILA_R1_EVAL})


# --- Video-Thinker (arXiv 2510.23473): its SFT script's system_message and QUESTION_TEMPLATE (Appendix D.1)
VIDEO_THINKER_SYSTEM = (
    "You are an expert video analyst tasked with solving problems based on video content. "
    "When answering a question about a video, you should carefully observe and analyze important visual clues "
    "from the videos to answer. "
    "For each important segment you notice, first observe the key visual elements, then analyze their "
    "significance using the following format: "
    "specify the time range with `<time>start_time-end_time</time>`, "
    "describe the key visual clues with `<caption>Description of key visual clues</caption>`, "
    "and provide your analysis about what this means with `<think>Your analysis and thoughts about this "
    "segment</think>`. "
    "Throughout your analysis, think about the question as if you were a human pondering deeply, "
    "engaging in an internal dialogue using natural thought expressions such as such as 'let me think', 'wait', "
    "'Hmm', 'oh, I see', 'let's break it down', etc, or other natural language thought expressions. "
    "After examining the key visual clues, continue with deeper reasoning that connects your observations to the "
    "answer. "
    "Self-reflection or verification in your reasoning process is encouraged when necessary, "
    "though if the answer is straightforward, you may proceed directly to the conclusion. "
    "Finally, conclude by placing your final answer in `<answer> </answer>` tags."
)
VIDEO_THINKER_USER = (
    "{question}\n\n"
    "Please analyze the video carefully by identifying key segments and their important visual clues within "
    "`<time> </time>`, `<caption> </caption>`, `<think> </think>` tags "
    "then conduct deep analysis and reasoning to arrive at your answer to the question, "
)
_VT_TAIL = " within the `<answer> </answer>` tags.Follow the format specified in the instructions."
#: the clause after VIDEO_THINKER_USER: Video-Thinker's own for multiple choice (its only type), reelrl's for others
VIDEO_THINKER_TYPES = {
    "multiple_choice": "finally provide only the single option letter (e.g., A, B, C, D, E, F etc.)" + _VT_TAIL,
    "multi_choice": "finally provide only the option letters separated by commas (e.g., A,C)" + _VT_TAIL,
    "numerical": "finally provide only the numerical value (e.g., 42 or 3.14)" + _VT_TAIL,
    "regression": "finally provide only the numerical value (e.g., 42 or 3.14)" + _VT_TAIL,
    "ocr": "finally provide only the transcribed text" + _VT_TAIL,
    "free_form": "finally provide only your text answer" + _VT_TAIL,
    "temporal_grounding": "finally provide only the start and end time in seconds (e.g., 2.5-7)" + _VT_TAIL,
    "box": "finally provide only the box [x1, y1, x2, y2] in pixels" + _VT_TAIL,
}


def video_thinker_question(row: VideoRow) -> str:
    """Video-Thinker's question: ``problem + "Options:\n" + "A. option\n"...`` when the row has options."""
    if row.options:
        return row.question + "Options:\n" + "".join(f"{LETTERS[i]}. {o}\n" for i, o in enumerate(row.options))
    return row.question


@TEMPLATES.register("video_thinker")
def video_thinker() -> PromptTemplate:
    return PromptTemplate("video_thinker", {s: VIDEO_THINKER_USER for s in STAGES}, question=video_thinker_question,
                          type_suffix=VIDEO_THINKER_TYPES, system={s: VIDEO_THINKER_SYSTEM for s in STAGES},
                          separator="\n", wrap_think=False)


# --- VST (Video Streaming Thinking, github.com/1ranGuan/VST; the streaming turn text of algorithms.md): the first turn is the first clip's header
def stream_header(row: VideoRow) -> str:
    """The first turn of a streaming episode: the row's question as :mod:`reelrl.envs.streaming` rewrote it (the first
    clip's ``Time=s-e s.`` header), without options (they come with the question turn)."""
    return row.question


@TEMPLATES.register("vst")
def vst() -> PromptTemplate:
    return PromptTemplate("vst", {s: "{question}" for s in STAGES}, question=stream_header)


# --- STVG-R1 (XiaowZhang00/stvg-r1): src/open_r1/trainer/grpo_trainer_video.py QUESTION_TEMPLATE, [EVENT] -> {question}
STVG_R1_TEXT = (
    "Each object in the video is marked with a red number at its center, representing its object ID. "
    'To accurately pinpoint the event "{question}" in the video:\n\n'
    "1.Determine the precise time period of the event occurs.\n\n"
    "2.Identify which object ID is corresponding to the described event.\n\n"
    "Output your thought process within the <think> </think> tags, including both a temporal analysis "
    '(e.g., specific timestamps "xx.xx" or time ranges "xx.xx to xx.xx") and a spatial analysis '
    '(e.g., object ID "xx").\n\n'
    "Then, provide the start and end times (in seconds, precise to two decimal places), and object ID in the "
    'format "Target ID: [ID], Time range: [start time to end time]" within the <answer> </answer> tags. '
    'For example: "Target ID: 1, Time range: 12.54 to 17.83".'
)


def stvg_r1_question(row: VideoRow) -> str:
    """STVG-R1's ``[EVENT]``: the row's ``meta["event"]`` sentence."""
    event = row.meta.get("event")
    if not isinstance(event, str) or not event.strip():
        raise DataError(f"row {row.id}: prompt template 'stvg_r1' needs the event sentence in meta.event")
    return event


@TEMPLATES.register("stvg_r1")
def stvg_r1() -> PromptTemplate:
    return PromptTemplate("stvg_r1", {s: STVG_R1_TEXT for s in STAGES}, question=stvg_r1_question)


# --- the served progress critic (reelrl serve; SOLE-R1): the conversation of reelrl.data.progress_prompt
SERVED_PROGRESS_TEXT = PROGRESS_GOAL.replace("{goal}", "{question}") + PROGRESS_QUESTION


@TEMPLATES.register("served_progress")
def served_progress() -> PromptTemplate:
    """``reelrl serve``'s conversation: goal (the row's question), the row's images as the episode's frames,
    the question; no system turn (the chat template's default); target ``<answer>p</answer>``."""
    return PromptTemplate("served_progress", {s: SERVED_PROGRESS_TEXT for s in STAGES}, frames_as_images=True)


def get_template(spec: str | PromptTemplate) -> PromptTemplate:
    """A template from a registered name, ``module:factory``, or a format string holding ``{question}``."""
    if isinstance(spec, PromptTemplate):
        return spec
    if "{question}" in spec:
        return from_format(spec)
    tpl = TEMPLATES.resolve(spec)()
    if not isinstance(tpl, PromptTemplate):
        raise TypeError(f"prompt template {spec!r}: the factory returned {type(tpl).__name__}, not a PromptTemplate")
    return tpl
