"""What makes a pane or a deeper screen. Each feature states its spec once, at the end of its
own view module (its key, how it is computed, drawn, written as JSON and explained in the
help), and tui/views/__init__.py lists them: the app, the help screen, the command palette,
`inspect` and export all read that one registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import Pieces
from gpt2scope.tui.views.common import Drawn
from gpt2scope.tui.views.page import Page


@dataclass(frozen=True)
class Key:
    key: str  # Textual's key name(s)
    shown: str  # as the help screen writes it
    action: str
    label: str  # short, for the footer
    help: str  # what it does, for the help screen and the command palette
    footer: bool = False
    group: str = ""  # keys of one group share one label in the footer: "↑↓ layer"


# A screen whose cursor is the selected head: the arrows move it, enter shows it in the panes
# (as esc does, the head staying selected: off the footer, which 80 columns fill).
HEAD_CURSOR = (
    Key("up", "↑", "app.layer(-1)", "layer-", "previous layer", True, "layer"),
    Key("down", "↓", "app.layer(1)", "layer+", "next layer", True, "layer"),
    Key("left", "←", "app.head(-1)", "head-", "previous head", True, "head"),
    Key("right", "→", "app.head(1)", "head+", "next head", True, "head"),
    Key("enter", "enter", "enter", "show", "show that head in the panes"),
)


@dataclass(frozen=True)
class PaneSpec:
    """One of the six panes of the main screen."""

    id: str
    title: str
    render: Callable[[Scope, int, int], Drawn]
    about: str  # for the help screen: what the numbers mean
    # What the drawing depends on, so a pane can skip redrawing when none of it changed.
    # Objects by id: the scopes compared are both alive, so their ids cannot collide.
    depends: Callable[[Scope], tuple]
    # Its keys of `inspect --format json` and the export, if it adds any.
    json: Callable[[Scope], dict[str, Any]] | None = None
    # What it shows in plain words, with its formula where there is one, for the one-line
    # caption `i` shows on top of it: versions longest first, the longest that fits drawn.
    caption: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cursor:
    """A screen's own cursor (a stage, a candidate), moved by its `cursor(±1)` keys."""

    count: Callable[[Scope], int]  # the positions it can take
    # Where it starts, and what sends it back there when it changes (compared by identity).
    start: Callable[[Scope], int] = lambda scope: 0
    anchor: Callable[[Scope], object] = lambda scope: None


@dataclass(frozen=True)
class BranchAt:
    """Put `token_id` at generated step `step` and generate the rest again."""

    step: int
    token_id: int


@dataclass(frozen=True)
class ScreenSpec:
    """A deeper screen: one view over the whole terminal, opened by `key`."""

    id: str  # the screen's name and its key of `inspect --format json`
    title: str
    key: str  # the key that opens it
    label: str  # for the footer
    summary: str  # what the key does, for the key list and the command palette
    render: Callable[[Page, int, int], Drawn]
    about: str  # for the help screen: what the numbers mean
    # What the figure is computed from (objects by id: the screen keeps the scope it
    # computed from alive), and how, off the UI thread; a screen with no figure draws
    # straight from the scope.
    depends: Callable[[Scope], tuple]
    compute: Callable[[Scope, Pieces], Any] | None
    json: Callable[[Any, Scope, Pieces], Any]
    keys: tuple[Key, ...] = ()  # its own, on top of the app's
    cursor: Cursor | None = None
    # What enter does on it: a BranchAt, or a sentence saying why there is nothing to do;
    # without it, enter goes back to the panes.
    enter: Callable[[Scope, int], BranchAt | str] | None = None
    # False for a figure too costly to recompute at every token: it waits for the run.
    while_generating: bool = True
    # compute takes a third argument, on_progress(done, total), the screen's note shows.
    progress: bool = False
    # A slower second stage: the screen draws compute's figure at once, then finish's.
    finish: Callable[[Any], Any] | None = None
    # Drawn once per cursor position by `inspect --format text` (the step-through's stages).
    text_at_every_cursor: bool = False

    @property
    def opener(self) -> Key:
        return Key(self.key, self.key, f"open('{self.id}')", self.label, self.summary)

    def figure(self, scope: Scope, pieces: Pieces) -> Any:
        """The figure computed in line (None for a screen drawn from the scope alone)."""
        if self.compute is None:
            return None
        figure = self.compute(scope, pieces)
        return figure if self.finish is None else self.finish(figure)


def view_identity(scope: Scope) -> int:
    return id(scope.view)


def on_view(scope: Scope) -> tuple:
    return id(scope.view), scope.query


def on_head(scope: Scope) -> tuple:
    return id(scope.attn), scope.query, scope.settings.value_weighted
