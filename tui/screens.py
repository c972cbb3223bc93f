"""The deeper screens (their specs are in tui/views), each one view over the whole screen
under the same status line, and the app's actions that open them, move through history,
branch and export.

A screen follows the app's scope as the panes do. Its figure is computed in a worker
thread, one at a time and always for the newest scope, so no key waits on it and a fast
generation never queues up stale work; until it is ready the last figure stays on screen,
marked "computing…". The model map, which takes seconds on a long run, waits for the
generation to stop.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from functools import cache, partial
from pathlib import Path
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import ActiveBinding, Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from gpt2scope.engine import State
from gpt2scope.tui.keys import BACK, bindings
from gpt2scope.tui.lesson_bar import LessonBar
from gpt2scope.tui.messages import Branch
from gpt2scope.tui.report import run_json
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import Pieces, visible
from gpt2scope.tui.views import SCREEN_BY_ID, PaneSpec, ScreenSpec
from gpt2scope.tui.views.page import COMPUTING, DEFERRED, Page
from gpt2scope.tui.views.spec import BranchAt
from gpt2scope.tui.widgets import LeanFooter, Pane, StatusLine, selection_moved

# The app's keys that a screen over the panes keeps off its footer (they are in the help).
OFF_THE_FOOTER = ("generate", "step", "zoom", "edit_prompt")

PAGE_KEYS = [
    Binding("pageup", "page(-1)", "page up", show=False),
    Binding("pagedown", "page(1)", "page down", show=False),
    Binding("home", "scroll_home", "top", show=False),
    Binding("end", "scroll_end", "bottom", show=False),
]


def on_page(page: Page) -> tuple:
    """A screen makes a new page only when something on it changed."""
    return (id(page),)


class Sheet(Pane):
    """A Pane that draws a Page (a deeper view) instead of a Scope."""

    scope: reactive[Page | None] = reactive(None, repaint=False)

    def __init__(self, spec: ScreenSpec) -> None:
        super().__init__(PaneSpec(spec.id, spec.title, spec.render, spec.about, on_page))

    def watch_scope(self, old: Page | None, new: Page | None) -> None:
        if old is None or new is None or moved(old, new):
            self.following = True
        if old is None or new is None or on_page(old) != on_page(new):
            self.refresh()


class PagedSheet(Sheet, inherit_bindings=False):
    """A Sheet on a screen whose arrows move its own cursor: it scrolls by the page."""

    SCROLL_HINTS = (" (pgup pgdn)", "")
    BINDINGS = PAGE_KEYS


def moved(old: Page, new: Page) -> bool:
    return (
        selection_moved(old.scope, new.scope)
        or old.cursor != new.cursor
        or old.scope.steps != new.scope.steps
    )


@dataclass(frozen=True)
class OpenScreen:
    """What the panes do after a deeper screen: open another (only one is ever stacked)."""

    id: str


@dataclass(frozen=True)
class EditPrompt:
    """What the panes do after a deeper screen: put the focus in the prompt editor."""


def off_the_footer(screen: Screen, bindings: dict[str, ActiveBinding]) -> dict[str, ActiveBinding]:
    """The app's keys of OFF_THE_FOOTER still work on a screen over the panes but leave its
    footer: at 80 columns it has room for the screen's own keys, the way back, help and quit."""
    for key, active in bindings.items():
        if active.node is screen.app and active.binding.action in OFF_THE_FOOTER:
            bindings[key] = active._replace(binding=replace(active.binding, show=False))
    return bindings


def screen_bindings(spec: ScreenSpec) -> list[Binding]:
    """Back first, so that a narrow footer always shows the way out (after a key of the
    screen's own on esc, which cancels something while it runs and is off otherwise); then
    the screen's own keys, and p, which goes back to edit the prompt."""
    on_esc = tuple(k for k in spec.keys if k.key == BACK.key)
    own = tuple(k for k in spec.keys if k.key != BACK.key)
    return [*bindings((*on_esc, BACK, *own)), Binding("p", "edit_prompt", "prompt")]


@dataclass(frozen=True)
class Computed:
    """What a screen's worker returns: the figure (None if it failed), and whether its
    finish was run (no: the screen had moved on)."""

    scope: Scope
    figure: Any
    finished: bool = True
    error: Exception | None = None


