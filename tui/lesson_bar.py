"""The lesson bar under the panes (and on a deeper screen a step opens), and the list of
lessons (L). The bar draws a Progress (tui/lessons/progress.py); a number answer is typed
in its own input, which a digit key opens."""

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
from gpt2scope.tui.lessons.measures import MEASURES, PICKS, Measured
from gpt2scope.tui.lessons.progress import Progress, lesson_lines
from gpt2scope.tui.session import Scope
from gpt2scope.tui.views.common import count


class LessonNumber(Input):
    """Where a number answer is typed: enter gives it, esc puts it away unsent, so the
    app's keys (] m l ...) work again while the learner looks before answering."""

    BINDINGS = [Binding("escape", "put_away", "cancel answer", key_display="esc")]

    def action_put_away(self) -> None:
        self.value = ""
        self.app.focus_after_lesson_number()


class LessonBar(Vertical):
    progress: reactive[Progress | None] = reactive(None, repaint=False)
    is_demo: reactive[bool] = reactive(False, repaint=False)
    hint: reactive[str] = reactive("", repaint=False)  # why the last lesson key did nothing

    def compose(self) -> ComposeResult:
        yield Static(classes="lesson-text")
        yield LessonNumber(
            placeholder="enter gives it, esc cancels",
            compact=True,
            select_on_focus=False,  # the digit that opened it stays, the next one follows
            classes="lesson-number",
        )

    def watch_progress(self) -> None:
        self.hint = ""
        self.draw()

    def watch_hint(self) -> None:
        self.draw()

    def on_resize(self) -> None:
        self.draw()

    def draw(self) -> None:
        p = self.progress
        self.display = p is not None
        if p is None:
            return
        width = max(self.content_size.width, 20)
        # On a short screen (the app's breakpoint) a revealed step gives its pane the room.
        short = self.screen.has_class("-short")
        lines = lesson_lines(p, width, self.is_demo, self.hint, short, self.x_leaves())
        self.query_one(".lesson-text", Static).update(Text("\n").join(lines))
        number = self.query_one(LessonNumber)
        number.display = p.step.asks_for_a_number and p.answer is None
        if not number.display:
            number.value = ""

    def x_leaves(self) -> bool:
        """X is the app's leave key unless the screen the bar is on binds it (the
        contributions screen: the previous target)."""
        active = self.screen.active_bindings.get("X")
        return active is None or active.node is self.app


class LessonList(ModalScreen[Lesson | None]):
    """Pick a lesson with its digit or enter; esc leaves the list."""

    BINDINGS = [
        Binding("escape", "dismiss", "close", key_display="esc"),
        *(Binding(str(n), f"pick({n})", "start", show=False) for n in range(1, 10)),
    ]

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
        options.border_title = "Lessons: a digit or enter starts one, esc closes"
        options.focus()

    def action_pick(self, n: int) -> None:
        if n <= len(self.lessons):
            self.dismiss(self.lessons[n - 1])

    def on_option_list_option_selected(self, message: OptionList.OptionSelected) -> None:
        self.dismiss(self.lessons[message.option_index])


