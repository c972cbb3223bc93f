"""Where a learner is in a lesson, and the lesson bar's lines: the step's text, the
question, then the learner's answer against what the model measures."""

from __future__ import annotations

from dataclasses import dataclass, replace

from rich.text import Text

from gpt2scope.tui.lessons import Lesson, Step, correct_choice
from gpt2scope.tui.lessons.measures import Measured
from gpt2scope.tui.views.common import append_if_fits
from gpt2scope.tui.views.page import UNJUSTIFIED

HEADING = "bold"
ASK = "bold"
RIGHT = "bold green"
WRONG = "bold yellow"
DIM = "italic"  # not Rich's dim: the bar must read on a projector, light themes too
HINT = "bold italic"


@dataclass(frozen=True)
class Progress:
    lesson: Lesson
    index: int = 0
    answer: int | float | None = None  # the choice's index, or the number typed
    measured: Measured | None = None  # what the model gave, once revealed
    error: str = ""  # why the reveal could not be measured

    @property
    def step(self) -> Step:
        return self.lesson.steps[self.index]

    @property
    def waiting(self) -> bool:
        """Answered, the reveal not measured yet."""
        return self.answer is not None and self.measured is None and not self.error

    @property
    def last(self) -> bool:
        return self.index + 1 == len(self.lesson.steps)

    def answered(self, answer: int | float) -> Progress:
        return replace(self, answer=answer, measured=None, error="")

    def revealed(self, measured: Measured) -> Progress:
        return replace(self, measured=measured)

    def failed(self, error: str) -> Progress:
        return replace(self, error=error)

    def next(self) -> Progress | None:
        return None if self.last else Progress(self.lesson, self.index + 1)


def verdict(step: Step, answer: int | float, value: float | str) -> tuple[str, str]:
    """How the answer compares with the measured value, and the style to say it in."""
    if step.choices:
        right = correct_choice(step, value)
        if answer == right:
            return "right", RIGHT
        return f"not quite: the model says {right + 1} ({step.choices[right][0]})", WRONG
    value = float(value)
    if value == round(value) and float(answer) == round(float(answer)):
        off = abs(int(answer) - int(value))
        return ("exactly right", RIGHT) if off == 0 else (f"off by {off}", WRONG)
    off = abs(float(answer) - value)
    if off < 0.005:  # as the reveal rounds it: "0.00 from it" would read as a miss
        return "right", RIGHT
    close = off <= max(0.1 * abs(value), 0.05)
    return (f"{'close' if close else 'off'}: {off:.2f} from it", RIGHT if close else WRONG)


def lesson_lines(
    p: Progress,
    width: int,
    is_demo: bool,
    hint: str = "",
    short: bool = False,
    x_leaves: bool = True,
) -> list[Text]:
    """The bar: a heading, what to look at, the question or the reveal, the next key, and
    why the last key did nothing (`hint`). On a `short` screen a revealed step drops what
    to look at, which the learner has read, to leave its pane the height."""
    step = p.step
    lines = [heading(p, width, x_leaves)]
    if not (short and p.measured is not None):
        lines.append(Text(flowing(step.look)))
    if p.answer is None:
        lines.append(Text(step.ask, ASK))
        if step.choices:
            choices = Text()
            for i, (text, _) in enumerate(step.choices):
                choices.append(f"{i + 1} ", ASK)
                choices.append(f"{text}   ")
            lines.append(choices)
        else:
            lines.append(Text("type a number: a digit starts it", DIM))
    elif p.error:
        lines.append(Text(f"could not measure it: {p.error}", WRONG))
    elif p.measured is None:
        lines.append(Text("measuring on the loaded model…", DIM))
    else:
        lines += reveal_lines(p, is_demo)
    if hint:
        lines.append(Text(hint, HINT))
    return [part for line in lines for part in line.wrap(UNJUSTIFIED, width)]


def heading(p: Progress, width: int, x_leaves: bool) -> Text:
    """One line: the lesson's title cut to fit, the step, and the keys when there is room
    (where the screen takes X, leaving is from the panes)."""
    where = f" · step {p.index + 1}/{len(p.lesson.steps)}"
    text = Text(f"Lesson: {p.lesson.title}", HEADING)
    text.truncate(max(width - len(where), 10), overflow="ellipsis")
    text.append(where, HEADING)
    keys = "X leaves" if x_leaves else "esc, then X leaves"
    append_if_fits(text, Text(f"   {keys}, L lists the lessons", DIM), width)
    return text


def flowing(text: str) -> str:
    """A lesson file's text as one paragraph: the bar wraps it to its own width."""
    return " ".join(text.split())


def reveal_lines(p: Progress, is_demo: bool) -> list[Text]:
    step, measured = p.step, p.measured
    said = step.choices[p.answer][0] if step.choices else f"{p.answer:g}"
    text, style = verdict(step, p.answer, measured["value"])
    line = Text(f"You said {said}: ")
    line.append(text, style)
    lines = [line, Text("Measured on this model now:", DIM)]
    lines.append(Text(flowing(step.reveal.format(**measured))))
    if is_demo and step.gpt2_small:
        lines.append(Text("Those are the demo model's numbers. " + flowing(step.gpt2_small), DIM))
    lines.append(
        Text("space: the next step" if not p.last else "the end: L for another lesson", DIM)
    )
    return lines
