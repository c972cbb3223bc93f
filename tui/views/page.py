"""Pieces the deeper views share: the page a screen draws, what to draw before a figure
exists, the title's note while a newer one is being computed, and lines made only when
shown."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from rich.console import Console
from rich.text import Text

from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import clip
from gpt2scope.tui.views.common import Drawn, no_run
from gpt2scope.tui.views.style import NOTE

COMPUTING = "computing…"
DEFERRED = "updates when the generation stops"
UNJUSTIFIED = Console()  # Text.wrap asks for one, and only justifying reads it

F = TypeVar("F")


@dataclass(frozen=True, eq=False)
class Page(Generic[F]):
    """What a deeper screen draws. `scope` is the latest (the selection, the step shown);
    `figure` was computed from `source`, an older scope when `note` says why (a newer one is
    being computed, or waits for the generation to stop); `cursor` is the screen's own (a
    stage, a candidate)."""

    scope: Scope
    figure: F | None = None
    source: Scope | None = None
    cursor: int = 0
    note: str = ""
    live: bool = True  # False for inspect's printed text: no hints at keys it has not


def not_ready(page: Page, width: int) -> Drawn | None:
    """The drawing when there is no figure to show yet, else None."""
    if page.scope.view is None:
        return no_run(width)
    if page.figure is None:
        text = page.note or "nothing to show: see the notification"
        return Drawn([Text(clip(text, width), NOTE)])
    return None


def page_note(page: Page) -> Text:
    return Text(f" · {page.note}" if page.note else "", NOTE)


def wrapped_note(text: str, width: int, max_lines: int = 3) -> list[Text]:
    """A sentence of explanation, wrapped to the width in terminal cells (a wide character
    takes two), at most `max_lines` lines."""
    lines = Text(" ".join(text.split())).wrap(UNJUSTIFIED, max(width, 8), overflow="fold")
    return [Text(clip(line.plain.rstrip(), width), NOTE) for line in lines[:max_lines]]


class LazyLines(list):
    """Lines of which those left None are made by `make(index)` when first read: a table of a
    thousand keys costs only the rows on screen, while the pane can scroll through all of
    them. Slices are lazy too, and can be assigned to, as Pane.render does."""

    def __init__(self, lines: list[Text | None], make: Callable[[int], Text], offset: int = 0):
        super().__init__(lines)
        self._make = make
        self._offset = offset

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            assert step == 1, "only contiguous slices"
            return LazyLines(list.__getitem__(self, index), self._make, self._offset + start)
        index = index % len(self)
        line = list.__getitem__(self, index)
        if line is None:
            line = self._make(self._offset + index)
            list.__setitem__(self, index, line)
        return line

    def __iter__(self):
        return (self[i] for i in range(len(self)))