class LessonActions:
    """The ScopeApp's lesson keys (L, 0-9, space, X) and what a step sets up: the prompt,
    the layer, head and query, the pane to look at (the others dimmed, or hidden when the
    terminal is short), the deeper screen it opens. The reveal is measured in a worker once
    the step's prompt has run, on the run on screen."""

    lesson: Progress | None = None
    _measuring = False
    _set_up = False  # the step's layer, head and query are set (after its prompt ran)
    # The step whose pick is being worked out on the model, off the UI thread, if one is.
    _picking: Progress | None = None

    def action_lessons(self) -> None:
        self.push_screen(LessonList(built_in()), self.start_lesson)

    def start_lesson(self, lesson: Lesson | None) -> None:
        """A lesson measures the model whole: knock-outs left from before are undone."""
        if lesson is not None:
            if not self.session.ablation.empty:
                self.action_restore()
            self.lesson = Progress(lesson)
            self.set_up_step()

    def set_up_step(self) -> None:
        step = self.lesson.step
        self._set_up = False
        self._picking = None  # one still under way is for the step before
        if self.screen.name != step.screen and self.screen is not self.screen_stack[0]:
            self.screen.dismiss(None)  # the step before's screen, or one the learner opened
        if step.prompt is not None and step.prompt != self.session.prompt:
            self.show_prompt(step.prompt)
        self.dim_panes(step.pane)
        self.show_lesson()
        self.focus_after_lesson_number()
        self.follow_lesson()

    def step_ready(self) -> bool:
        """The step's prompt has run and is on screen."""
        p, scope = self.lesson, self.scope
        if p is None or self.outstanding or scope is None or scope.view is None:
            return False
        return p.step.prompt is None or self.session.prompt == p.step.prompt

    def follow_lesson(self) -> None:
        """Once the step's prompt is on screen: its selection and screen, then a pending
        reveal."""
        if not self.step_ready():
            return
        if not self._set_up:
            self._set_up = True
            if self.lesson.step.pick is None:
                self.select_for_step(None)
            else:
                self._picking = self.lesson
                work = partial(self.pick_for_step, self.lesson, self.session.scope())
                self.run_worker(work, thread=True, group="lesson", exit_on_error=False)
        self.measure_when_ready()

    def pick_for_step(self, p: Progress, scope: Scope) -> None:
        """On a worker: the step's pick reads the model (every head, or a DLA)."""
        try:
            at, error = PICKS[p.step.pick](scope), ""
        except Exception as e:  # said in the bar; the step keeps the selection it has
            at, error = None, f"could not pick the head: {type(e).__name__}: {e}"
        self.call_from_thread(self.picked, p, at, error)

    def picked(self, p: Progress, at: tuple[int, int] | None, error: str) -> None:
        if self._picking is p:  # an answer given meanwhile is another Progress, same step
            self._picking = None
            self.select_for_step(at)
            if error:
                self.say_in_lesson(error)
            self.measure_when_ready()

    def open_step_screen(self) -> None:
        """The step's deeper screen; at its cursor if already open (a new one takes the
        cursor from the step as it mounts)."""
        step = self.lesson.step
        if step.screen is None:
            return
        if self.screen.name != step.screen:
            self.action_open(step.screen)
        elif step.cursor is not None:
            self.screen.cursor = step.cursor

    def select_for_step(self, picked: tuple[int, int] | None) -> None:
        """The step's layer, head (`picked` by its pick, if it has one) and query, then
        its screen."""
        step, config = self.lesson.step, self.model.config
        changes: dict[str, object] = {}
        if picked is not None:
            changes["layer"], changes["head"] = picked
        if step.layer is not None:
            changes["layer"] = min(step.layer, config.n_layer - 1)
        if step.head is not None:
            changes["head"] = min(step.head, config.n_head - 1)
        if step.query is not None:
            changes["query"] = None if step.query < 0 else step.query
        if changes:
            self.change(**changes)
        self.open_step_screen()

    def dim_panes(self, pane: str | None) -> None:
        base = self.screen_stack[0]
        base.set_class(pane is not None, "-lesson")
        for widget in base.query(".pane"):
            widget.set_class(pane is not None and widget.id != pane, "dimmed")

    def lesson_bars(self) -> list[LessonBar]:
        return [bar for screen in self.screen_stack for bar in screen.query(LessonBar)]

    def show_lesson(self) -> None:
        for bar in self.lesson_bars():
            bar.is_demo = self.session.info.is_demo
            bar.progress = self.lesson

    def say_in_lesson(self, hint: str) -> None:
        """Said in the bar, where the learner is reading, not in a toast over it."""
        for bar in self.lesson_bars():
            bar.hint = hint

    def focus_after_lesson_number(self) -> None:
        """The step's pane, so z zooms it and the arrows scroll it; on a deeper screen, its
        sheet."""
        if self.screen is self.screen_stack[0]:
            pane = self.lesson.step.pane if self.lesson else None
            self.screen.query_one(f"#{pane or 'attention'}").focus()
        else:
            self.screen.set_focus(None)
            self.screen.focus_next()

    def action_lesson_answer(self, choice: int) -> None:
        p = self.lesson
        if p.answer is not None:
            self.say_in_lesson("answered: space for the next step")
        elif p.step.asks_for_a_number:
            self.start_number(str(choice))
        elif 1 <= choice <= len(p.step.choices):
            self.answer_lesson(choice - 1)
        else:
            self.say_in_lesson(f"{choice} is not one of the choices 1-{len(p.step.choices)}")

    def start_number(self, digit: str) -> None:
        """A digit opens the answer box with it; one typed before the box has the focus
        follows it there."""
        number = self.screen.query_one(LessonNumber)
        number.value += digit
        number.cursor_position = len(number.value)
        number.focus()

    def lesson_number(self, text: str) -> None:
        try:
            number = float(text)
        except ValueError:
            self.say_in_lesson(f"{text!r} is not a number: type one, or esc")
            return
        self.answer_lesson(number)
        self.focus_after_lesson_number()

    def answer_lesson(self, answer: int | float) -> None:
        self.lesson = self.lesson.answered(answer)
        self.show_lesson()
        self.follow_lesson()

    def measure_when_ready(self) -> None:
        """After the step's prompt has run and its selection is made: the reveal is of
        what is on screen."""
        p = self.lesson
        if p is None or not p.waiting or self._measuring or not self._set_up or self._picking:
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
            self.say_in_lesson("answer first: the model's numbers come after your guess")
        elif p.next() is None:
            self.say_in_lesson("that was the last step: L for another lesson, X leaves")
        else:
            self.lesson = p.next()
            self.set_up_step()

    def action_lesson_leave(self) -> None:
        self.lesson = None
        self.dim_panes(None)
        self.show_lesson()
