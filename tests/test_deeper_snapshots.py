"""Snapshots of the deeper screens at 80x24 on the tiny deterministic checkpoint, after a
generation at temperature 0 (so a BLAS or torch change does not rewrite them). At 160x48 a
deeper screen is the same layout with more room.

Regenerate with `pytest tests/test_deeper_snapshots.py --snapshot-update` after looking at
the report of what changed; the SVGs are in tests/__snapshots__/.
"""

from __future__ import annotations

import pytest

from gpt2scope.tui.lessons import find
from gpt2scope.tui.views.patching import EXAMPLES
from tests.driver import make_app, settle, wait_for

PROMPT = "The cat sat on the mat because it was tired."
SCREENS = {
    "stages": ("left", "left", "left", "a", "down", "down", "down"),
    "model_map": ("m", "down", "right"),
    "logit_lens": ("left", "left", "l"),
    "block": ("right_square_bracket", "b"),
    "history": ("h", "left", "left", "down"),
}


def after_generating(*keys: str):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        await pilot.press(*keys)
        await settle(pilot)

    return run_before


@pytest.mark.parametrize("screen", SCREENS)
@pytest.mark.slow
def test_deeper_screen(snap_compare, tiny_model, screen):
    app = make_app(tiny_model, prompt=PROMPT, length=6, temperature=0)
    assert snap_compare(app, terminal_size=(80, 24), run_before=after_generating(*SCREENS[screen]))


@pytest.mark.slow
def test_patching_screen(snap_compare, tiny_model):
    """The induction example's maps, the heads map's cell L1H2 applied."""
    app = make_app(tiny_model, prompt=EXAMPLES[0].clean, length=0, temperature=0)

    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("P")
        await settle(pilot)
        await pilot.press("4", "down", "right", "right", "enter")
        await settle(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_lesson_step_revealed(snap_compare, tiny_model, size):
    """The causal-mask lesson answered: the Attention pane bright, the others dimmed at
    120x40 and hidden at 80x24, where the bar leaves room for one pane."""
    app = make_app(tiny_model, prompt="Hello", length=0, temperature=0)

    async def run_before(pilot) -> None:
        await settle(pilot)
        app.start_lesson(find("mask"))
        await settle(pilot)
        await pilot.press("3")
        await wait_for(pilot, lambda: app.lesson.measured is not None)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