class DeeperScreen(Screen[OpenScreen | EditPrompt | None]):
    """One deeper screen, made from its spec; `screen_for` gives each spec's keys a class."""

    scope: reactive[Scope | None] = reactive(None, repaint=False)
    page: reactive[Page | None] = reactive(None, repaint=False)
    cursor: reactive[int] = reactive(0, repaint=False)

    def __init__(self, spec: ScreenSpec) -> None:
        super().__init__(name=spec.id)
        self.spec = spec
        self._figure: Any = None
        self._source: Scope | None = None  # the scope the figure was computed from
        self._finished = True  # False for a first stage whose finish was not run
        self._worker: Worker | None = None
        self._anchor: object = None  # what the cursor was last sent back to its start for
        self._progress: tuple[Scope, int, int] | None = None  # the worker's, for its note

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status").data_bind(DeeperScreen.scope)
        arrows = any(k.key in ("up", "down") for k in self.spec.keys)
        sheet = PagedSheet if arrows else Sheet
        yield sheet(self.spec).data_bind(scope=DeeperScreen.page)
        yield LessonBar()
        # ctrl+p still opens the palette: its footer label would push the screen's keys off
        yield LeanFooter(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(Sheet).focus()
        self.watch(self.app, "scope", self.follow)
        bar = self.query_one(LessonBar)
        bar.is_demo, bar.progress = self.app.session.info.is_demo, self.app.lesson
        step = self.app.lesson and self.app.lesson.step
        if step and step.screen == self.spec.id and step.cursor is not None:
            self.cursor = step.cursor  # a lesson step opens it where it says to look

    @property
    def computing(self) -> bool:
        return self._worker is not None

    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        return off_the_footer(self, super().active_bindings)

    def follow(self, scope: Scope | None) -> None:
        cursor = self.spec.cursor
        if cursor is not None and scope is not None:
            anchor = cursor.anchor(scope)
            if self.scope is None or anchor is not self._anchor:
                self._anchor = anchor
                self.set_reactive(DeeperScreen.cursor, cursor.start(scope))
        self.scope = scope
        self.show()

    def watch_cursor(self) -> None:
        self.show()

    def action_cursor(self, delta: int) -> None:
        if self.scope is not None:
            last = self.spec.cursor.count(self.scope) - 1
            self.cursor = min(max(self.cursor + delta, 0), last)

    def action_enter(self) -> None:
        if self.spec.enter is None:
            self.dismiss(None)
            return
        if self.scope is None:
            return
        outcome = self.spec.enter(self.scope, self.cursor)
        if isinstance(outcome, BranchAt):
            self.post_message(Branch(outcome.step, outcome.token_id))
        else:
            self.notify(outcome, markup=False)

    def action_edit_prompt(self) -> None:
        self.dismiss(EditPrompt())

    def stale(self, scope: Scope) -> bool:
        spec = self.spec
        if spec.compute is None or scope.view is None:
            return False
        if self._source is None or not self._finished:
            return True
        return spec.depends(self._source) != spec.depends(scope)

    def deferred(self, scope: Scope) -> bool:
        """A costly figure already shown waits while the runner generates."""
        waits = not self.spec.while_generating and scope.state == State.GENERATING
        return waits and self._figure is not None

    def show(self) -> None:
        scope = self.scope
        if scope is None:
            return
        note = ""
        if self.stale(scope):
            note = DEFERRED if self.deferred(scope) else COMPUTING
            if note == COMPUTING and self._worker is None:
                self._progress = None
                self._worker = self.compute(scope, self.app.session.pieces)
            if note == COMPUTING and self._progress is not None:
                _, done, total = self._progress
                note = f"{COMPUTING} {done}/{total} layers"
        self.page = Page(scope, self._figure, self._source, self.cursor, note)

    @work(thread=True, group="figure", exit_on_error=False)
    def compute(self, scope: Scope, pieces: Pieces) -> Computed:
        spec = self.spec
        try:
            if spec.progress:
                figure = spec.compute(scope, pieces, partial(self.post_progress, scope))
            else:
                figure = spec.compute(scope, pieces)
        except Exception as e:  # said on screen; the figure is not retried for this scope
            return Computed(scope, None, error=e)
        if spec.finish is None:
            return Computed(scope, figure)
        if not self.app.call_from_thread(self.first_stage, scope, figure):
            return Computed(scope, figure, finished=False)
        try:
            return Computed(scope, spec.finish(figure))
        except Exception as e:  # the first stage stays on screen
            return Computed(scope, figure, error=e)

    def first_stage(self, scope: Scope, figure: Any) -> bool:
        """The figure without its slow part, drawn while the worker finishes it; False when
        the screen has moved on, so that no one waits for a finish they would not see."""
        self._source, self._figure, self._finished = scope, figure, False
        self.show()
        return self.spec.depends(scope) == self.spec.depends(self.scope)

    def post_progress(self, scope: Scope, done: int, total: int) -> None:
        """On the worker's thread: how far the figure is."""
        self.app.call_from_thread(self.progressed, scope, done, total)

    def progressed(self, scope: Scope, done: int, total: int) -> None:
        if self._worker is not None:
            self._progress = (scope, done, total)
            self.show()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker or event.state != WorkerState.SUCCESS:
            return
        self._worker = None
        done: Computed = event.worker.result
        self._source, self._figure, self._finished = done.scope, done.figure, done.finished
        if done.error is not None:
            error = done.error
            self.notify(
                visible(f"{type(error).__name__}: {error}"),
                title=f"{self.spec.title}: could not compute",
                severity="error",
                markup=False,
            )
        self.show()


@cache
def screen_for(spec: ScreenSpec) -> type[DeeperScreen]:
    """A DeeperScreen class with the spec's keys: Textual reads bindings from the class."""
    name = "".join(word.capitalize() for word in spec.id.split("_")) + "Screen"
    return type(name, (DeeperScreen,), {"BINDINGS": screen_bindings(spec)})


def export_stem(directory: Path) -> str:
    """gpt2scope-<date>-<time>, with a counter if an export of that second exists."""
    stem = base = time.strftime("gpt2scope-%Y%m%d-%H%M%S")
    n = 1
    while any((directory / f"{stem}{ext}").exists() for ext in (".svg", ".json")):
        n += 1
        stem = f"{base}-{n}"
    return stem


class DeeperActions:
    """The ScopeApp's actions for the deeper screens, history and export (see tui/keys.py)."""

    def action_open(self, name: str) -> None:
        screen = self.screen
        if isinstance(screen, DeeperScreen):
            # Open another from here by going back first, so only one is ever stacked.
            screen.dismiss(None if screen.spec.id == name else OpenScreen(name))
        else:
            spec = SCREEN_BY_ID[name]
            self.push_screen(screen_for(spec)(spec), self.after_deeper)

    def after_deeper(self, after: OpenScreen | EditPrompt | None) -> None:
        if isinstance(after, OpenScreen):
            self.call_later(self.action_open, after.id)
        elif isinstance(after, EditPrompt):
            self.call_later(self.action_edit_prompt)

    def action_look(self, delta: int) -> None:
        before = self.session.shown_step
        self.session.look_at_step(before + delta)
        if self.session.shown_step == before:  # a key that does nothing should say why
            self.said_limit(history_end(delta, len(self.session.sampled)))
        self.publish()

    def action_follow(self) -> None:
        self.session.look_at_step(len(self.session.sampled))
        self.publish()

    def on_branch(self, message: Branch) -> None:
        """Put the token at the step, then generate as many tokens after it as the run had;
        the views follow the new steps."""
        step, token_id = message.step, message.token_id
        later = len(self.session.sampled) - step
        self.action_follow()
        if self.runner is not None:
            self.runner.stop()  # a generation under way would only be thrown away
        self.send(lambda r: r.branch(step, token_id))
        self.send(lambda r: r.generate(later))

    def action_export(self) -> None:
        try:  # the working directory itself may have been removed since the app started
            directory = Path.cwd()
            stem = export_stem(directory)
            svg = self.save_screenshot(f"{stem}.svg", str(directory))
        except OSError as e:
            self.notify(visible(str(e)), title="Could not export", severity="error", markup=False)
            return
        scope = self.scope
        if scope is None or scope.view is None:
            notice = visible(svg)  # the path: the directory may be named with anything
            self.notify(notice, title="Exported the screen; no run yet to export", markup=False)
            return
        path = directory / f"{stem}.json"
        work = partial(self.write_json, scope, self.session.pieces, path, svg)
        self.run_worker(work, thread=True, group="export", exit_on_error=False)

    def write_json(self, scope: Scope, pieces: Pieces, path: Path, svg: str) -> None:
        """In a worker thread: the deeper figures take a while on a long run."""
        try:
            path.write_text(json.dumps(run_json(scope, pieces)) + "\n", encoding="utf-8")
        except OSError as e:
            self.call_from_thread(
                self.notify,
                visible(str(e)),
                title="Could not export",
                severity="error",
                markup=False,
            )
            return
        notice = f"{visible(svg)}\n{visible(str(path))}"
        self.call_from_thread(self.notify, notice, title="Exported", markup=False)


def history_end(delta: int, steps: int) -> str:
    if not steps:
        return "no steps yet: g generates, s generates one"
    return "this is the prompt, before step 1" if delta < 0 else "this is the newest step"
