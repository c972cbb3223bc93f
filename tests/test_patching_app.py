"""Pilot tests for the patching screen (P): the maps on screen are the engine's, every key
does what the help says, and prompts that cannot be patched leave the maps as they were."""

from __future__ import annotations

import pytest
import torch

from gpt2scope.engine.patching import SITES, Patch, default_tokens, patched, sweep
from gpt2scope.tui.patching_screen import PatchingScreen
from gpt2scope.tui.views.patching import EXAMPLES, Patching
from tests.driver import make_app, settle, shown, wait_for

EXAMPLE = EXAMPLES[0]  # the induction example


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def state(app) -> Patching:
    assert isinstance(app.screen, PatchingScreen)
    assert isinstance(app.screen.state, Patching), app.screen.state
    return app.screen.state


async def open_patching(pilot) -> Patching:
    await settle(pilot)
    await pilot.press("P")
    await settle(pilot)
    return state(pilot.app)


@pytest.mark.anyio
async def test_p_patches_the_apps_prompt_against_its_example_and_shows_the_engines_maps(
    tiny_model,
):
    app = make_app(tiny_model, prompt=EXAMPLE.clean, length=0)
    async with app.run_test(size=(80, 24)) as pilot:
        s = await open_patching(pilot)
        tokenizer = app.session.pieces.tokenizer
        assert s.pair.clean.tokens == tuple(tokenizer.encode(EXAMPLE.clean))
        assert s.pair.corrupt.tokens == tuple(tokenizer.encode(EXAMPLE.corrupt))
        assert (s.answer.token_id, s.contrast.token_id) == (
            tokenizer.encode(EXAMPLE.answer)[0],
            tokenizer.encode(EXAMPLE.contrast)[0],
        )
        for site in SITES:
            assert s.exact[site] == sweep(s.pair, site)
        text = shown(app.screen.query_one("#patching"))
        assert "␣mat" in text and "␣park" in text and "resid_pre" in text


@pytest.mark.anyio
async def test_keys_switch_maps_modes_and_cells_and_enter_applies_the_cells_patch(tiny_model):
    app = make_app(tiny_model, prompt=EXAMPLE.clean, length=0)
    async with app.run_test(size=(80, 24)) as pilot:
        s = await open_patching(pilot)
        await pilot.press("4")
        assert state(app).site == "z"
        await pilot.press("m")
        assert state(app).mode == "difference"
        await pilot.press("m")
        assert state(app).mode == "estimate"
        await pilot.press("down", "right", "right")
        assert (state(app).layer, state(app).index) == (1, 2)
        await pilot.press("enter")
        await settle(pilot)
        applied = state(app).applied
        view = patched(s.pair, Patch("z", 1, 2))
        assert applied.patch == Patch("z", 1, 2)
        assert applied.metric == pytest.approx(
            float(view.logits[s.pair.answer] - view.logits[s.pair.contrast])
        )
        assert "applied L1H2 z" in shown(app.screen.query_one("#patching"))
        await pilot.press("backspace")
        assert state(app).applied is None
        await pilot.press("v")
        await settle(pilot)
        assert (state(app).pair.answer, state(app).pair.contrast) == (
            s.pair.contrast,
            s.pair.answer,
        )
        await pilot.press("escape")
        assert not isinstance(app.screen, PatchingScreen)


