"""Pilot tests for the contributions screen and the knock-outs: every new key does what the
help says, and the numbers on screen are the knocked-out model's."""

from __future__ import annotations

import threading

import pytest
import torch

from gpt2scope.engine import Ablation, AblationMode, Run, load_model
from gpt2scope.engine.attribution import attribution, default_target
from gpt2scope.tui.screens import DeeperScreen
from gpt2scope.tui.session import ModelInfo
from gpt2scope.tui.views.probabilities import before_after
from tests.conftest import write_checkpoint
from tests.driver import make_app, settle, shown, wait_for

PROMPT = "Hello world, this is a test."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def status(app) -> str:
    return str(app.screen.query_one("#status").render())


def on_contributions(app) -> bool:
    return isinstance(app.screen, DeeperScreen) and app.screen.spec.id == "attribution"


@pytest.mark.anyio
async def test_c_shows_the_engines_attribution_and_follows_the_selection(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, length=3)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        assert on_contributions(app)
        scope, figure = app.scope, app.screen.page.figure
        target = default_target(scope.view, scope.query)
        engine = attribution(scope.view, scope.query, target)
        assert figure.attribution.target == target
        assert figure.attribution.components == engine.components
        await pilot.press("down", "right", "right")  # the grid's cursor is the selected head
        assert (app.session.settings.layer, app.session.settings.head) == (1, 2)
        text = shown(app.screen.query_one("#attribution"))
        assert f"L1H2 direct {figure.heads[1, 2]:+.3f}" in text
        await pilot.press("x")  # the next target: the second prediction
        await settle(pilot)
        second = torch.topk(scope.view.logits, 2).indices[1].item()
        assert app.screen.page.figure.attribution.target == second
        await pilot.press("v")
        await settle(pilot)
        a = app.screen.page.figure.attribution
        assert (a.target, a.contrast) == (second, target)  # the runner-up to the second
        assert "vs " in shown(app.screen.query_one("#attribution"))
        await pilot.press("enter")  # back to the panes, the head selected there
        await pilot.pause()
        assert not on_contributions(app) and "L1 H2" in status(app)


