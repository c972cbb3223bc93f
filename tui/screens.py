"""The deeper screens (tui/deeper.py), each one view over the whole screen under the same
status line, and the app's actions that open them, move through history, branch and export.

A screen follows the app's scope as the panes do. Its figure is computed in a worker
thread, one at a time and always for the newest scope, so no key waits on it and a fast
generation never queues up stale work; until it is ready the last figure stays on screen,
marked "computing…". The model map, which takes seconds on a long run, waits for the
generation to stop.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from gpt2scope.engine import Runner
from gpt2scope.tui.deeper import BY_ID, Deeper, chosen_index
from gpt2scope.tui.figures import Page
from gpt2scope.tui.inspect import run_json
from gpt2scope.tui.keys import BACK, SCREEN_KEYS, bindings
from gpt2scope.tui.messages import Branch
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import Pieces, visible
from gpt2scope.tui.views import View
from gpt2scope.tui.views.page import COMPUTING, DEFERRED
from gpt2scope.tui.views.stages import N_STAGES
from gpt2scope.tui.widgets import LeanFooter, Pane, StatusLine, selection_moved

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

    def __init__(self, deeper: Deeper) -> None:
        super().__init__(View(deeper.id, deeper.title, deeper.render, deeper.about, on_page))

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


def screen_bindings(name: str) -> list[Binding]:
    """Back first, so that a narrow footer always shows the way out; then the screen's own
    keys, and p, which goes back to edit the prompt."""
    own = bindings((BACK, *SCREEN_KEYS[name]))
    return [*own, Binding("p", "dismiss('edit_prompt')", "prompt")]


class DeeperScreen(Screen[str | None]):
    """One deeper view; dismissed with the action to run next on the panes (or None)."""

    scope: reactive[Scope | None] = reactive(None, repaint=False)
    page: reactive[Page | None] = reactive(None, repaint=False)
    cursor: reactive[int] = reactive(0, repaint=False)

    def __init__(self, deeper: Deeper) -> None:
        super().__init__(name=deeper.id)
        self.deeper = deeper
        self._figure: Any = None
        self._source: Scope | None = None  # the scope the figure was computed from
        self._asked: Scope | None = None  # the scope the worker computes from
        self._worker: Worker | None = None

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status").data_bind(DeeperScreen.scope)
        arrows = any(k.key in ("up", "down") for k in SCREEN_KEYS[self.deeper.id])
        sheet = PagedSheet if arrows else Sheet
        yield sheet(self.deeper).data_bind(scope=DeeperScreen.page)
        yield LeanFooter()

    def on_mount(self) -> None:
        self.query_one(Sheet).focus()
        self.watch(self.app, "scope", self.follow)

    @property
    def computing(self) -> bool:
        return self._worker is not None

    def follow(self, scope: Scope | None) -> None:
        self.scope = scope
        self.show()

    def watch_cursor(self) -> None:
        self.show()

    def stale(self, scope: Scope) -> bool:
        d = self.deeper
        if d.compute is None or scope.view is None:
            return False
        return self._source is None or d.depends(self._source) != d.depends(scope)

    def deferred(self, scope: Scope) -> bool:
        """A costly figure already shown waits while the runner generates."""
        waits = not self.deeper.while_generating and scope.state == "generating"
        return waits and self._figure is not None

    def show(self) -> None:
        scope = self.scope
        if scope is None:
            return
        note = ""
        if self.stale(scope):
            note = DEFERRED if self.deferred(scope) else COMPUTING
            if note == COMPUTING and self._worker is None:
                self.compute(scope)
        self.page = Page(scope, self._figure, self._source, self.cursor, note)

    def compute(self, scope: Scope) -> None:
        self._asked = scope
        work = partial(self.deeper.compute, scope, self.app.session.pieces)
        self._worker = self.run_worker(work, thread=True, group="figure", exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker or not event.worker.is_finished:
            return
        self._worker = None
        if event.state == WorkerState.CANCELLED:
            return
        # A failure is not retried for the same scope: the screen says so and waits.
        self._source = self._asked
        self._figure = event.worker.result if event.state == WorkerState.SUCCESS else None
        if event.state == WorkerState.ERROR:
            self.notify(
                visible(f"{type(event.worker.error).__name__}: {event.worker.error}"),
                title=f"{self.deeper.title}: could not compute",
                severity="error",
                markup=False,
            )
        self.show()


class StagesScreen(DeeperScreen):
    BINDINGS = screen_bindings("stages")

    def action_stage(self, delta: int) -> None:
        self.cursor = min(max(self.cursor + delta, 0), N_STAGES - 1)


class MapScreen(DeeperScreen):
    BINDINGS = screen_bindings("head_stats")


class LensScreen(DeeperScreen):
    BINDINGS = screen_bindings("logit_lens")


class BlockScreen(DeeperScreen):
    BINDINGS = screen_bindings("block")


class HistoryScreen(DeeperScreen):
    """The cursor is a candidate of the step shown; it starts on the token that step chose."""

    BINDINGS = screen_bindings("history")

    def follow(self, scope: Scope | None) -> None:
        record = scope.sampled[-1] if scope is not None and scope.sampled else None
        if self.scope is None or record is not self._shown_record():
            self.set_reactive(HistoryScreen.cursor, chosen_index(scope) if scope else 0)
        super().follow(scope)

    def _shown_record(self) -> object:
        return self.scope.sampled[-1] if self.scope is not None and self.scope.sampled else None

    def action_candidate(self, delta: int) -> None:
        scope = self.scope
        if scope is not None and scope.step_prediction is not None:
            last = len(scope.step_prediction.candidates) - 1
            self.cursor = min(max(self.cursor + delta, 0), last)

    def action_branch(self) -> None:
        scope = self.scope
        if scope is None or scope.step_prediction is None:
            self.notify("pick a generated step first: ← → move through them", markup=False)
            return
        candidate = scope.step_prediction.candidates[self.cursor]
        self.post_message(Branch(scope.steps, candidate.piece.token_id))


SCREENS: dict[str, type[DeeperScreen]] = {
    "stages": StagesScreen,
    "head_stats": MapScreen,
    "logit_lens": LensScreen,
    "block": BlockScreen,
    "history": HistoryScreen,
}


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
            screen.dismiss(None if screen.deeper.id == name else f"open('{name}')")
        else:
            self.push_screen(SCREENS[name](BY_ID[name]), self.after_deeper)

    def after_deeper(self, action: str | None) -> None:
        if action:
            self.call_later(self.run_action, action)

    def action_look(self, delta: int) -> None:
        before = self.session.shown_step
        self.session.look_at_step(before + delta)
        if self.session.shown_step == before:  # a key that does nothing should say why
            self.notify(history_end(delta, len(self.session.sampled)), timeout=2)
        self.publish()

    def action_follow(self) -> None:
        self.session.look_at_step(len(self.session.sampled))
        self.publish()

    def on_branch(self, message: Branch) -> None:
        """Put the token at the step, then generate as many tokens after it as the run had;
        the views follow the new steps."""
        step, token_id = message.step, message.token_id
        later = len(self.session.sampled) - step

        def command(runner: Runner) -> None:
            runner.stop()  # a generation under way would only be thrown away
            runner.branch(step, token_id)
            runner.generate(later)

        self.action_follow()
        self.send(command)

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