@pytest.mark.anyio
async def test_x_cycles_the_examples_and_each_has_prompts_of_equal_length(tiny_model):
    app = make_app(tiny_model, prompt=EXAMPLE.clean, length=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_patching(pilot)
        for example in (*EXAMPLES[1:], EXAMPLE):  # from the induction one, the next and back
            await pilot.press("x")
            await settle(pilot)
            s = state(app)
            assert app.screen.query_one("#clean").value == example.clean
            assert s.pair.n_tokens == len(app.session.pieces.tokenizer.encode(example.corrupt))
            assert s.answer.text == example.answer and s.contrast.text == example.contrast


@pytest.mark.anyio
async def test_a_corrupted_prompt_of_another_length_is_refused_in_one_line_under_the_editors(
    tiny_model,
):
    app = make_app(tiny_model, prompt=EXAMPLE.clean, length=0)
    async with app.run_test(size=(80, 24)) as pilot:
        before = await open_patching(pilot)
        await pilot.press("e")
        editor = app.screen.query_one("#corrupt")
        editor.value = "A shorter prompt"
        await pilot.press("enter")
        await settle(pilot)
        assert state(app).pair is before.pair
        tokenizer = app.session.pieces.tokenizer
        n_clean, n_short = (
            len(tokenizer.encode(EXAMPLE.clean)),
            len(tokenizer.encode("A shorter prompt")),
        )
        line = app.screen.query_one("#refusal")
        said = str(line.render())
        assert line.region.height == 1 and line.region.y == editor.region.y + 1
        assert f"clean {n_clean} tokens, corrupted {n_short}" in said and "edit one" in said
        assert len(said) <= 80 and not app._notifications  # no 7-line toast
        # The focus stays in the editor, to fix the text; esc puts back the pair shown.
        assert app.screen.focused is editor and editor.value == "A shorter prompt"
        await pilot.press("escape")
        assert editor.value == EXAMPLE.corrupt and not line.region.height


@pytest.mark.anyio
async def test_p_reopens_as_it_was_left_after_applying_a_patch_and_generating(tiny_model):
    app = make_app(tiny_model, prompt=EXAMPLE.clean, length=2, temperature=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_patching(pilot)
        await pilot.press("v")  # the user's own answer and contrast
        await settle(pilot)
        await pilot.press("3", "m", "down", "right", "right", "enter")
        await settle(pilot)
        left = state(app)
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        await pilot.press("P")
        await settle(pilot)
        again = state(app)
        assert (again.pair.answer, again.pair.contrast) == (left.pair.answer, left.pair.contrast)
        assert (again.site, again.mode, again.layer, again.index) == ("mlp_out", "difference", 1, 2)
        assert again.applied is not None and again.applied.patch == Patch("mlp_out", 1, 2)
        assert app.screen.query_one("#corrupt").value == EXAMPLE.corrupt
        assert "applied L1 mlp_out @2" in shown(app.screen.query_one("#patching"))
        # A prompt run since is a new start: the screen opens on it afresh.
        await pilot.press("escape")
        app.show_prompt(EXAMPLE.clean)
        await settle(pilot)
        await pilot.press("P")
        await settle(pilot)
        fresh = state(app)
        assert (fresh.site, fresh.mode, fresh.applied) == ("resid_pre", "exact", None)


@pytest.mark.anyio
async def test_an_edited_corrupted_prompt_keeps_the_answer_and_d_goes_back_to_the_runs_own(
    tiny_model,
):
    app = make_app(tiny_model, prompt=EXAMPLE.clean, length=0)
    async with app.run_test(size=(80, 24)) as pilot:
        before = await open_patching(pilot)
        await pilot.press("v")  # an answer of the user's own: the example's, swapped
        await settle(pilot)
        await pilot.press("e")
        corrupt = EXAMPLE.corrupt.replace("dog", "cow")
        app.screen.query_one("#corrupt").value = corrupt
        await pilot.press("enter")
        await settle(pilot)
        s = state(app)
        assert s.pair.corrupt.tokens == tuple(app.session.pieces.tokenizer.encode(corrupt))
        assert (s.pair.answer, s.pair.contrast) == (before.pair.contrast, before.pair.answer)
        torch.testing.assert_close(
            torch.tensor(s.exact["resid_pre"]), torch.tensor(sweep(s.pair, "resid_pre"))
        )
        await pilot.press("d")
        await settle(pilot)
        s = state(app)
        assert (s.pair.answer, s.pair.contrast) == default_tokens(s.pair.clean, s.pair.corrupt)


@pytest.mark.anyio
async def test_an_applied_patch_is_shown_in_every_pane_until_cleared(tiny_model):
    app = make_app(tiny_model, prompt=EXAMPLE.clean, length=2, temperature=0)
    async with app.run_test(size=(80, 24)) as pilot:
        s = await open_patching(pilot)
        await pilot.press("4", "down", "right", "enter")
        await settle(pilot)
        view = app.session.scope().view
        expected = patched(s.pair, Patch("z", 1, 1))
        assert view.tokens == s.pair.corrupt.tokens and view.patch == "L1H1 z ← clean"
        torch.testing.assert_close(view.logits, expected.logits)
        assert app.session.prompt == EXAMPLE.corrupt
        await pilot.press("escape")
        await settle(pilot)
        assert "patched: L1H1 z ← clean" in str(app.screen.query_one("#status").render())
        # Probabilities compares with the unpatched corrupted run, the intact model's.
        await wait_for(pilot, lambda: app.session.scope().shift is not None)
        shift = app.session.scope().shift
        candidates = app.session.scope().prediction.candidates
        before = torch.softmax(s.pair.corrupt.logits.float(), -1)
        ids = [c.piece.token_id for c in candidates]
        assert shift.before == pytest.approx(before[ids].tolist(), rel=1e-4)
        await pilot.press("g")  # generation goes on from the patched run
        await settle(pilot)
        assert app.session.scope().view.n_tokens == s.pair.n_tokens + 2
        assert app.session.scope().view.patch
        await pilot.press("o")  # a knock-out of a patched run is refused, and says why
        await settle(pilot)
        assert app.session.ablation.empty
        assert any("patched run" in n.message for n in app._notifications)
        await pilot.press("P")
        await settle(pilot)
        await pilot.press("backspace")
        await settle(pilot)
        view = app.session.scope().view
        assert not view.patch and app.session.prompt == EXAMPLE.clean
        assert view.tokens[: s.pair.n_tokens] == s.pair.clean.tokens
