"""Pilot tests: every key does what the help says, while idle and while generating."""

from __future__ import annotations

import gc
import subprocess
import sys
import time

import pytest
import torch
from huggingface_hub import constants
from textual import events
from textual.widgets._footer import FooterKey

import gpt2scope.engine.runner
import gpt2scope.tui.app
import gpt2scope.tui.download_screen
import gpt2scope.tui.session
from gpt2scope.engine import gpt2_tokenizer, load_model
from gpt2scope.tui.app import ScopeApp
from gpt2scope.tui.download_screen import DownloadScreen
from gpt2scope.tui.help import HelpScreen
from gpt2scope.tui.session import SAMPLE_PROMPT
from gpt2scope.tui.text import editable
from gpt2scope.tui.widgets import Pane, PromptInput
from gpt2scope.weights import DEMO_DIR
from tests.driver import HeldDownload, make_app, settle, shown, wait_for
from tests.reliability import ROOT, notices, screen_text

pytestmark = pytest.mark.anyio

PROMPT = "Hello world, this is a test."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def tokens(app: ScopeApp) -> list[int]:
    return list(app.scope.view.tokens)


async def test_opening_runs_the_sample_with_the_editor_focused(tiny_model):
    app = make_app(tiny_model)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert isinstance(app.focused, PromptInput)
        assert app.query_one(PromptInput).value == SAMPLE_PROMPT
        assert tokens(app) == gpt2_tokenizer().encode(SAMPLE_PROMPT)
        titles = [pane.border_title for pane in app.query(Pane)]
        assert titles == [
            "Embeddings",
            "Attention",
            "Probabilities",
            "Query",
            "Q/K/V",
            "Continuation",
        ]
        for pane in app.query(Pane):  # every pane on screen, with room for a few lines
            region = pane.region
            assert region.height >= 5 and region.bottom <= 23 and region.right <= 80


