"""Lessons: every built-in one loads and runs end to end on the demo model and on random
weights, what a step reveals is measured on the model loaded (a test changes the model and
sees the numbers change), and each measure agrees with an independent computation."""

from __future__ import annotations

import math
import string
from pathlib import Path

import pytest
import torch

from gpt2scope.engine import attribution, gpt2_tokenizer, load_model
from gpt2scope.engine.analysis import head_stats
from gpt2scope.engine.attribution import default_target
from gpt2scope.tui.lesson_bar import LessonBar, LessonNumber
from gpt2scope.tui.lessons import LessonError, built_in, correct_choice, find, load_file, measures
from gpt2scope.tui.lessons.measures import MEASURES
from gpt2scope.tui.lessons.progress import verdict
from gpt2scope.weights import DEMO_DIR
from tests.driver import make_app, settle, wait_for


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_DIR)


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_the_nine_lessons_of_the_issue_are_built_in():
    titles = [lesson.title for lesson in built_in()]
    assert len(titles) == 9
    for word in (
        "Tokens",
        "Embeddings",
        "five stages",
        "mask",
        "peaked",
        "Heads",
        "Sampling",
        "logit lens",
        "Why this token",
    ):
        assert any(word in title for title in titles), word


async def run_lesson(pilot, name: str) -> list[dict]:
    """Start the lesson, answer every step (the first choice, or 1), and return what each
    step revealed."""
    app = pilot.app
    app.start_lesson(find(name))
    revealed = []
    for index in range(len(app.lesson.lesson.steps)):
        await settle(pilot)
        step = app.lesson.step
        assert app.screen.name == step.screen  # None: the panes
        if step.choices:
            await pilot.press("1")
        else:
            await pilot.press("1", "enter")  # a digit opens the answer box
        await wait_for(pilot, lambda: app.lesson.measured is not None or app.lesson.error)
        assert not app.lesson.error, app.lesson.error
        assert placeholders(step.reveal) <= set(app.lesson.measured)
        text = str(app.screen.query_one(".lesson-text").render())
        assert "Measured on this model now" in text
        revealed.append(app.lesson.measured)
        if index + 1 < len(app.lesson.lesson.steps):
            await pilot.press("space")
            assert app.lesson.index == index + 1
    return revealed


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.parametrize("name", [lesson.name for lesson in built_in()])
async def test_every_lesson_runs_end_to_end_on_the_demo_and_on_random_weights(
    demo, tiny_model, name
):
    measured = {}
    for label, model in (("demo", demo), ("tiny", tiny_model)):
        app = make_app(model, label, "demo" if label == "demo" else "path", length=0)
        async with app.run_test(size=(80, 24)) as pilot:
            measured[label] = await run_lesson(pilot, name)
            await pilot.press("X")
            assert app.lesson is None and not app.query(".dimmed")
    assert len(measured["demo"]) == len(measured["tiny"])


@pytest.mark.anyio
async def test_a_step_sets_up_the_app_and_dims_all_but_its_pane(demo):
    app = make_app(demo, "demo", "demo", length=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot, "mask")
        step = app.lesson.step
        assert app.session.prompt == step.prompt and app.scope.query == 0
        dimmed = {pane.id for pane in app.query(".pane.dimmed")}
        assert dimmed == {"embeddings", "probabilities", "query", "qkv", "continuation"}
        await pilot.press("space")  # before an answer, the numbers stay hidden
        assert app.lesson.index == 0 and app.lesson.measured is None
        await pilot.press("3")
        await wait_for(pilot, lambda: app.lesson.measured is not None)
        assert app.lesson.measured["weight"] == pytest.approx(1.0)
        assert "right" in str(app.screen.query_one(".lesson-text").render())


def scope_of(model, prompt: str, layer=0, head=0, query=None):
    app = make_app(model, length=0)
    app.session.set_prompt(prompt)
    run = model.start(gpt2_tokenizer().encode(prompt))
    from gpt2scope.engine.runner import Prefilled

    app.session.apply(Prefilled(1, run.view()))
    app.session.update(layer=layer, head=head, query=query)
    return app.session.scope()


