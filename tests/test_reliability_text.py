"""Awkward text: blank prompts, prompts longer than the context or exactly as long, wide and
combining characters in labels and axes, end-of-text typed and generated."""

from __future__ import annotations

import pytest
import torch
from rich.cells import cell_len

from gpt2scope.engine import gpt2_tokenizer, load_model
from gpt2scope.tui.cli import main
from gpt2scope.tui.keep_tail import KeepTailScreen
from gpt2scope.tui.text import Pieces
from gpt2scope.tui.views.attention import key_label_rows, row_label, window
from gpt2scope.tui.views.continuation import steps_table
from gpt2scope.tui.views.probabilities import render_probabilities
from gpt2scope.tui.views.qkv import render_qkv
from gpt2scope.tui.views.query import render_query
from gpt2scope.tui.widgets import PromptInput
from tests.driver import make_app, settle, shown
from tests.reliability import (  # noqa: F401 (fixtures)
    COMBINING_IDS,
    WIDE_TEXT,
    anyio_backend,
    new_runner_threads,
    no_runner_left_behind,
    notices,
    run_cli,
    runner_threads,
    screen_lines,
    session_of,
)

pytestmark = pytest.mark.anyio

PROMPT = "Hello world, this is a test."


def words(n_tokens: int) -> str:
    """A prompt of exactly `n_tokens` GPT-2 tokens."""
    text = " word" * n_tokens
    assert len(gpt2_tokenizer().encode(text)) == n_tokens
    return text


async def submit(pilot, prompt: str) -> None:
    editor = pilot.app.query_one(PromptInput)
    editor.value = prompt
    editor.focus()
    await pilot.press("enter")


