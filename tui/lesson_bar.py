"""The lesson bar under the panes, and the list of lessons (L). The bar draws a Progress
(tui/lessons/progress.py); a number answer is typed in its own input."""

from __future__ import annotations

from functools import partial

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from gpt2scope.tui.lessons import Lesson, built_in
from gpt2scope.tui.lessons.measures import MEASURES, Measured
from gpt2scope.tui.lessons.progress import Progress, lesson_lines
from gpt2scope.tui.session import Scope
from gpt2scope.tui.views.common import count


class LessonBar(Vertical):
    progress: reactive[Progress | None] = reactive(None, repaint=False)
    is_demo: reactive[bool] = reactive(False, repaint=False)

    def compose(self) -> ComposeResult:
        yield Static(id="lesson-text")
        yield Input(
            placeholder="your answer, a number; enter gives it", compact=True, id="lesson-number"
        )

    def watch_progress(self) -> None:
        self.draw()

    def on_resize(self) -> None:
        self.draw()

    def draw(self) -> None:
        p = self.progress
        self.display = p is not None
        if p is None:
            return
        width = max(self.content_size.width, 20)
        lines = lesson_lines(p, width, self.is_demo)
        text = Text("\n").join(lines)
        self.query_one("#lesson-text", Static).update(text)
        number = self.query_one("#lesson-number", Input)
        number.display = p.step.asks_for_a_number and p.answer is None


class LessonList(ModalScreen[Lesson | None]):
    """Pick a lesson; esc leaves the list."""

    BINDINGS = [Binding("escape", "dismiss", "close", key_display="esc")]

    def __init__(self, lessons: tuple[Lesson, ...]) -> None:
        super().__init__()
        self.lessons = lessons

    def compose(self) -> ComposeResult:
        options = [
            Option(f"{i + 1}. {lesson.title}  ({count(len(lesson.steps), 'step')})", id=lesson.name)
            for i, lesson in enumerate(self.lessons)
        ]
        yield OptionList(*options, id="lesson-list")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.border_title = "Lessons: enter starts one, esc closes"
        options.focus()

    def on_option_list_option_selected(self, message: OptionList.OptionSelected) -> None:
        self.dismiss(self.lessons[message.option_index])


class LessonActions:
    """The ScopeApp's lesson keys (L, 1-9, space, X) and what a step sets up: the prompt,
    the layer, head and query, the pane to look at (the others dimmed). The reveal is
    measured in a worker once the step's prompt has run, on the run on screen."""

    lesson: Progress | None = None
    _measuring = False
    _set_up = False  # the step's layer, head and query are set (after its prompt ran)

    def action_lessons(self) -> None:
        self.push_screen(LessonList(built_in()), self.start_lesson)

    def start_lesson(self, lesson: Lesson | None) -> None:
        if lesson is not None:
            self.lesson = Progress(lesson)
            self.set_up_step()

    def set_up_step(self) -> None:
        step = self.lesson.step
        self._set_up = False
        if step.prompt is not None and step.prompt != self.session.prompt:
            self.show_prompt(step.prompt)
        self.dim_panes(step.pane)
        # Focused, the step's pane is the one z zooms and the arrows scroll.
        self.screen_stack[0].query_one(f"#{step.pane or 'attention'}").focus()
        self.show_lesson()
        self.follow_lesson()

    def step_ready(self) -> bool:
        """The step's prompt has run and is on screen."""
        p, scope = self.lesson, self.scope
        if p is None or self.outstanding or scope is None or scope.view is None:
            return False
        return p.step.prompt is None or self.session.prompt == p.step.prompt

    def follow_lesson(self) -> None:
        """Once the step's prompt is on screen: its selection, then a pending reveal."""
        if not self.step_ready():
            return
        if not self._set_up:
            self._set_up = True
            self.select_for_step()
        self.measure_when_ready()

    def select_for_step(self) -> None:
        step, config = self.lesson.step, self.model.config
        changes: dict[str, object] = {}
        if step.layer is not None:
            changes["layer"] = min(step.layer, config.n_layer - 1)
        if step.head is not None:
            changes["head"] = min(step.head, config.n_head - 1)
        if step.query is not None:
            changes["query"] = None if step.query < 0 else step.query
        if changes:
            self.change(**changes)

    def dim_panes(self, pane: str | None) -> None:
        for widget in self.screen_stack[0].query(".pane"):
            widget.set_class(pane is not None and widget.id != pane, "dimmed")

    def show_lesson(self) -> None:
        bar = self.screen_stack[0].query_one(LessonBar)
        bar.is_demo = self.session.info.is_demo
        bar.progress = self.lesson
        p = self.lesson
        if p is not None and p.step.asks_for_a_number and p.answer is None:
            bar.query_one("#lesson-number", Input).focus()

    def action_lesson_answer(self, choice: int) -> None:
        p = self.lesson
        if p.answer is not None or not 1 <= choice <= len(p.step.choices):
            return
        self.answer_lesson(choice - 1)

    def lesson_number(self, text: str) -> None:
        try:
            number = float(text)
        except ValueError:
            self.notify(f"{text!r} is not a number", severity="warning", markup=False)
            return
        self.answer_lesson(number)
        self.focus_panes()

    def answer_lesson(self, answer: int | float) -> None:
        self.lesson = self.lesson.answered(answer)
        self.show_lesson()
        self.follow_lesson()

    def measure_when_ready(self) -> None:
        """After the step's prompt has run and its selection is made: the reveal is of
        what is on screen."""
        p = self.lesson
        if p is None or not p.waiting or self._measuring or not self._set_up:
            return
        if not self.step_ready():
            return
        self._measuring = True
        work = partial(self.measure_lesson, p, self.session.scope())
        self.run_worker(work, thread=True, group="lesson", exit_on_error=False)

    def measure_lesson(self, p: Progress, scope: Scope) -> None:
        try:
            measured, error = MEASURES[p.step.measure](scope, p.step.args), ""
        except Exception as e:  # said in the bar: a lesson file can ask what a model lacks
            measured, error = None, f"{type(e).__name__}: {e}"
        self.call_from_thread(self.lesson_measured, p, measured, error)

    def lesson_measured(self, p: Progress, measured: Measured | None, error: str) -> None:
        self._measuring = False
        if self.lesson is not p:
            return
        self.lesson = p.failed(error) if measured is None else p.revealed(measured)
        self.show_lesson()

    def action_lesson_next(self) -> None:
        p = self.lesson
        if p.answer is None:
            self.notify("answer first: the model's numbers come after your guess", timeout=3)
        elif p.next() is None:
            self.notify("that was the lesson's last step: L for another, X leaves", timeout=3)
        else:
            self.lesson = p.next()
            self.set_up_step()

    def action_lesson_leave(self) -> None:
        self.lesson = None
        self.dim_panes(None)
        self.show_lesson()
