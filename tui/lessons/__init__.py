"""Guided lessons: short sequences of steps that set the app up, say where to look, ask the
learner to predict, and only then reveal what the loaded model measures right now.

A lesson is one TOML file (the built-in ones sit beside this module; `--lesson PATH` reads
a teacher's own). Its format is in docs/lessons.md; in short:

    title = "The causal mask"
    [[steps]]
    prompt = "The cat sat on the mat"   # run if it is not the prompt on screen
    layer = 0                           # optional, as head and query (negative: from the end)
    query = 0
    pane = "attention"                  # the pane to look at; the others are dimmed
    screen = "stages"                   # optional: a deeper screen to open (its id)
    cursor = 3                          # optional: its cursor (the step-through's stage, 0-4)
    look = "..."                        # at most three lines
    ask = "How much weight does the first token put on itself?"
    choices = [["less than half", 0.5], ["more than half, not all", 0.9999], ["all of it", 1.0]]
    measure = "first_token_weight"      # a function of tui/lessons/measures.py
    reveal = "weight {weight:.4f}, entropy {entropy:.2f} bits"
    gpt2_small = "..."                  # optional: what GPT-2 small is known to show, and where

A choice is [text, bound] (the first whose bound is at least the measured `value` is right)
or [text, key] (the one whose key is the measured `value`). Without choices, the learner
types a number and the reveal says how close it was to the measured `value`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt2scope.tui.lessons.measures import MEASURES, PICKS
from gpt2scope.tui.views import SCREEN_BY_ID

HERE = Path(__file__).parent
PANE_IDS = ("embeddings", "attention", "probabilities", "query", "qkv", "continuation")
MAX_LOOK_LINES = 3


class LessonError(ValueError):
    """A lesson file that cannot be used, in one line naming the file and the field."""


@dataclass(frozen=True)
class Step:
    look: str
    ask: str
    measure: str
    reveal: str
    prompt: str | None = None
    layer: int | None = None
    head: int | None = None
    query: int | None = None
    pane: str | None = None
    screen: str | None = None
    cursor: int | None = None  # the screen's cursor: on the step-through, the stage
    pick: str | None = None  # chooses layer and head on the model: a function of PICKS
    choices: tuple[tuple[str, float | str], ...] = ()
    args: dict[str, Any] = field(default_factory=dict)
    gpt2_small: str = ""

    @property
    def asks_for_a_number(self) -> bool:
        return not self.choices


@dataclass(frozen=True)
class Lesson:
    name: str  # the file's stem: what --lesson NAME takes
    title: str
    steps: tuple[Step, ...]


def load_file(path: Path) -> Lesson:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise LessonError(f"{path}: {e}") from e
    steps = data.get("steps")
    if not isinstance(data.get("title"), str) or not isinstance(steps, list) or not steps:
        raise LessonError(f"{path}: a lesson needs a title and at least one [[steps]]")
    return Lesson(path.stem, data["title"], tuple(step(path, i, s) for i, s in enumerate(steps)))


def step(path: Path, index: int, data: dict) -> Step:
    where = f"{path}: step {index + 1}"
    known = {f for f in Step.__dataclass_fields__}
    unknown = set(data) - known
    if unknown:
        raise LessonError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    for name in ("look", "ask", "measure", "reveal"):
        if not isinstance(data.get(name), str):
            raise LessonError(f"{where}: `{name}` must be text")
    if data["measure"] not in MEASURES:
        raise LessonError(f"{where}: no measure {data['measure']!r}: {', '.join(MEASURES)}")
    if data.get("pane") is not None and data["pane"] not in PANE_IDS:
        raise LessonError(f"{where}: pane must be one of {', '.join(PANE_IDS)}")
    if data.get("screen") is not None and data["screen"] not in SCREEN_BY_ID:
        raise LessonError(f"{where}: screen must be one of {', '.join(SCREEN_BY_ID)}")
    if data.get("pick") is not None and data["pick"] not in PICKS:
        raise LessonError(f"{where}: no pick {data['pick']!r}: {', '.join(PICKS)}")
    if data["look"].count("\n") >= MAX_LOOK_LINES:
        raise LessonError(f"{where}: `look` is more than {MAX_LOOK_LINES} lines")
    choices = data.get("choices", [])
    if not all(isinstance(c, list) and len(c) == 2 and isinstance(c[0], str) for c in choices):
        raise LessonError(f"{where}: each choice is [text, bound or key]")
    if len(choices) > 9:
        raise LessonError(f"{where}: at most 9 choices (one digit each)")
    return Step(**{**data, "choices": tuple((text, key) for text, key in choices)})


def built_in() -> tuple[Lesson, ...]:
    """The lessons that ship with gpt2scope, in their files' order (01-tokens.toml, ...)."""
    return tuple(load_file(path) for path in sorted(HERE.glob("*.toml")))


def find(name: str) -> Lesson:
    """A built-in lesson by name (with or without its number: `mask` or `04-mask`), or a
    lesson file by path."""
    path = Path(name)
    if path.suffix == ".toml":
        return load_file(path)
    lessons = built_in()
    for lesson in lessons:
        if name in (lesson.name, lesson.name.split("-", 1)[-1]):
            return lesson
    names = ", ".join(lesson.name.split("-", 1)[-1] for lesson in lessons)
    raise LessonError(f"no lesson {name!r}: {names}, or a path to a .toml file")


def correct_choice(step: Step, value: float | str) -> int:
    """The index of the right choice for the measured value."""
    for i, (_, key) in enumerate(step.choices):
        if isinstance(key, str) and key == value:
            return i
        if not isinstance(key, str) and not isinstance(value, str) and value <= key:
            return i
    return len(step.choices) - 1
