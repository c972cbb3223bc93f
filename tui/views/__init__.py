"""Pure functions from a `Scope` to lines of Rich `Text`, one module per pane or deeper screen,
each ending in its spec. The app draws them and `gpt2scope inspect` prints them, so both
show the same thing; this is the one list of them."""

from __future__ import annotations

from gpt2scope.tui.views import (
    attention,
    block,
    continuation,
    embeddings,
    history,
    lens,
    model_map,
    probabilities,
    qkv,
    query,
    stages,
)
from gpt2scope.tui.views.common import Drawn
from gpt2scope.tui.views.header import render_header
from gpt2scope.tui.views.spec import Key, PaneSpec, ScreenSpec

# In the order the main screen lays them out.
PANES: tuple[PaneSpec, ...] = tuple(
    m.SPEC for m in (embeddings, attention, probabilities, query, qkv, continuation)
)
# In the order the help screen and the key list name them.
SCREENS: tuple[ScreenSpec, ...] = tuple(m.SPEC for m in (stages, model_map, lens, block, history))
SCREEN_BY_ID = {s.id: s for s in SCREENS}

__all__ = ["PANES", "SCREENS", "SCREEN_BY_ID", "Drawn", "Key", "PaneSpec", "ScreenSpec"]
__all__ += ["render_header"]
