"""Stress: random resizes mid-generation, a held-down key while generating, and generations
to the context limit with every view live, with memory measured before and after."""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import time

import pytest
from rich.cells import cell_len
from textual import events
from textual.widgets._footer import FooterKey

from gpt2scope.tui.app import ScopeApp
from gpt2scope.tui.keys import KEYS
from gpt2scope.tui.views import SCREENS
from tests.conftest import ControlledSampler
from tests.driver import make_app, settle
from tests.reliability import (  # noqa: F401 (fixtures)
    anyio_backend,
    no_runner_left_behind,
    screen_lines,
)

pytestmark = pytest.mark.anyio

PROMPT = "Hello world, this is a test."
LONG_PROMPT = " one two three" * 21  # 63 tokens: the context is 128


def throttled(sampler: ControlledSampler, length: int) -> ControlledSampler:
    """Each token takes 20 ms, and the one before the last waits to be released, so that a
    generation of `length` outlasts whatever the test does."""
    return sampler.slow(0.02).hold(length - 1)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.slow
async def test_thirty_random_resizes_during_a_generation(tiny_model, sampler):
    sizes = random.Random(7)
    app = make_app(tiny_model, sampler=throttled(sampler, 60), prompt=PROMPT, length=60)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        for _ in range(30):
            await pilot.resize_terminal(sizes.randint(1, 220), sizes.randint(1, 70))
        assert app.session.state == "generating"
        sampler.release()
        await settle(pilot)
        assert (app.scope.steps, app.scope.finish) == (60, "length")
        await pilot.resize_terminal(100, 30)
        await pilot.press("s")
        await settle(pilot)
        assert app.scope.steps == 61
        assert {cell_len(line) for line in screen_lines(app)} == {100}


@pytest.mark.slow
async def test_a_held_down_key_while_generating(tiny_model, monkeypatch, sampler):
    """200 layer changes at 100 a second, posted as a terminal would, without waiting."""
    calls = 0
    action_layer = ScopeApp.action_layer

    def counted(self, delta: int) -> None:
        nonlocal calls
        calls += 1
        action_layer(self, delta)

    monkeypatch.setattr(ScopeApp, "action_layer", counted)
    app = make_app(tiny_model, sampler=throttled(sampler, 40), prompt=PROMPT, length=40)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        keys = [("right_square_bracket", "]"), ("left_square_bracket", "[")]
        for i in range(201):
            app.post_message(events.Key(*keys[i % 2]))
            await asyncio.sleep(0.01)
        caught_up = time.monotonic()
        while calls < 201:
            await pilot.pause(0.01)
        assert time.monotonic() - caught_up < 1.0
        assert app.session.state == "generating"
        sampler.release()
        await settle(pilot)
        assert (app.scope.steps, app.scope.finish) == (40, "length")
        assert app.scope.settings.layer == app.scope.attn.layer == 1


async def generate_to_the_context_limit(pilot) -> None:
    """Run the prompt again and generate until the context is full."""
    app = pilot.app
    app.run_prompt(LONG_PROMPT)
    await pilot.press("g")
    await settle(pilot)
    assert app.scope.finish == "context limit"
    assert app.scope.n_tokens == app.model.config.n_ctx


def python_blocks() -> int:
    """Memory blocks Python's allocator holds for live objects (tracemalloc would see
    the same, at ten times the cost of every allocation)."""
    gc.collect()
    return sys.getallocatedblocks()


@pytest.mark.slow
async def test_generating_to_the_context_limit_with_every_view_live_keeps_memory_bounded(
    tiny_model,
):
    """A leak grows memory at every run; noise (a cache filling, an allocator keeping a
    freed block) does not come back at the next. So the smaller of two runs' growths must
    stay small: keeping every scope's sampling records adds over 7,000 blocks a run."""
    app = make_app(tiny_model, prompt=LONG_PROMPT, length=tiny_model.config.n_ctx)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        assert all(pane.region.area > 0 for pane in app.query(".pane"))
        for _ in range(2):  # fill every cache first
            await generate_to_the_context_limit(pilot)
        measured = [(python_blocks(), rss_bytes())]
        for _ in range(2):
            await generate_to_the_context_limit(pilot)
            measured.append((python_blocks(), rss_bytes()))
    blocks_growth, rss_growth = (
        min(after - before for before, after in zip(column, column[1:], strict=False))
        for column in zip(*measured, strict=True)
    )
    assert blocks_growth < 4000, f"{blocks_growth} more memory blocks a run"
    assert rss_growth < 8 * 2**20, f"{rss_growth / 2**20:.1f} MiB more resident memory a run"


def footer_keys_alive() -> int:
    gc.collect()
    return sum(type(o) is FooterKey for o in gc.get_objects())


@pytest.mark.slow
async def test_moving_the_focus_lets_the_old_footer_keys_go(tiny_model):
    """Each focus change rebuilds the footer's keys (textual#6666 kept the old ones)."""
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("tab")
        before = footer_keys_alive()
        await pilot.press(*["tab"] * 14)
        assert footer_keys_alive() - before < len(app.screen.query(FooterKey))


# Every key the app and its screens bind, and some they do not; not q (it quits) nor ctrl+p,
# where typed letters and enter could run the palette's "quit".
MONKEY_KEYS = sorted(
    {k.key for k in KEYS if k.key != "q"}
    | {k.key for screen in SCREENS for k in screen.keys}
    | {"tab", "shift+tab", "enter", "escape", "up", "down", "pageup", "pagedown", "x", "9"}
)


@pytest.mark.slow
async def test_a_monkey_on_the_keyboard(tiny_model, tmp_path, monkeypatch):
    """Random keys, with a few resizes, over every screen: the app keeps running and
    still generates afterwards."""
    monkeypatch.chdir(tmp_path)  # e exports here
    presses = random.Random(11)
    app = make_app(tiny_model, prompt=PROMPT, length=20)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        for _ in range(120):
            await pilot.press(presses.choice(MONKEY_KEYS))
            if presses.random() < 0.05:
                await pilot.resize_terminal(presses.randint(10, 200), presses.randint(5, 60))
        while len(app.screen_stack) > 1:
            await pilot.press("escape")
        await settle(pilot, timeout=60)
        app.query_one("#attention").focus()
        await pilot.press("f")
        steps = len(app.session.sampled)
        await pilot.press("s")
        await settle(pilot, timeout=60)
        assert app.is_running and len(app.session.sampled) == steps + 1
