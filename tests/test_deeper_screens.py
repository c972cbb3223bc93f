"""Pilot tests for the deeper screens and history: every new key does what the help says."""

from __future__ import annotations

import html
import json

import numpy as np
import pytest

from gpt2scope.tui.help import HelpScreen
from gpt2scope.tui.keys import KEYS
from gpt2scope.tui.screens import DeeperScreen
from gpt2scope.tui.views.page import DEFERRED
from gpt2scope.tui.views.stages import N_STAGES
from gpt2scope.tui.widgets import PromptInput
from tests.driver import make_app, settle, shown, wait_for
from tests.reliability import notices


def showing(screen: object, spec_id: str) -> bool:
    """The deeper screen made from spec `spec_id` is the one shown."""
    return isinstance(screen, DeeperScreen) and screen.spec.id == spec_id


pytestmark = pytest.mark.anyio

PROMPT = "Hello world, this is a test."
LENGTH = 5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def status(app) -> str:
    return str(app.screen.query_one("#status").render())


async def generated(pilot) -> list[int]:
    """Generate LENGTH tokens and return the run's tokens."""
    await settle(pilot)
    await pilot.press("g")
    await settle(pilot)
    return list(pilot.app.scope.view.tokens)


@pytest.mark.slow
async def test_a_steps_through_the_stages_to_the_engines_head_output(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, layer=1, head=2)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        screen = app.screen
        assert showing(screen, "stages") and screen.page.cursor == 0
        await pilot.press(*["down"] * (N_STAGES + 2))
        assert screen.page.cursor == N_STAGES - 1
        await pilot.press("left", "left")  # the app's query keys work here too
        await settle(pilot)
        stages, scope = screen.page.figure, app.scope
        assert (stages.layer, stages.head, stages.query) == (1, 2, scope.n_tokens - 3)
        z = scope.view.get("z", 1)[stages.query, 2].numpy()
        np.testing.assert_allclose(stages.z, z, atol=1e-5, rtol=0)
        assert "max |Δ|" in shown(screen.query_one("#stages"))
        await pilot.press("up")
        assert screen.page.cursor == N_STAGES - 2
        await pilot.press("a")  # the same key goes back
        await pilot.pause()
        assert not showing(app.screen, "stages")


