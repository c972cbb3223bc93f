"""Glitches a tester found in tmux at 80x24: the class layout's Probabilities pane, the w
toggle's headings, counts of one, the status line's height and a cut prompt."""

from __future__ import annotations

import pytest

from gpt2scope.engine.patching import Patch
from gpt2scope.tui.views.patching import EXAMPLES
from gpt2scope.tui.widgets import Pane, PromptInput
from tests.driver import make_app, settle, shown

pytestmark = pytest.mark.anyio
PROMPT = "The cat sat on the mat because it was tired."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def first_line(app, pane: str) -> str:
    return shown(app.query_one(f"#{pane}", Pane)).splitlines()[0]


async def test_the_class_layout_at_80x24_lists_the_top_candidates(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, layout="class")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        ids = app.session.pieces.tokenizer.encode(PROMPT)
        top = tiny_model.start(ids).logits.topk(3).indices.tolist()
        lines = shown(app.query_one("#probabilities", Pane)).splitlines()
        rows = [line[2:] for line in lines if line.startswith(("  ", "▸ "))]
        assert len(rows) >= 3, lines
        for row, token in zip(rows, top, strict=False):
            label = app.session.pieces(token).label
            assert row.startswith(label[:3]), (row, label)


async def test_w_is_one_switch_and_every_place_it_changes_says_so(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "value-weighted" not in first_line(app, "attention")
        await pilot.press("m")  # toggled in the model map, as the tester did
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        assert "value-weighted norms, as the panes" in shown(app.screen.query_one("#head_stats"))
        await pilot.press("escape")
        await settle(pilot)
        assert app.scope.settings.value_weighted
        assert "value-weighted" in first_line(app, "attention")  # in a 25-cell pane
        assert "by vw%" in first_line(app, "query")
        await pilot.press("w")
        await settle(pilot)
        assert "value-weighted" not in first_line(app, "attention")
        assert "vw%" not in first_line(app, "query")


async def test_a_count_of_one_is_singular(tiny_model):
    app = make_app(tiny_model, prompt="The")  # one token
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.scope.n_tokens == 1
        await pilot.press("m")
        await settle(pilot)
        text = shown(app.screen.query_one("#head_stats"))
        assert "over 1 token" in text and "1 tokens" not in text


async def test_the_status_line_keeps_to_two_lines_at_80_columns_with_a_patch(tiny_model):
    example = EXAMPLES[0]
    app = make_app(tiny_model, prompt=example.clean, length=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        status = app.query_one("#status")
        assert status.region.height == 2
        await pilot.press("P")
        await settle(pilot)
        await pilot.press("3", "down", "right", "enter")  # the longest label: mlp_out @1
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert app.scope.view.patch == f"{Patch('mlp_out', 1, 1).label} ← clean"
        text = str(status.render())
        assert "patched: L1 mlp_out @1" in text and "seed" in text and "query" in text
        assert status.region.height == 2, text
        # Probabilities says what it compares with, in words.
        probabilities = shown(app.query_one("#probabilities", Pane))
        assert "unpatched" in probabilities and "intact" not in probabilities


async def test_a_prompt_wider_than_the_bar_ends_in_an_ellipsis(tiny_model):
    prompt = " ".join(["the cat sat on the mat"] * 8)
    app = make_app(tiny_model, prompt=prompt)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        bar = app.query_one(PromptInput)
        app.set_focus(None)
        await pilot.pause()
        width = bar.scrollable_content_region.width
        shown_text = bar.render_line(0).text[:width]
        assert shown_text.endswith("…") and prompt.startswith(shown_text[:-1].rstrip("…"))
        bar.focus()
        await pilot.pause()
        assert "…" not in bar.render_line(0).text  # while editing, the text as it is