@pytest.mark.anyio
async def test_the_grid_is_drawn_while_the_saliency_is_still_computing(tiny_model, monkeypatch):
    """At gpt2-xl the saliency's backward pass is 2.7 s of the figure's 2.9: the grid and the
    writes come first, the strip says it is computing, and fills in when it is done."""
    from gpt2scope.tui.views import attribution as view

    gate = threading.Event()
    real = view.saliency

    def slow(*args):
        gate.wait(10)
        return real(*args)

    monkeypatch.setattr(view, "saliency", slow)
    app = make_app(tiny_model, prompt=PROMPT, length=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await wait_for(pilot, lambda: getattr(app.screen.page, "figure", None) is not None)
        text = shown(app.screen.query_one("#attribution"))
        assert "saliency computing…" in text and "\nL0 " in text and "L0H0 direct" in text
        assert app.screen.computing
        gate.set()
        await settle(pilot)
        figure = app.screen.page.figure
        scope = app.scope
        assert figure.saliency == tuple(real(scope.view, scope.query, figure.attribution.target))
        assert "computing" not in shown(app.screen.query_one("#attribution"))


@pytest.mark.anyio
async def test_the_screen_follows_a_history_look_back(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, length=3)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        newest = app.screen.page.figure.attribution.position
        await pilot.press("less_than_sign")
        await settle(pilot)
        page = app.screen.page
        assert page.source.view is app.session.views[2]
        assert page.figure.attribution.position == newest - 1


@pytest.mark.anyio
async def test_o_knocks_out_the_head_everywhere_and_big_o_restores(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, layer=1, head=2, temperature=0.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        intact = app.scope.view.logits.clone()
        await pilot.press("o")
        await settle(pilot)
        knocked = Ablation(heads=frozenset({(1, 2)}))
        assert app.session.ablation == knocked
        assert app.scope.view.ablation == knocked
        assert "off: L1H2 · zero" in status(app)
        expected = Run.rerun(app.scope.view, Ablation()).logits
        torch.testing.assert_close(expected, intact)  # the intact model, to check against
        await wait_for(pilot, lambda: app.scope.shift is not None)
        text = shown(app.query_one("#probabilities"))
        shift, top = app.scope.shift, app.scope.prediction.candidates[0]
        assert before_after(shift.before[0], top.prob) in text
        assert f"KL(intact‖now) {shift.kl_bits:.3f} bits" in text
        await pilot.press("M", "A")  # the selected layer's MLP; mean instead of zero
        await settle(pilot)
        assert app.scope.view.ablation == Ablation(AblationMode.MEAN, knocked.heads, frozenset({1}))
        assert "off: L1H2 L1mlp · mean" in status(app)
        await pilot.press("O")
        await settle(pilot)
        assert app.scope.view.ablation.empty and "off:" not in status(app)
        torch.testing.assert_close(app.scope.view.logits, intact)
        said = []
        app.notify = lambda message, **kwargs: said.append(message)
        await pilot.press("O")
        await pilot.pause()
        assert any("nothing is knocked out" in message for message in said)


@pytest.mark.anyio
async def test_a_knock_out_after_a_generation_keeps_its_steps_in_history(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, temperature=0, length=3)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        tokens = app.scope.view.tokens
        await pilot.press("o")
        await settle(pilot)
        assert app.scope.steps == 3 and app.scope.view.tokens == tokens
        assert app.scope.view.ablation.heads == {(0, 0)}
        await pilot.press("s")
        await settle(pilot)
        assert app.scope.steps == 4 and len(app.session.views) == 5
        await pilot.press("less_than_sign")  # step 3: generated before the knock-out
        assert app.scope.steps == 3 and app.scope.view.ablation.heads == {(0, 0)}


@pytest.mark.anyio
async def test_knock_outs_survive_a_new_prompt_generation_and_a_smaller_model(tiny_model, tmp_path):
    app = make_app(tiny_model, prompt=PROMPT, layer=1, head=3, length=2)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("o", "left_square_bracket", "o")
        await settle(pilot)
        both = frozenset({(0, 3), (1, 3)})
        app.run_prompt("Another prompt")
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        assert app.scope.view.ablation.heads == both
        assert app.scope.steps == 2
        write_checkpoint(tmp_path, n_layer=1, n_head=4, n_positions=128)
        said = []
        app.notify = lambda message, **kwargs: said.append(message)
        smaller = load_model(tmp_path)
        app.switch_model(smaller, ModelInfo.of(smaller, "one layer", "path", "one layer"))
        await settle(pilot)
        assert app.session.ablation.heads == {(0, 3)}
        assert app.scope.view.ablation.heads == {(0, 3)}
        assert any("no L1H3" in message for message in said)


@pytest.mark.anyio
async def test_e_fills_in_each_heads_total_effect(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("E")
        await wait_for(pilot, lambda: app.scope.effects is not None and app.scope.effects.done)
        await settle(pilot)
        e, view = app.scope.effects, app.scope.view
        assert e.position == view.n_tokens - 1
        base = float(view.logits[e.target])
        for layer, head in [(0, 1), (1, 3)]:
            alone = Run.rerun(view, Ablation(heads=frozenset({(layer, head)})))
            effect = float(alone.logits[e.target]) - base
            assert e.rows[layer][head] == pytest.approx(effect, rel=1e-3, abs=1e-5)
        assert "total effects (zero)" in shown(app.screen.query_one("#attribution"))


@pytest.mark.anyio
async def test_esc_cancels_the_head_effects_and_then_goes_back(tiny_model, monkeypatch):
    started = threading.Event()

    def held(view, position, target, contrast, mode, on_row=None, cancelled=lambda: False):
        on_row(0, [0.5] * view.config.n_head)
        started.set()
        for _ in range(1000):  # until esc, and at most ten seconds
            if cancelled():
                return []
            threading.Event().wait(0.01)
        return []

    monkeypatch.setattr("gpt2scope.tui.app.head_effects", held)
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("E")
        await wait_for(pilot, lambda: started.is_set() and app.scope.effects.n_done == 1)
        assert "effects" in shown(app.screen.query_one("#attribution"))
        await pilot.press("escape")
        await pilot.pause()
        assert on_contributions(app)  # esc cancelled, it did not go back
        assert app.scope.effects.cancelled
        assert "cancelled" in shown(app.screen.query_one("#attribution"))
        await pilot.press("escape")
        await pilot.pause()
        assert not on_contributions(app)


def test_contributions_snapshot(snap_compare, tiny_model):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        await pilot.press("c", "down", "right")
        await settle(pilot)

    app = make_app(tiny_model, prompt=PROMPT, length=4, temperature=0.0)
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