def test_the_revealed_numbers_come_from_the_model_loaded(demo, tiny_model):
    """Same step, two models: the measured numbers differ, and each equals its own model's."""
    prompt = "The cat sat on the mat because it was tired"
    for measure, args in (("row_entropy", {}), ("strongest_head", {"kind": "first"})):
        values = []
        for model in (demo, tiny_model):
            scope = scope_of(model, prompt, layer=0, head=1)
            values.append(MEASURES[measure](scope, args))
        assert values[0] != values[1]
    scope = scope_of(tiny_model, prompt, layer=0, head=1)
    pattern = scope.view.get("pattern", 0)[1, -1]
    entropy = float(-(pattern * torch.log2(pattern.clamp_min(1e-30))).sum())
    measured = MEASURES["row_entropy"](scope, {})
    assert measured["entropy"] == pytest.approx(entropy, abs=1e-4)
    assert measured["value"] == pytest.approx(entropy / math.log2(scope.n_tokens), abs=1e-4)
    stats = head_stats(scope.view)
    best = max(stats, key=lambda h: h.first_token)
    assert MEASURES["strongest_head"](scope, {"kind": "first"})["layer"] == best.layer


def test_measures_against_independent_computations(demo):
    scope = scope_of(demo, "The cat sat on the mat. The cat sat on the", query=None)
    tokens = MEASURES["token_count"](scope, {"text": " unbelievable"})
    assert tokens["value"] == len(gpt2_tokenizer().encode(" unbelievable"))
    assert MEASURES["embedding_sum"](scope, {})["value"] < 1e-5
    t = MEASURES["temperature_effect"](scope, {"temperature": 0.5})
    logits = scope.view.logits.double()
    top = int(logits.argmax())
    assert t["p_at_t"] == pytest.approx(float(torch.softmax(logits / 0.5, -1)[top]), rel=1e-6)
    assert t["value"] == "higher"
    lens = scope.view.logit_lens(scope.query)
    final = int(lens[-1].argmax())
    expected = min(i for i in range(len(lens)) if int(lens[i].argmax()) == final)
    assert MEASURES["lens_layer"](scope, {})["layer"] == expected
    scaling = MEASURES["scaling"](scope, {})
    assert scaling["entropy_unscaled"] <= scaling["entropy_scaled"] + 1e-9
    off = MEASURES["knock_out_effect"](scope, {})
    assert 0 <= off["after"] <= 1 and off["value"] in ("down", "up")


def test_choices_and_numbers_are_judged_against_the_measured_value():
    step = find("mask").steps[0]
    assert correct_choice(step, 1.0) == 2 and correct_choice(step, 0.3) == 0
    assert verdict(step, 2, 1.0)[0] == "right"
    assert "the model says 3" in verdict(step, 0, 1.0)[0]
    number = find("heads").steps[0]
    assert verdict(number, 2, 2)[0] == "exactly right"
    assert verdict(number, 0, 2)[0] == "off by 2"


