"""Parameters pushed past their range, by key and by flag: clamped or refused with a
message, never an exception."""

from __future__ import annotations

import pytest

from gpt2scope.engine import load_model
from gpt2scope.tui.app import ScopeApp
from gpt2scope.tui.cli import main
from tests.conftest import write_checkpoint
from tests.driver import make_app, settle
from tests.reliability import (  # noqa: F401 (fixtures)
    anyio_backend,
    no_runner_left_behind,
    one_line_error,
    run_cli,
)

pytestmark = pytest.mark.anyio

PROMPT = "Hello world, this is a test."
PRESSES = 30  # more than any ladder has rungs


@pytest.fixture(scope="module")
def small_vocab_model(tmp_path_factory):
    """A model with 300 tokens: fewer than the top-k key's highest rung."""
    directory = tmp_path_factory.mktemp("small-vocab")
    write_checkpoint(directory, n_layer=1, n_head=2, n_embd=32, n_positions=64, vocab_size=300)
    return load_model(directory)


async def generate(pilot) -> None:
    await pilot.press("g")
    await settle(pilot)


@pytest.mark.slow
async def test_temperature_keys_stop_at_zero_and_the_maximum(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, length=3)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*["T"] * PRESSES)
        assert app.runner.params.temperature == app.scope.settings.params.temperature == 5.0
        await generate(pilot)
        assert app.scope.steps == 3
        await pilot.press(*["t"] * PRESSES)
        assert app.runner.params.temperature == 0.0
        await generate(pilot)
        assert app.scope.steps == 6 and app.scope.sampled[-1].rank == 0


@pytest.mark.slow
async def test_top_k_keys_reach_one_and_off(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, length=3, temperature=1.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*["k"] * PRESSES)
        assert app.runner.params.top_k == 1
        await generate(pilot)
        assert [r.rank for r in app.scope.sampled] == [0, 0, 0]
        await pilot.press(*["K"] * PRESSES)
        assert app.runner.params.top_k == 0  # off
        await generate(pilot)
        assert app.scope.steps == 6 and app.scope.prediction.n_kept == 50257


@pytest.mark.slow
async def test_top_k_past_the_vocabulary_is_clamped_to_it(small_vocab_model):
    app = make_app(small_vocab_model, prompt="a!b", length=3)  # ids below 300
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*["K"] * 12)  # the ladder's 500 and 1000 are past 300
        assert app.scope.settings.params.top_k == app.runner.params.top_k == 300
        await generate(pilot)
        assert app.scope.steps == 3 and app.scope.prediction.n_kept == 300
        await pilot.press("k")
        assert app.runner.params.top_k == 200


@pytest.mark.slow
async def test_top_p_keys_stop_at_their_limits(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, length=2, top_k=0, temperature=1.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*["u"] * PRESSES)
        assert app.runner.params.top_p == 0.1
        await generate(pilot)
        await pilot.press(*["U"] * PRESSES)
        assert app.runner.params.top_p == 1.0
        await generate(pilot)
        assert app.scope.steps == 4


@pytest.mark.slow
async def test_length_keys_stop_at_one_and_the_context(tiny_model):
    n_ctx = tiny_model.config.n_ctx
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*["n"] * PRESSES)
        assert app.scope.settings.length == 1
        await pilot.press(*["N"] * PRESSES)
        assert app.scope.settings.length == n_ctx
        await generate(pilot)
        assert app.scope.finish == "context limit" and app.scope.n_tokens == n_ctx


async def test_length_zero_generates_nothing(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, length=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await generate(pilot)
        assert (app.scope.steps, app.scope.finish) == (0, "length")


FLAGS_PAST_RANGE = [
    (["--temperature", "-0.1"], "--temperature -0.1: must be in 0..5"),
    (["--temperature", "5.5"], "--temperature 5.5: must be in 0..5"),
    (["--temperature", "nan"], "--temperature nan: must be in 0..5"),
    (["--top-k", "-1"], "--top-k -1: must be 0 (off) or a count of tokens"),
    (["--top-k", "50258"], "--top-k 50258: the vocabulary has 50257"),
    (["--top-p", "-0.1"], "--top-p -0.1: must be in 0..1 (1 = off)"),
    (["--top-p", "1.5"], "--top-p 1.5: must be in 0..1"),
    (["--top-p", "nan"], "--top-p nan: must be in 0..1"),
    (["--length", "-1"], "--length -1"),
    (["--length", "129"], "--length 129: must be in 0..128"),
    (["--layer", "-1"], "--layer -1"),
    (["--layer", "2"], "--layer 2: the model has 2 layers, 0..1"),
    (["--head", "-1"], "--head -1"),
    (["--head", "4"], "--head 4: the model has 4 heads, 0..3"),
    (["--seed", "-1"], "--seed -1"),
    (["--seed", str(2**64)], f"--seed {2**64}"),
]


@pytest.mark.parametrize("command", [[], ["inspect"]], ids=["app", "inspect"])
@pytest.mark.parametrize("args, message", FLAGS_PAST_RANGE)
def test_flags_past_their_range_are_refused_in_one_line(
    capsys, monkeypatch, tiny_checkpoint, command, args, message
):
    monkeypatch.setattr(ScopeApp, "run", lambda self: pytest.fail("the app started"))
    code = main([*command, "--weights", str(tiny_checkpoint), *args])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_inspect_refuses_a_query_past_the_run(capsys, tiny_checkpoint):
    args = ["--weights", str(tiny_checkpoint), "--prompt", PROMPT, "--length", "0"]
    assert main(["inspect", *args, "--query", "-9"]) == 1
    assert "--query -9: the run has 8 tokens, 0..7" in capsys.readouterr().err


def test_a_flag_that_is_not_a_number_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["inspect", "--top-k", "many"])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "--top-k: invalid int value: 'many'" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_the_app_refuses_a_seed_past_the_generator_in_a_fresh_process(tiny_checkpoint):
    """The seed reaches torch only once the app is running: refused before it starts."""
    result = run_cli("--weights", str(tiny_checkpoint), "--seed", str(2**64), timeout=60)
    assert f"--seed {2**64}: must be in 0..2**63-1" in one_line_error(result)


def test_inspect_clamps_the_width(capsys, tiny_checkpoint):
    args = ["--weights", str(tiny_checkpoint), "--prompt", PROMPT, "--length", "2"]
    assert main(["inspect", *args, "--width", str(10**9)]) == 0
    widest = max(len(line) for line in capsys.readouterr().out.splitlines())
    assert 100 < widest <= 1000
    assert main(["inspect", *args, "--width", "-5"]) == 0
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 40