async def test_prompt_option_prefills_and_focuses_the_panes(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert tokens(app) == gpt2_tokenizer().encode(PROMPT)
        assert isinstance(app.focused, Pane)


@pytest.mark.parametrize("blank", ["", "  "])
async def test_a_blank_prompt_option_opens_the_editor_without_an_error(tiny_model, blank):
    app = make_app(tiny_model, prompt=blank)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        assert isinstance(app.focused, PromptInput) and app.scope.view is None
        assert await notices(pilot, tries=10) == ""  # nothing failed: there is nothing to run
        assert "no run yet" in shown(app.query_one("#attention"))


async def test_layer_and_head_keys_move_and_stop_at_the_ends(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("right_square_bracket")
        assert (app.scope.settings.layer, app.scope.attn.layer) == (1, 1)
        await pilot.press("right_square_bracket")
        assert app.scope.settings.layer == 1  # the tiny model has 2 layers
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert app.scope.settings.layer == 0
        await pilot.press("full_stop", "full_stop", "full_stop", "full_stop")
        assert (app.scope.settings.head, app.scope.attn.head) == (3, 3)
        await pilot.press("comma")
        assert app.scope.settings.head == 2


async def test_a_layer_key_repaints_before_what_the_head_writes_is_read(tiny_model, monkeypatch):
    """What the head writes is a product with the whole unembedding (21 ms at gpt2-xl, half
    of a key's repaint there): the app reads it on a worker, the Query pane says so until
    then, and the words it then shows are the engine's for the new head."""
    import threading

    from gpt2scope.engine.analysis import head_writes

    gate = threading.Event()

    def held(*args, **kwargs):
        gate.wait(10)
        return head_writes(*args, **kwargs)

    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        monkeypatch.setattr(gpt2scope.tui.session, "head_writes", held)
        await pilot.press("right_square_bracket")
        query = app.query_one("#query", Pane)
        await wait_for(pilot, lambda: query.scope.attn.layer == 1)
        assert "writes computing…" in shown(query)
        assert app.reading_writes
        gate.set()
        await settle(pilot)
        scope = app.scope
        (w,) = head_writes(scope.view, scope.query, [(1, 0)])
        token, _ = w.promoted[0]
        line = shown(query).splitlines()[2]
        assert line.startswith("writes +") and scope.attn.pieces(token).label in line


async def test_a_failed_writes_read_is_said_once_and_the_next_head_is_read(tiny_model, monkeypatch):
    from gpt2scope.engine.analysis import head_writes

    def failing(view, position, heads, *args, **kwargs):
        if heads == [(1, 0)]:
            raise RuntimeError("no memory for the unembedding")
        return head_writes(view, position, heads, *args, **kwargs)

    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        monkeypatch.setattr(gpt2scope.tui.session, "head_writes", failing)
        await pilot.press("right_square_bracket")  # L1 H0, whose read fails
        await settle(pilot)
        query = app.query_one("#query", Pane)
        assert "writes: failed" in shown(query)  # the pane's 24 columns
        assert [n.title for n in app._notifications] == [
            "What the head writes could not be worked out"
        ]
        await pilot.press("full_stop")  # L1 H1 is read as ever
        await settle(pilot)
        assert shown(query).splitlines()[2].startswith("writes +")
        await pilot.press("comma")  # back to L1 H0: a new selection, read (and said) again
        await settle(pilot)
        assert "writes: failed" in shown(query)
        assert [n.title for n in app._notifications][-1].startswith("What the head writes")


async def test_a_key_held_at_the_last_layer_says_so_once(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*["right_square_bracket"] * 5)  # the tiny model has 2 layers
        said = [n.message for n in app._notifications]
        assert said == ["already at layer 1, the last"]


@pytest.mark.slow
async def test_query_keys_move_the_selected_token(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        last = app.scope.n_tokens - 1
        assert app.scope.query == last
        await pilot.press("left", "left")
        await pilot.pause()
        assert app.scope.query == last - 2
        # the one pane that does not follow the query says so, on screen
        assert "after the last token" in screen_text(app)
        await pilot.press(*["left"] * last)
        assert app.scope.query == 0
        await pilot.press(*["right"] * (last + 2))
        assert app.scope.query == last and app.scope.settings.query is None


async def test_p_edits_the_prompt_and_enter_runs_it(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("p")
        assert isinstance(app.focused, PromptInput)
        await pilot.press(*"q[x]", "enter")  # q and [ type, they do not quit or move
        await settle(pilot)
        assert tokens(app) == gpt2_tokenizer().encode("q[x]")
        assert isinstance(app.focused, Pane)
        assert app.scope.settings.layer == 0


@pytest.mark.parametrize("leave", ["escape", "tab", "shift+tab"])
async def test_leaving_the_editor_without_enter_puts_back_the_runs_prompt(tiny_model, leave):
    """The bar must not show an edit that never ran: g would continue another text."""
    app = make_app(tiny_model)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        before = tokens(app)
        await pilot.press("x", leave)
        await settle(pilot)
        assert isinstance(app.focused, Pane)
        assert tokens(app) == before
        assert app.query_one(PromptInput).value == editable(SAMPLE_PROMPT)


async def test_newline_escape_in_the_editor_is_a_newline(tiny_model):
    app = make_app(tiny_model)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*"a\\nb", "enter")
        await settle(pilot)
        assert tokens(app) == gpt2_tokenizer().encode("a\nb")


@pytest.mark.slow
async def test_g_generates_length_tokens_and_s_one(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, length=4)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        n = app.scope.n_tokens
        await pilot.press("g")
        await settle(pilot)
        assert (app.scope.steps, app.scope.finish) == (4, "length")
        assert app.scope.n_tokens == n + 4
        assert app.scope.prediction.step == 4
        await pilot.press("s")
        await settle(pilot)
        assert app.scope.steps == 5 and app.scope.n_tokens == n + 5
        # one token was asked for, not `length`: the pane must not say the length was reached
        status = shown(app.query_one("#continuation")).splitlines()[:2]
        assert status == ["step 5 · cache 13/128", "done"]


async def test_esc_stops_a_generation(tiny_model, sampler):
    app = make_app(tiny_model, sampler=sampler.hold(1), prompt=PROMPT, length=100)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await wait_for(pilot, sampler.reached.is_set)
        await pilot.press("escape")
        sampler.release()
        await settle(pilot)
        assert app.scope.finish == "stopped"
        assert app.scope.steps == 1  # the token being sampled when esc came


async def test_esc_stops_every_command_outstanding_then_leaves_the_zoom(tiny_model, sampler):
    """g, then s queued behind it: both stay outstanding until each one's last event, and
    esc stops them both; once none is outstanding esc leaves the zoom."""
    app = make_app(tiny_model, sampler=sampler.hold(1), prompt=PROMPT, length=100)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("z", "g", "s")
        await wait_for(pilot, sampler.reached.is_set)
        assert len(app.outstanding) == 2
        await pilot.press("escape")
        sampler.release()
        await settle(pilot)
        assert not app.outstanding and app.session.state == "idle"
        assert (app.scope.steps, app.scope.finish) == (1, "stopped")
        assert app.screen.maximized is not None
        await pilot.press("escape")
        assert app.screen.maximized is None


async def test_keys_work_while_generating(tiny_model, sampler):
    app = make_app(tiny_model, sampler=sampler.hold(1), prompt=PROMPT, length=10)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await wait_for(pilot, sampler.reached.is_set)
        await pilot.press("right_square_bracket", "full_stop", "left", "T", "z")
        assert app.session.state == "generating"
        s = app.scope.settings
        assert (s.layer, s.head, s.params.temperature) == (1, 1, 1.0)
        assert app.scope.query == app.scope.n_tokens - 2
        assert app.screen.maximized is not None
        sampler.release()
        await settle(pilot)
        assert (app.scope.finish, app.scope.steps) == ("length", 10)
        assert app.scope.prediction.params.temperature == 1.0


async def test_events_reach_the_screen_at_the_next_tick_not_one_by_one(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.session.update(seed=7)
        app.unpublished = True  # as each runner event leaves it
        assert app.scope.settings.seed != 7
        await wait_for(pilot, lambda: app.scope.settings.seed == 7)
        assert not app.unpublished


async def test_focusing_back_and_forth_does_not_keep_the_footers_old_keys(tiny_model):
    """Each focus change recomposes the footer with new keys; those it removed must go."""
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for _ in range(30):
            app.action_edit_prompt()
            await pilot.pause()
            app.focus_panes()
            await pilot.pause()
        gc.collect()
        alive = sum(type(o) is FooterKey for o in gc.get_objects())
        assert alive == len(app.query(FooterKey))


def wheel(pane: Pane, kind: type[events.MouseScrollDown | events.MouseScrollUp]) -> None:
    pane.post_message(kind(pane, 1, 1, 0, 0, 0, False, False, False))


async def test_the_mouse_wheel_scrolls_a_pane_with_hidden_lines_and_back(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        pane = app.query_one("#query", Pane)
        top = shown(pane)
        assert "more lines above" not in top and "more lines" in top
        for _ in range(3):
            wheel(pane, events.MouseScrollDown)
        await pilot.pause()
        assert pane.scroll_offset.y > 0 and "more lines above" in shown(pane)
        for _ in range(10):
            wheel(pane, events.MouseScrollUp)
        await pilot.pause()
        assert pane.scroll_offset.y == 0 and shown(pane) == top


async def test_a_pane_scrolled_by_hand_stays_until_the_query_moves(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        pane = app.query_one("#query", Pane)
        pane.focus()
        await pilot.press("ctrl+end")
        assert pane.scroll_offset.y == pane.max_scroll_y > 0
        await pilot.press("T")  # a new temperature leaves the selection where it was
        assert pane.scroll_offset.y == pane.max_scroll_y
        await pilot.press("left")
        await pilot.pause()
        assert "more lines above" not in shown(pane)


@pytest.mark.slow
async def test_resizing_mid_generation(tiny_model, sampler):
    app = make_app(tiny_model, sampler=sampler.hold(1), prompt=PROMPT, length=10)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await wait_for(pilot, sampler.reached.is_set)
        for size in ((160, 48), (60, 20), (120, 40)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
        sampler.release()
        await settle(pilot)
        assert (app.scope.finish, app.scope.steps) == ("length", 10)
        assert app.query_one("#attention").region.width > 30


async def test_a_terminal_below_80x24_is_told_once_only_how_to_see_a_pane_whole(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(60, 15), notifications=True) as pilot:
        await settle(pilot)
        assert "60x15 is smaller than the 80x24" in await notices(pilot)
        app.clear_notifications()
        for size in ((70, 20), (80, 24), (79, 30)):  # shrinking again: said already
            await pilot.resize_terminal(*size)
            await pilot.pause()
        assert not [n for n in app._notifications if "smaller than" in n.message]


@pytest.mark.slow
async def test_sampling_keys_change_the_runner_params(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("t")
        assert app.scope.settings.params.temperature == 0.7
        await pilot.press("T", "T")
        assert app.runner.params.temperature == 1.0
        await pilot.press("k")
        assert app.scope.settings.params.top_k == 4
        await pilot.press("K", "K")
        assert app.runner.params.top_k == 8
        await pilot.press("u")
        assert app.scope.settings.params.top_p == 0.99
        await pilot.press("U", "U")
        assert app.runner.params.top_p == 1.0
        await pilot.press("n")
        assert app.scope.settings.length == 5
        await pilot.press("N", "N")
        assert app.scope.settings.length == 8
        assert app.scope.prediction.params == app.runner.params


async def test_temperature_zero_is_the_floor(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, temperature=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("t", "t")
        assert app.scope.settings.params.temperature == 0.0
        await pilot.press("g")
        await settle(pilot)
        assert app.scope.steps == 6


async def test_r_draws_a_new_seed(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, seed=3)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        assert app.scope.settings.seed == 4
        assert app.runner.seed == 4


async def test_same_seed_same_continuation(tiny_model):
    runs = []
    for _ in range(2):
        app = make_app(tiny_model, prompt=PROMPT, seed=7)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("g")
            await settle(pilot)
            runs.append(tokens(app))
    assert runs[0] == runs[1]


async def test_z_zooms_the_focused_pane_and_back(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("tab")
        await pilot.press("z")
        assert app.screen.maximized is app.query_one("#probabilities")
        await pilot.press("z")
        assert app.screen.maximized is None
        await pilot.press("z", "escape")  # esc while idle also leaves the zoom
        assert app.screen.maximized is None


@pytest.mark.slow
async def test_tab_cycles_focus_through_the_panes(tiny_model):
    app = make_app(tiny_model)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        seen = []
        for _ in range(7):
            await pilot.press("tab")
            seen.append(app.focused.id)
        assert seen == [
            "embeddings",
            "attention",
            "probabilities",
            "query",
            "qkv",
            "continuation",
            "prompt",
        ]


@pytest.mark.slow
async def test_question_mark_shows_help_listing_every_key(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_every_key_is_in_the_command_palette(tiny_model):
    from gpt2scope.tui.keys import KEYS

    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        listed = list(app.get_system_commands(app.screen))
        commands = {c.help: c for c in listed}
        for key in KEYS:
            assert f"key {key.shown}" in commands
        titles = [c.title for c in listed]
        assert len(titles) == len(set(titles))  # one Quit, not ours and Textual's
        assert "Screenshot" not in titles  # Textual's, which fails where there is no Downloads
        commands["key ]"].callback()
        await pilot.pause()
        assert app.scope.settings.layer == 1


async def test_q_quits(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0
    assert not app.runner.alive


async def test_quit_mid_generation_exits_promptly(tiny_model, sampler):
    app = make_app(tiny_model, sampler=sampler.slow(0.05), prompt=PROMPT, length=100)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        while app.scope.steps < 1:
            await pilot.pause(0.01)
        started = time.monotonic()
        await pilot.press("q")
        await pilot.pause()
    assert time.monotonic() - started < 1.5
    assert not app.runner.alive


async def test_a_failure_shows_a_notice_and_the_app_stays_usable(tiny_model, sampler):
    sampler.fail(1, ZeroDivisionError("division by zero"))
    app = make_app(tiny_model, sampler=sampler, prompt=PROMPT)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        assert "ZeroDivisionError: division by zero" in await notices(pilot)
        await pilot.press("g")
        await settle(pilot)
        assert app.scope.steps == 6


@pytest.mark.slow
async def test_b_starts_the_tokens_with_end_of_text_and_back(tiny_model):
    tok = gpt2_tokenizer()
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("B")
        await settle(pilot)
        assert tokens(app) == [tok.eot_id, *tok.encode(PROMPT)]
        assert "bos" in str(app.query_one("#status").render())
        await pilot.press("g", "B")
        await settle(pilot)
        assert tokens(app) == tok.encode(PROMPT)
        assert "bos" not in str(app.query_one("#status").render())


@pytest.mark.parametrize("typed", [[], ["space", "space"]])
async def test_an_empty_prompt_is_refused_with_a_notice(tiny_model, typed):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        before = tokens(app)
        await pilot.press("p", "backspace", *typed, "enter")
        await settle(pilot)
        assert "empty" in await notices(pilot)
        assert tokens(app) == before
        assert app.query_one(PromptInput).value == editable(PROMPT)  # not the placeholder


async def test_the_demo_model_says_how_to_get_gpt2(tiny_model):
    app = make_app(tiny_model, name="demo", origin="demo", prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        status = str(app.query_one("#status").render())
        assert "demo model, not GPT-2 · D: download GPT-2 small" in status


@pytest.mark.slow
async def test_d_downloads_gpt2_small_and_switches_to_it(tiny_model, fake_hub):
    """The fake hub serves the tiny checkpoint as openai-community/gpt2: D on the bundled
    demo model downloads it, and the app runs the prompt on screen again on it."""
    app = make_app(load_model(DEMO_DIR), name="demo", origin="demo", prompt=PROMPT, layer=1, head=3)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("D")
        await wait_for(pilot, lambda: app.session.info.origin == "hub cache")
        await settle(pilot)
        assert not isinstance(app.screen, DownloadScreen)
        assert "now running gpt2 (hub cache)" in await notices(pilot)
        assert (app.session.info.name, app.session.info.n_params) == ("gpt2", tiny_model.n_params)
        assert "demo" not in str(app.query_one("#status").render())
        assert (app.session.settings.layer, app.session.settings.head) == (1, 3)
        assert tokens(app) == gpt2_tokenizer().encode(PROMPT)
        expected = tiny_model.start(tokens(app)).logits
        torch.testing.assert_close(app.scope.view.logits, expected)
        await pilot.press("g")
        await settle(pilot)
        assert len(tokens(app)) > len(gpt2_tokenizer().encode(PROMPT))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
async def test_d_loads_gpt2_small_in_the_dtype_the_app_was_opened_with(
    tiny_checkpoint, fake_hub, dtype
):
    """On the demo opened with --dtype, GPT-2 small comes in that dtype too: its logits are
    those of the downloaded checkpoint held in it, and the status line says so."""
    app = make_app(load_model(DEMO_DIR, dtype=dtype), name="demo", origin="demo", prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("D")
        await wait_for(pilot, lambda: app.session.info.origin == "hub cache")
        await settle(pilot)
        assert app.model.weights_dtype == dtype
        said = str(dtype).removeprefix("torch.")
        assert f"(hub cache) on cpu · {said}" in str(app.query_one("#status").render())
        held = load_model(tiny_checkpoint, dtype=dtype).start(tokens(app)).logits
        full = load_model(tiny_checkpoint).start(tokens(app)).logits
        torch.testing.assert_close(app.scope.view.logits, held)
        assert not torch.equal(held, full)  # float32 would have failed the check above


@pytest.mark.slow
async def test_the_download_shows_its_progress_and_esc_cancels_it(tiny_model, monkeypatch):
    held = HeldDownload()
    monkeypatch.setattr(gpt2scope.tui.download_screen, "download", held)
    app = make_app(tiny_model, name="demo", origin="demo", prompt=PROMPT)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("D")
        assert isinstance(app.screen, DownloadScreen)

        def file_line() -> str:
            return str(app.screen.query_one("#file").render())

        await wait_for(pilot, lambda: file_line() == "model.safetensors: 5.0 MB of 10.0 MB")
        await pilot.press("question_mark", "g", "D")  # nothing but esc and q while it runs
        assert isinstance(app.screen, DownloadScreen)
        assert not app.outstanding and not held.cancelled.is_set()
        await pilot.press("escape")
        assert "download of GPT-2 small cancelled" in await notices(pilot)
        await wait_for(pilot, lambda: not app.fetching.is_alive())
        assert held.cancelled.is_set()
        assert not isinstance(app.screen, DownloadScreen)
        assert app.session.info.is_demo


async def test_quitting_during_a_download_cancels_it(tiny_model, monkeypatch):
    held = HeldDownload()
    monkeypatch.setattr(gpt2scope.tui.download_screen, "download", held)
    app = make_app(tiny_model, name="demo", origin="demo", prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("D")
        await pilot.press("q")
        assert held.cancelled.wait(timeout=2)  # by q itself, before the test closes the app
        assert app.return_code == 0


# A process that opens the download dialog, with a download as deaf to cancel as the hub's
# sleeps between retries when there is no network (half a minute), then quits.
STUCK_DOWNLOAD_THEN_QUIT = """
import asyncio, threading
import gpt2scope.tui.download_screen
from gpt2scope.engine import load_model
from tests.driver import make_app, settle, wait_for
from gpt2scope.weights import DEMO_DIR

called = threading.Event()

def stuck(*args, **kwargs):
    called.set()
    threading.Event().wait()

gpt2scope.tui.download_screen.download = stuck

async def main():
    app = make_app(load_model(DEMO_DIR), name="demo", origin="demo", prompt="Hello")
    async with app.run_test() as pilot:
        await settle(pilot)
        await pilot.press("D")
        await wait_for(pilot, called.is_set)
        await pilot.press("q")
    print("quit", flush=True)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_quitting_does_not_wait_for_a_download_stuck_in_the_hubs_retries():
    process = subprocess.Popen(
        [sys.executable, "-c", STUCK_DOWNLOAD_THEN_QUIT], stdout=subprocess.PIPE, cwd=ROOT
    )
    try:
        assert process.stdout.readline() == b"quit\n"
        quit_at = time.monotonic()
        assert process.wait(timeout=20) == 0
        assert time.monotonic() - quit_at < 5
    finally:
        process.kill()


async def test_d_without_the_hub_says_so_and_stays_on_the_demo(tiny_model, hub_cache, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    app = make_app(tiny_model, name="demo", origin="demo", prompt=PROMPT)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("D")
        said = await notices(pilot)
        assert "GPT-2 small could not be downloaded" in said
        assert "cannot reach the Hugging Face hub" in said
        assert not isinstance(app.screen, DownloadScreen)
        assert app.session.info.is_demo


async def test_d_on_another_model_downloads_nothing(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("D")
        assert "in place of the demo" in await notices(pilot)
        assert app.fetching is None


@pytest.mark.slow
async def test_control_characters_never_reach_the_screen(tiny_model):
    app = make_app(tiny_model, prompt="red \x1b[31m bell \x07 rlo \u202e end\n")
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        assert app.query_one(PromptInput).value == "red \\x1b[31m bell \\x07 rlo \\u202e end\\n"
        screen = {pane.id: shown(pane) for pane in app.query(Pane)}
        screen["status"] = str(app.query_one("#status").render())
        for name, text in screen.items():
            assert not any(c in text for c in "\x1b\x07\u202e\r"), name


async def test_the_pane_columns_follow_the_terminal_width_through_resizes(tiny_model):
    """Below 120 columns the three columns share the width evenly; from 120 the attention
    column is twice as wide. Whatever size the app started at."""
    app = make_app(tiny_model)

    def widths() -> list[int]:
        return [app.query_one(f"#{name}").size.width for name in ("embeddings", "attention")]

    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        side, middle = widths()
        assert middle > 1.8 * side
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        side, middle = widths()
        assert abs(middle - side) <= 1
        await pilot.resize_terminal(160, 48)
        await settle(pilot)
        side, middle = widths()
        assert middle > 1.8 * side


COUNTING = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"


async def focused_query_pane(pilot) -> Pane:
    """The Query pane, focused: with COUNTING at 80x24 its lines do not fit."""
    await settle(pilot)
    pane = pilot.app.query_one("#query", Pane)
    pane.focus()
    return pane


async def test_up_and_down_in_the_attention_pane_move_the_query(tiny_model):
    app = make_app(tiny_model, prompt=COUNTING)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.query_one("#attention").focus()
        last = app.scope.n_tokens - 1
        await pilot.press("up", "up")
        assert app.scope.query == last - 2
        await pilot.press("down")
        assert app.scope.query == last - 1


@pytest.mark.parametrize("start, key", [("ctrl+home", "pagedown"), ("ctrl+end", "pageup")])
async def test_paging_through_a_pane_skips_no_line(tiny_model, start, key):
    app = make_app(tiny_model, prompt=COUNTING)
    async with app.run_test(size=(80, 24)) as pilot:
        pane = await focused_query_pane(pilot)
        await pilot.press(start)
        seen = set(shown(pane).splitlines())
        for _ in range(8):
            await pilot.press(key)
            seen |= set(shown(pane).splitlines())
        assert {line.plain for line in pane.drawn().lines} <= seen


@pytest.mark.slow
async def test_a_pane_scrolls_to_its_last_line_and_back(tiny_model):
    app = make_app(tiny_model, prompt=COUNTING)
    async with app.run_test(size=(80, 24)) as pilot:
        pane = await focused_query_pane(pilot)
        assert "more lines above" not in shown(pane) and "more lines (↑↓)" in shown(pane)
        await pilot.press("ctrl+end")  # the last line is the formula, as much of it as fits
        assert "score = q·k" in shown(pane) and "more lines above" in shown(pane)
        await pilot.press("ctrl+home")
        assert "more lines above" not in shown(pane) and "score = q·k" not in shown(pane)
        await pilot.press("down")
        assert "more lines above" in shown(pane)