@pytest.mark.parametrize(
    "body, message",
    [
        ("", "needs a title"),
        (
            'title = "x"\n[[steps]]\nlook = "a"\nask = "b"\nmeasure = "nope"\nreveal = "c"',
            "no measure 'nope'",
        ),
        (
            'title = "x"\n[[steps]]\nlook = "1\\n2\\n3\\n4"\nask = "b"\nmeasure = "scaling"\n'
            'reveal = "c"',
            "more than 3 lines",
        ),
        (
            'title = "x"\n[[steps]]\nlook = "a"\nask = "b"\nmeasure = "scaling"\nreveal = "c"\n'
            'pane = "nowhere"',
            "pane must be one of",
        ),
        (
            'title = "x"\n[[steps]]\nlook = "a"\nask = "b"\nmeasure = "scaling"\nreveal = "c"\n'
            "colour = 1",
            "unknown field 'colour'",
        ),
    ],
)
def test_a_bad_lesson_file_is_one_line_naming_it(tmp_path: Path, body: str, message: str):
    path = tmp_path / "mine.toml"
    path.write_text(body)
    with pytest.raises(LessonError, match=message) as e:
        load_file(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_teachers_own_file_is_a_lesson(tmp_path: Path):
    path = tmp_path / "mine.toml"
    path.write_text(
        'title = "Mine"\n[[steps]]\nprompt = "Hello"\nlook = "a"\nask = "b"\n'
        'measure = "row_entropy"\nreveal = "{entropy:.2f}"\n'
    )
    lesson = find(str(path))
    assert lesson.title == "Mine" and lesson.steps[0].asks_for_a_number


def test_the_knock_out_reveal_compares_with_the_intact_model_even_when_knocked_out(demo):
    from gpt2scope.engine import Ablation, AblationMode
    from gpt2scope.engine.runner import Reran

    prompt = "The cat sat on the mat. The cat sat on the"
    scope = scope_of(demo, prompt, layer=0, head=2)
    intact = MEASURES["knock_out_effect"](scope, {})
    off = Ablation(AblationMode.ZERO, frozenset({(0, 2)}))
    app = make_app(demo, length=0)
    app.session.set_prompt(prompt)
    from gpt2scope.engine.runner import Prefilled

    ids = gpt2_tokenizer().encode(prompt)
    app.session.apply(Prefilled(1, demo.start(ids).view()))
    app.session.apply(Reran(2, demo.start(ids, off).view()))
    app.session.update(layer=0, head=2)
    knocked = MEASURES["knock_out_effect"](app.session.scope(), {})
    assert knocked["before"] == pytest.approx(intact["before"], rel=1e-5)
    assert knocked["after"] == pytest.approx(intact["after"], rel=1e-5)
    assert intact["after"] != pytest.approx(intact["before"], rel=1e-3)


@pytest.mark.anyio
async def test_a_number_answer_leaves_the_app_keys_working_until_a_digit_is_typed(demo):
    """The box opens with a digit: before it the layer keys work; esc puts it away unsent
    and empty; what is typed is the answer."""
    app = make_app(demo, "demo", "demo", length=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot, "entropy")
        box = app.screen.query_one(LessonNumber)
        assert app.focused is not box
        layer = app.session.settings.layer
        await pilot.press("right_square_bracket")
        assert app.session.settings.layer == layer + 1
        await pilot.press("0", "full_stop", "5")
        assert app.focused is box and box.value == "0.5"
        await pilot.press("escape")
        assert app.focused is not box and box.value == "" and app.lesson.answer is None
        await pilot.press("left_square_bracket")
        assert app.session.settings.layer == layer
        await pilot.press("0", "full_stop", "2", "5", "enter")
        await wait_for(pilot, lambda: app.lesson.measured is not None)
        assert app.lesson.answer == 0.25
        assert "You said 0.25" in str(app.screen.query_one(".lesson-text").render())


@pytest.mark.anyio
@pytest.mark.parametrize("size, hidden", [((80, 24), True), ((120, 40), False)])
async def test_a_short_terminal_shows_only_the_steps_pane(demo, size, hidden):
    app = make_app(demo, "demo", "demo", length=0)
    async with app.run_test(size=size) as pilot:
        await started(pilot, "mask")
        shown = {pane.id for pane in app.query(".pane") if pane.display and pane.region.area}
        assert shown == ({"attention"} if hidden else {p.id for p in app.query(".pane")})
        assert app.query_one("#attention").region.height > (10 if hidden else 15)
        await pilot.press("X")
        await settle(pilot)
        assert all(pane.region.area for pane in app.query(".pane"))


@pytest.mark.anyio
async def test_a_step_opens_its_screen_at_its_stage_and_the_bar_comes_along(demo):
    app = make_app(demo, "demo", "demo", length=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot, "stages", screen="stages")
        assert app.screen.cursor == 0
        assert app.screen.query_one(LessonBar).display and "step 1/3" in bar_text(app)
        await pilot.press("3", "2", "enter")
        await wait_for(pilot, lambda: app.lesson.measured is not None)
        assert app.lesson.measured["value"] == demo.config.n_embd // demo.config.n_head
        await pilot.press("space")
        await settle(pilot)
        assert app.screen.name == "stages" and app.screen.cursor == 1
        # the step picked the head whose row the scale flattens most
        assert (app.session.settings.layer, app.session.settings.head) == measures.scaling_head(
            app.session.scope()
        )
        await pilot.press("X")
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is app.screen_stack[0]


@pytest.mark.anyio
async def test_keys_that_do_nothing_in_a_lesson_say_why_in_the_bar(demo):
    app = make_app(demo, "demo", "demo", length=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot, "sampling")
        text = lambda: str(app.screen.query_one(".lesson-text").render())  # noqa: E731
        await pilot.press("space")
        assert "answer first" in text()
        await pilot.press("9")
        assert "9 is not one of the choices 1-3" in text()
        await pilot.press("1")
        await wait_for(pilot, lambda: app.lesson.measured is not None)
        await pilot.press("space")
        assert "that was the last step" in text() and not app._notifications


@pytest.mark.anyio
async def test_a_digit_starts_a_lesson_from_the_list(demo):
    app = make_app(demo, "demo", "demo", length=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("escape", "L")  # out of the prompt editor, then the list
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        assert app.lesson.lesson.name == built_in()[3].name


def test_the_new_measures_against_independent_computations(demo):
    prompt = "The cat sat on the mat because it was tired"
    scope = scope_of(demo, prompt, layer=1, head=2, query=3)
    view = scope.view
    z = MEASURES["z_length"](scope, {})
    assert z["z_norm"] == pytest.approx(float(view.get("z", 1, 3)[2].norm()), rel=1e-4)
    v_norms = view.get("v", 1)[:4, 2].norm(dim=-1)
    assert z["v_max"] == pytest.approx(float(v_norms.max()), rel=1e-4)
    assert z["value"] == "not longer"
    masked = MEASURES["masked_keys"](scope, {})
    assert masked == {"value": "-inf", "masked": scope.n_tokens - 4, "visible": 4}
    assert MEASURES["head_size"](scope, {})["value"] == demo.config.n_embd // demo.config.n_head
    top = MEASURES["top_component"](scope, {})
    dla = attribution(view, 3, default_target(view, 3))
    best = max(dla.components, key=lambda c: c.value)
    assert top["name"] == best.name and top["push"] == pytest.approx(best.value)
    heads = [c for c in dla.components if c.head is not None]
    strongest = max(heads, key=lambda c: c.value)
    assert measures.top_head(scope) == (strongest.layer, strongest.head)


def test_the_scaling_reveal_never_contradicts_its_numbers(demo):
    """A saturated row (one key: query 0) is 'the same' either way, and says so."""
    scope = scope_of(demo, "The cat sat on the mat", query=0)
    measured = MEASURES["scaling"](scope, {})
    assert measured["value"] == "same" and "saturated" in measured["why"]


def test_a_head_knocked_out_to_zero_says_it_writes_nothing(demo):
    """Its z is 0, so every token ties at 0: the Query pane says so instead of listing ties."""
    from gpt2scope.engine import Ablation, AblationMode
    from gpt2scope.engine.runner import Prefilled, Reran
    from gpt2scope.tui.views.query import writes_of

    prompt = "The cat sat on the mat"
    ids = gpt2_tokenizer().encode(prompt)
    app = make_app(demo, length=0)
    app.session.set_prompt(prompt)
    app.session.apply(Prefilled(1, demo.start(ids).view()))
    app.session.update(layer=1, head=2)
    assert "writes nothing" not in str(writes_of(app.session.scope(), 80))
    off = Ablation(AblationMode.ZERO, frozenset({(1, 2)}))
    app.session.apply(Reran(2, demo.start(ids, off).view()))
    assert "writes nothing" in str(writes_of(app.session.scope(), 80))


@pytest.mark.anyio
async def test_the_bar_says_how_to_leave_where_the_screen_takes_x(demo):
    """On the contributions screen X is the previous target: the bar says esc first."""
    app = make_app(demo, "demo", "demo", length=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot, "why", screen="attribution")
        assert "esc, then X leaves" in bar_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert "X leaves" in bar_text(app) and "esc, then" not in bar_text(app)


async def started(pilot, name: str, screen: str | None = None) -> None:
    """The lesson started once the app has settled, and its step set up (on its screen)."""
    await settle(pilot)
    pilot.app.start_lesson(find(name))
    await wait_for(pilot, lambda: pilot.app.screen.name == screen)
    await settle(pilot)


def bar_text(app) -> str:
    return str(app.screen.query_one(".lesson-text").render())


@pytest.mark.anyio
async def test_a_lesson_starts_on_the_whole_model(demo):
    """A knock-out left from before (lesson 9's o) would change every later reveal."""
    app = make_app(demo, "demo", "demo", length=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.action_knock_out()
        await settle(pilot)
        assert not app.session.ablation.empty
        await started(pilot, "lens")
        assert app.session.ablation.empty and app.scope.view.ablation.empty


def test_a_typed_number_that_rounds_to_the_value_is_right():
    step = find("entropy").steps[0]
    assert verdict(step, 0.8, 0.7984)[0] == "right"
    assert verdict(step, 0.7, 0.7984)[0].startswith("off")