async def test_a_whitespace_only_prompt_is_refused_and_the_run_kept(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        before = app.scope.view.tokens
        await submit(pilot, "  \\n\\t  ")
        await settle(pilot)
        assert "empty" in await notices(pilot)
        assert app.scope.view.tokens == before


async def test_a_too_long_prompt_offers_to_keep_the_last_n_ctx_tokens(tiny_model):
    n_ctx = tiny_model.config.n_ctx
    prompt = "Start:" + words(n_ctx + 20)
    ids = gpt2_tokenizer().encode(prompt)
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await submit(pilot, prompt)
        await pilot.pause()
        assert isinstance(app.screen, KeepTailScreen)
        text = "\n".join(screen_lines(app))
        assert f"The prompt is {len(ids)} tokens; the model's context is {n_ctx}." in text
        assert f"keep the last {n_ctx}" in text
        await pilot.press("y")
        await settle(pilot)
        assert list(app.scope.view.tokens) == ids[-n_ctx:]
        assert app.session.prompt == gpt2_tokenizer().decode(ids[-n_ctx:])
        await pilot.press("g")
        await settle(pilot)
        assert (app.scope.steps, app.scope.finish) == (0, "context limit")


async def test_the_kept_end_of_a_too_long_prompt_still_starts_with_end_of_text_if_asked(
    tiny_model,
):
    n_ctx = tiny_model.config.n_ctx
    ids = gpt2_tokenizer().encode("Start:" + words(n_ctx + 20))
    app = make_app(tiny_model, prompt=gpt2_tokenizer().decode(ids), bos=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert f"The prompt is {len(ids) + 1} tokens" in "\n".join(screen_lines(app))
        await pilot.press("y")
        await settle(pilot)
        eot = gpt2_tokenizer().eot_id
        assert list(app.scope.view.tokens) == [eot, *ids[1 - n_ctx :]]
        assert app.session.prompt == gpt2_tokenizer().decode(ids[1 - n_ctx :])


@pytest.mark.slow
async def test_declining_the_offer_keeps_the_last_run(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        before = app.scope.view.tokens
        for answer in ("n", "escape"):
            await submit(pilot, words(200))
            assert isinstance(app.screen, KeepTailScreen)
            await pilot.press(answer)
            await settle(pilot)
            assert not isinstance(app.screen, KeepTailScreen)
            assert app.scope.view.tokens == before


async def test_a_too_long_prompt_option_gets_the_offer_at_start(tiny_model):
    app = make_app(tiny_model, prompt=words(300))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, KeepTailScreen)
        await pilot.press("enter")
        await settle(pilot)
        assert app.scope.n_tokens == tiny_model.config.n_ctx


def test_inspect_says_how_long_the_prompt_is_and_the_limit(capsys, tiny_checkpoint):
    args = ["--weights", str(tiny_checkpoint), "--prompt", words(200)]
    assert main(["inspect", *args]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert "the prompt is 200 tokens; the model's context is 128" in err


async def test_a_prompt_of_exactly_n_ctx_tokens_runs_and_says_the_context_is_full(tiny_model):
    n_ctx = tiny_model.config.n_ctx
    app = make_app(tiny_model, prompt=words(n_ctx))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.scope.n_tokens == n_ctx
        await pilot.press("g")
        await settle(pilot)
        assert (app.scope.steps, app.scope.finish) == (0, "context limit")
        assert "context full" in shown(app.query_one("#continuation"))


def wide_ids() -> list[int]:
    return gpt2_tokenizer().encode(WIDE_TEXT) + COMBINING_IDS


def test_a_lone_combining_mark_gets_something_to_sit_on():
    pieces = Pieces(gpt2_tokenizer())
    for token_id in COMBINING_IDS:
        label = pieces(token_id).label
        assert cell_len(label) >= 1 and cell_len(label[0]) == 1, repr(label)


def same_width(lines) -> bool:
    return len({cell_len(line.plain) for line in lines}) == 1


@pytest.mark.parametrize("width", [40, 80, 158])
def test_wide_and_combining_labels_keep_every_table_aligned(tiny_model, width):
    session = session_of(tiny_model, wide_ids(), 2)
    for query in (0, 4, 20, None):
        session.update(query=query)
        scope = session.scope()
        w = window(scope, width, 40)
        assert all(cell_len(row_label(scope, i, w).plain) == w.prefix for i in range(w.r0, w.r1))
        keys = w.prefix + len(w.columns) * w.cell_width
        assert all(cell_len(row.plain) == keys for row in key_label_rows(scope, w)[1:])
        assert same_width(render_query(scope, width, 60).lines[3:-1])
        qkv = render_qkv(scope, width, 200).lines
        assert same_width([line for line in qkv if line.plain[:2].strip("k").isdigit()])
        candidates = render_probabilities(scope, width, 30).lines
        assert same_width([line for line in candidates if line.plain.endswith("%")])
        assert same_width(steps_table(scope, 10, width)[1:])


@pytest.mark.slow
async def test_wide_labels_fill_each_terminal_line_exactly(tiny_model):
    app = make_app(tiny_model, prompt=WIDE_TEXT, length=4)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        app.send(lambda r: r.start_tokens(wide_ids()))
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        for query in range(0, app.scope.n_tokens, 3):
            app.change(query=query)
            await pilot.pause()
            widths = {cell_len(line) for line in screen_lines(app)}
            assert widths == {160}, query


async def test_a_typed_end_of_text_is_plain_text(tiny_model):
    app = make_app(tiny_model, prompt="Hello<|endoftext|>world", length=6, temperature=0.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert 50256 not in app.scope.view.tokens
        await pilot.press("g")
        await settle(pilot)
        assert (app.scope.steps, app.scope.finish) == (6, "length")


@pytest.mark.slow
async def test_end_of_text_from_the_model_stops_says_why_and_can_continue(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    eot = gpt2_tokenizer().eot_id
    with torch.no_grad():  # make end-of-text the model's only answer
        model.params.ln_f.weight.zero_()
        model.params.ln_f.bias.copy_(model.params.wte[eot])
        model.params.wte[eot] *= 50
    app = make_app(model, prompt=PROMPT, length=6)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        assert (app.scope.steps, app.scope.finish) == (1, "end-of-text")
        assert "stopped: <|endoftext|>" in shown(app.query_one("#continuation"))
        await pilot.press("g")
        await settle(pilot)
        assert (app.scope.steps, app.scope.finish) == (2, "end-of-text")


@pytest.mark.slow
def test_inspect_on_a_terminal_that_cannot_encode_its_glyphs(tiny_checkpoint):
    args = ["inspect", "--weights", str(tiny_checkpoint), "--prompt", "Hi 漢字", "--length", "1"]
    result = run_cli(*args, PYTHONIOENCODING="ascii")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.isascii() and b"Traceback" not in result.stderr
    assert b"== Attention ==" in result.stdout and b"\\u6f22" in result.stdout