@pytest.mark.slow
async def test_m_picks_a_head_that_the_panes_then_show(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("m")
        await settle(pilot)
        screen = app.screen
        assert showing(screen, "head_stats")
        assert len(screen.page.figure.stats) == 2 * 4
        await pilot.press("down", "right", "right")
        await settle(pilot)
        assert "L1 H2" in status(app)
        assert "L1 H2" in shown(screen.query_one("#head_stats"))
        await pilot.press("enter")
        await pilot.pause()
        assert not showing(app.screen, "head_stats")
        assert (app.scope.attn.layer, app.scope.attn.head) == (1, 2)
        assert "L1 H2" in status(app)


async def test_l_reads_the_lens_whose_last_row_is_the_output(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("l")
        await settle(pilot)
        lens = app.screen.page.figure
        assert showing(app.screen, "logit_lens") and len(lens.rows) == 2
        top = app.scope.view.logits.topk(5).indices.tolist()
        assert [piece.token_id for piece, _ in lens.rows[-1].top] == top
        await pilot.press("left")
        await settle(pilot)
        lens = app.screen.page.figure
        assert lens.position == app.scope.n_tokens - 2 and lens.target_is_next


@pytest.mark.slow
async def test_b_shows_the_selected_layer_and_token(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, layer=1)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("left", "b")
        await settle(pilot)
        block = app.screen.page.figure
        assert (block.internals.layer, block.internals.position) == (1, app.scope.n_tokens - 2)
        assert block.mlp_post.shape == (4 * 64,)
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert app.screen.page.figure.internals.layer == 0
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.screen_stack[0]


async def test_the_model_map_waits_for_the_generation_to_stop(tiny_model, sampler):
    app = make_app(tiny_model, sampler=sampler.hold(2), prompt=PROMPT, length=LENGTH)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("m")
        await settle(pilot)
        before = app.screen.page.source
        await pilot.press("g")
        await wait_for(pilot, sampler.reached.is_set)
        await wait_for(pilot, lambda: app.screen.page.scope.steps == 1)  # the tick shows it
        page = app.screen.page
        assert page.source is before and page.note == DEFERRED
        assert not app.screen.computing
        sampler.release()
        await settle(pilot)
        page = app.screen.page
        assert page.note == "" and page.source.n_tokens == before.n_tokens + LENGTH


@pytest.mark.slow
async def test_one_deeper_screen_opens_another_in_its_place(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("a", "m")
        await settle(pilot)
        assert showing(app.screen, "head_stats") and len(app.screen_stack) == 2
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert showing(app.screen, "head_stats")


async def test_p_on_a_deeper_screen_goes_back_to_edit_the_prompt(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("l", "p")
        await settle(pilot)
        assert isinstance(app.focused, PromptInput)


async def test_z_does_nothing_on_a_deeper_screen_and_is_not_offered(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("l")
        await settle(pilot)
        await pilot.press("z")
        assert app.screen.maximized is None
        assert "z" not in app.screen.active_bindings


@pytest.mark.slow
async def test_resizing_on_a_deeper_screen(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("m")
        await settle(pilot)
        for size in ((160, 48), (50, 16), (120, 40)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert app.query_one("#attention").region.width > 30


@pytest.mark.slow
async def test_history_keys_show_a_past_step_in_every_view(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, length=LENGTH)
    async with app.run_test(size=(80, 24)) as pilot:
        tokens = await generated(pilot)
        n_prompt = len(tokens) - LENGTH
        await pilot.press("less_than_sign", "less_than_sign")
        scope = app.scope
        assert scope.looking_back and scope.steps == LENGTH - 2
        assert scope.view.tokens == tuple(tokens[: n_prompt + LENGTH - 2])
        assert scope.prediction.step == LENGTH - 2
        assert scope.prediction.chosen.token_id == tokens[n_prompt + LENGTH - 3]
        assert f"step {LENGTH - 2} of {LENGTH}" in status(app)
        await pilot.press("greater_than_sign")
        assert app.scope.steps == LENGTH - 1
        await pilot.press("f")
        assert not app.scope.looking_back and "of 5" not in status(app)
        await pilot.press(*["less_than_sign"] * (LENGTH + 3))
        assert app.scope.steps == 0 and app.scope.prediction.step is None


async def test_left_moves_the_query_at_once_in_a_step_looked_back_at(tiny_model):
    """A query chosen on the live run can lie past the end of an earlier step; ← moves
    from the query shown there, not from the hidden one."""
    app = make_app(tiny_model, prompt=PROMPT, length=LENGTH)
    async with app.run_test(size=(80, 24)) as pilot:
        tokens = await generated(pilot)
        await pilot.press("left")  # the live query: one before the last token
        await pilot.press(*["less_than_sign"] * 3)
        shown_query = app.scope.query
        assert shown_query == len(tokens) - 4  # the last token of that step
        await pilot.press("left")
        assert app.scope.query == shown_query - 1


@pytest.mark.slow
async def test_history_keys_at_an_end_say_why_nothing_moved(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, length=2)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("less_than_sign")
        assert "no steps yet" in await notices(pilot)
        app.clear_notifications()
        await generated(pilot)
        await pilot.press("greater_than_sign")
        assert "this is the newest step" in await notices(pilot)
        app.clear_notifications()
        await pilot.press("less_than_sign", "less_than_sign", "less_than_sign")
        assert app.scope.steps == 0 and "this is the prompt" in await notices(pilot)


@pytest.mark.slow
async def test_h_moves_through_steps_and_the_panes_keep_the_step(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, length=LENGTH)
    async with app.run_test(size=(80, 24)) as pilot:
        tokens = await generated(pilot)
        await pilot.press("h")
        await settle(pilot)
        screen = app.screen
        assert showing(screen, "history")
        chosen = app.scope.prediction.chosen.token_id
        candidates = [c.piece.token_id for c in app.scope.prediction.candidates]
        assert candidates[screen.page.cursor] == chosen  # the cursor starts on the choice
        await pilot.press("left", "left", "left")
        assert app.scope.steps == LENGTH - 3
        assert "looking back" in shown(screen.query_one("#history"))
        await pilot.press("escape")
        await pilot.pause()
        assert app.scope.n_tokens == len(tokens) - 3
        assert "step 2 chose" in shown(app.query_one("#probabilities"))


async def test_history_shows_the_steps_record_after_the_parameters_change(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, length=LENGTH)
    async with app.run_test(size=(80, 24)) as pilot:
        tokens = await generated(pilot)
        await pilot.press("T", "h")  # the Probabilities pane now previews the next token
        await settle(pilot)
        assert app.scope.prediction.chosen is None
        assert app.scope.step_prediction.chosen.token_id == tokens[-1]
        assert f"step {LENGTH} chose" in shown(app.screen.query_one("#history"))


@pytest.mark.slow
async def test_looking_back_stays_put_while_the_run_grows(tiny_model, sampler):
    """A look back taken during a generation is kept as the new tokens arrive."""
    sampler.hold(LENGTH + 1)  # the second generation's first token
    app = make_app(tiny_model, sampler=sampler, prompt=PROMPT, length=LENGTH)
    async with app.run_test(size=(80, 24)) as pilot:
        await generated(pilot)
        await pilot.press("g")
        await wait_for(pilot, sampler.reached.is_set)
        await pilot.press("less_than_sign")
        sampler.release()
        await settle(pilot)
        assert app.scope.steps == LENGTH - 1 and len(app.scope.history) == 2 * LENGTH


@pytest.mark.parametrize("key, grown", [("g", LENGTH), ("s", 1)])
async def test_generating_while_looking_back_shows_the_new_tokens(tiny_model, key, grown):
    app = make_app(tiny_model, prompt=PROMPT, length=LENGTH)
    async with app.run_test(size=(80, 24)) as pilot:
        await generated(pilot)
        await pilot.press("less_than_sign", "less_than_sign", key)
        await settle(pilot)
        assert not app.scope.looking_back and app.scope.steps == LENGTH + grown


@pytest.mark.slow
async def test_enter_branches_from_a_past_step_with_another_candidate(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, length=LENGTH)
    async with app.run_test(size=(80, 24)) as pilot:
        before = await generated(pilot)
        n_prompt = len(before) - LENGTH
        await pilot.press("h", "left", "left", "left")  # step 2
        await settle(pilot)
        candidates = [c.piece.token_id for c in app.scope.prediction.candidates]
        cursor = app.screen.page.cursor
        pick = 1 if cursor == 0 else 0
        await pilot.press(*(["down"] * (pick - cursor) if pick > cursor else ["up"] * cursor))
        assert app.screen.page.cursor == pick
        await pilot.press("enter")
        await settle(pilot)
        after = list(app.scope.view.tokens)
        assert after[: n_prompt + 1] == before[: n_prompt + 1]
        assert after[n_prompt + 1] == candidates[pick] != before[n_prompt + 1]
        assert len(after) == len(before) and not app.scope.looking_back
        assert app.scope.history[1].token_id == candidates[pick]


@pytest.mark.slow
async def test_e_exports_the_screen_and_the_run(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = make_app(tiny_model, prompt=PROMPT, length=3)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await generated(pilot)
        await pilot.press("m")
        await settle(pilot)
        await pilot.press("e")
        for _ in range(200):
            if list(tmp_path.glob("*.json")):
                break
            await pilot.pause(0.05)
        await pilot.pause(0.1)
        (svg,) = tmp_path.glob("gpt2scope-*.svg")
        (path,) = tmp_path.glob("gpt2scope-*.json")
        assert svg.stem == path.stem
        assert "Model map" in html.unescape(svg.read_text()).replace("\xa0", " ")
        data = json.loads(path.read_text())
        for key in ("tokens", "pattern", "stages", "head_stats", "logit_lens", "block"):
            assert key in data
        assert len(data["history"]) == 3 and len(data["head_stats"]) == 8
        notes = " ".join(str(t.render()) for t in app.screen.query("Toast"))
        assert str(path) in notes.replace("\n", "")
        await pilot.press("e")  # a second export in the same second gets its own name
        for _ in range(200):
            if len(list(tmp_path.glob("*.json"))) == 2:
                break
            await pilot.pause(0.05)
        assert len(list(tmp_path.glob("*.svg"))) == 2


def test_every_new_key_is_in_the_table_with_help():
    actions = {k.action for k in KEYS}
    for name in ("stages", "head_stats", "logit_lens", "block", "history"):
        assert f"open('{name}')" in actions
    assert {"look(-1)", "look(1)", "follow", "export"} <= actions


@pytest.mark.anyio
async def test_the_model_map_says_how_many_layers_it_has_computed(tiny_model, monkeypatch):
    """The map's worker reports each layer: the note counts them while the figure is made."""
    import threading

    from gpt2scope.tui.views import model_map

    gate = threading.Event()
    real = model_map.head_stats

    def slow(view, weighted=False, on_layer=None):
        def counted(done, total):
            on_layer(done, total)
            if done == 1:
                gate.wait(10)  # hold after the first layer, so the note can be read

        return real(view, weighted, counted)

    monkeypatch.setattr(model_map, "head_stats", slow)
    app = make_app(tiny_model, prompt=PROMPT, length=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("m")
        await wait_for(pilot, lambda: "1/2 layers" in getattr(app.screen.page, "note", ""))
        gate.set()
        await settle(pilot)
        assert app.screen.page.figure is not None and not app.screen.page.note
