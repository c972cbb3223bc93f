"""Snapshots of the app's layouts on the tiny deterministic checkpoint, at temperature 0 so
that a BLAS or torch change that moves the sampled tokens does not rewrite them. Each covers
a layout once; 160x48 only where the layout differs from 80x24.

Regenerate with `pytest tests/test_tui_snapshots.py --snapshot-update` after looking at the
report of what changed; the SVGs are in tests/__snapshots__/.
"""

from __future__ import annotations

import pytest

import gpt2scope.tui.download_screen
from gpt2scope.tui.keep_tail import KeepTailScreen
from gpt2scope.tui.widgets import PromptInput
from tests.driver import HeldDownload, make_app, settle, wait_for

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]
WIDE = (160, 48)
PROMPT = "The cat sat on the mat because it was tired."


def then(*keys: str):
    """A run_before: wait for the runner, press `keys`, wait for the runner again."""

    async def run_before(pilot) -> None:
        await settle(pilot)
        if keys:
            await pilot.press(*keys)
            await settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_opening_screen(snap_compare, tiny_model, size):
    assert snap_compare(make_app(tiny_model, temperature=0), terminal_size=size, run_before=then())


def test_after_a_generation(snap_compare, tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, length=8, temperature=0)
    assert snap_compare(app, terminal_size=WIDE, run_before=then("g"))


@pytest.mark.slow
def test_help_screen(snap_compare, tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, temperature=0)
    assert snap_compare(app, terminal_size=(80, 24), run_before=then("question_mark"))


def test_zoomed_attention(snap_compare, tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, layer=1, head=2, temperature=0)
    assert snap_compare(app, terminal_size=(80, 24), run_before=then("g", "z"))


def test_demo_model_banner(snap_compare, tiny_model):
    app = make_app(tiny_model, name="demo", origin="demo", prompt=PROMPT, temperature=0)
    assert snap_compare(app, terminal_size=(80, 24), run_before=then())


def test_download_dialog(snap_compare, tiny_model, monkeypatch):
    """D on the demo model, halfway through the weights file."""
    monkeypatch.setattr(gpt2scope.tui.download_screen, "download", HeldDownload())
    app = make_app(tiny_model, name="demo", origin="demo", prompt=PROMPT, temperature=0)

    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("D")
        await wait_for(pilot, lambda: "MB" in str(app.screen.query_one("#file").render()))

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


@pytest.mark.slow
def test_keep_tail_dialog(snap_compare, tiny_model):
    """A typed prompt longer than the model's context: the offer to run its last n_ctx."""
    app = make_app(tiny_model, prompt=PROMPT, temperature=0)
    too_long = " word" * (tiny_model.config.n_ctx + 20)

    async def run_before(pilot) -> None:
        await settle(pilot)
        editor = app.query_one(PromptInput)
        editor.value = too_long
        editor.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, KeepTailScreen))

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_class_layout(snap_compare, tiny_model):
    """--layout class at a projector's 120x40: four big panes, the pattern the whole height."""
    app = make_app(tiny_model, prompt=PROMPT, layout="class", temperature=0)
    assert snap_compare(app, terminal_size=(120, 40), run_before=then("g"))


def test_captions_on(snap_compare, tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, temperature=0)
    assert snap_compare(app, terminal_size=(120, 40), run_before=then("g", "i"))


def test_light_theme(snap_compare, tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, temperature=0)

    async def run_before(pilot) -> None:
        app.theme = "textual-light"
        await then("g")(pilot)

    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)
