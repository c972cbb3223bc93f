"""Faults: the runner raising mid-command, quitting mid-prefill and mid-generation, the
weights file changing under the running app, too little memory, a model that overflows."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time

import pytest

import gpt2scope.engine.run
from gpt2scope.engine import load_model
from gpt2scope.tui.help import HelpScreen
from tests.conftest import write_checkpoint
from tests.driver import make_app, settle
from tests.reliability import (  # noqa: F401 (fixtures)
    anyio_backend,
    gpt2scope_process,
    new_runner_threads,
    no_runner_left_behind,
    notices,
    one_line_error,
    run_cli,
    runner_threads,
)

pytestmark = pytest.mark.anyio

PROMPT = "Hello world, this is a test."
LONG_PROMPT = " one two three" * 36  # 108 tokens: two prefill chunks


def non_daemon_threads() -> set[threading.Thread]:
    """Those that would keep the process alive. Not the event loop's pooled executor threads
    ("asyncio_N"), which Textual's thread workers run on: `asyncio.run` joins them when the
    app's loop ends, and under the pilot the test's loop outlives the app."""
    return {
        t
        for t in threading.enumerate()
        if not t.daemon and t.is_alive() and not t.name.startswith("asyncio_")
    }


def fail_on_call(monkeypatch, owner, name: str, call: int) -> None:
    """Make `owner.name` raise on its `call`-th call (1-based), then behave again."""
    real = getattr(owner, name)
    calls = 0

    def faulty(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == call:
            raise RuntimeError("injected fault")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, faulty)


def slow(monkeypatch, owner, name: str, seconds: float) -> None:
    real = getattr(owner, name)

    def slowed(*args, **kwargs):
        time.sleep(seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, slowed)


async def test_a_fault_mid_generation_leaves_the_app_usable(tiny_model, sampler):
    app = make_app(tiny_model, sampler=sampler.fail(call=3), prompt=PROMPT, length=6)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        assert "RuntimeError: injected fault" in await notices(pilot)
        assert (app.scope.steps, app.scope.state) == (2, "idle")
        await pilot.press("g")
        await settle(pilot)
        assert (app.scope.steps, app.scope.finish) == (8, "length")


@pytest.mark.slow
async def test_a_fault_mid_prefill_keeps_the_last_run(tiny_model, monkeypatch):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        before = app.scope.view.tokens
        fail_on_call(monkeypatch, gpt2scope.engine.run.Run, "extend", 1)
        await pilot.press("p", *"New words", "enter")
        await settle(pilot)
        assert "injected fault" in await notices(pilot)
        assert app.scope.view.tokens == before and app.scope.state == "idle"
        await pilot.press("p", "enter")
        await settle(pilot)
        assert app.scope.view.tokens != before


async def test_quitting_mid_prefill_exits_within_a_second(tiny_model, monkeypatch):
    slow(monkeypatch, gpt2scope.engine.run.Run, "extend", 0.3)
    threads = non_daemon_threads()
    app = make_app(tiny_model, prompt=LONG_PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        while app.session.state != "prefilling":
            await pilot.pause(0.01)
        started = time.monotonic()
        await pilot.press("q")
    assert time.monotonic() - started < 1.0
    assert not app.runner.alive and non_daemon_threads() <= threads


@pytest.mark.slow
async def test_ctrl_q_over_the_help_screen_mid_generation_exits_within_a_second(
    tiny_model, sampler
):
    threads = non_daemon_threads()
    app = make_app(tiny_model, sampler=sampler.slow(0.05), prompt=PROMPT, length=100)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g", "question_mark")
        while app.scope.steps < 2:
            await pilot.pause(0.01)
        assert isinstance(app.screen, HelpScreen) and app.session.state == "generating"
        started = time.monotonic()
        await pilot.press("ctrl+q")
    assert time.monotonic() - started < 1.0
    assert not app.runner.alive and non_daemon_threads() <= threads


@pytest.mark.slow
async def test_the_weights_file_changing_or_vanishing_under_the_app(tiny_checkpoint, tmp_path):
    directory = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, directory)
    model = load_model(directory)
    app = make_app(model, prompt=PROMPT, seed=5)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        first = app.scope.view.tokens
        weights = directory / "model.safetensors"
        weights.write_bytes(b"\xff" * weights.stat().st_size)
        await pilot.press("p", "enter", "g")  # the same prompt again, from the same seed
        await settle(pilot)
        assert app.scope.view.tokens == first
        shutil.rmtree(directory)
        await pilot.press("p", "enter", "g")
        await settle(pilot)
        assert app.scope.view.tokens == first


MEMORY_FAULTS = {
    "refused up front": (
        "import gpt2scope.engine.load\ngpt2scope.engine.load.available_memory = lambda: 1000",
        "out of memory: the weights need",
    ),
    "MemoryError while copying": (
        "import gpt2scope.engine.model\n"
        "def exhausted(*args, **kwargs):\n    raise MemoryError\n"
        "gpt2scope.engine.model.to_params = exhausted",
        "out of memory while loading the weights",
    ),
}


@pytest.mark.parametrize("command", [[], ["inspect"]], ids=["app", "inspect"])
@pytest.mark.parametrize("fault", MEMORY_FAULTS)
@pytest.mark.slow
def test_out_of_memory_while_loading_is_said_in_one_line(tiny_checkpoint, command, fault):
    code, message = MEMORY_FAULTS[fault]
    result = run_cli(*command, "--weights", str(tiny_checkpoint), code=code, timeout=60)
    assert message in one_line_error(result)


@pytest.fixture(scope="module")
def overflowing_checkpoint(tmp_path_factory):
    """Finite weights so large that the activations overflow float32 to inf and NaN."""
    directory = tmp_path_factory.mktemp("overflowing")
    write_checkpoint(directory, n_layer=1, n_head=2, n_embd=32, n_positions=32, scale=1e12)
    return directory


async def test_a_model_that_overflows_is_a_notice_not_a_crash(overflowing_checkpoint):
    app = make_app(load_model(overflowing_checkpoint), prompt=PROMPT)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        assert "not finite" in await notices(pilot)
        assert app.scope.view is None
        await pilot.press("g")
        await settle(pilot)
        assert app.is_running


@pytest.mark.slow
def test_inspect_says_in_one_line_that_a_model_overflows(overflowing_checkpoint):
    result = run_cli("inspect", "--weights", str(overflowing_checkpoint), "--prompt", "Hi")
    assert "not finite" in one_line_error(result)


@pytest.mark.slow
def test_ctrl_c_during_inspect_is_one_line_and_exit_130(tiny_checkpoint, tmp_path):
    started = tmp_path / "started"
    # A shell without job control starts background commands with SIGINT ignored, and the
    # child would inherit that; ctrl+c from a terminal arrives with the default handler.
    code = (
        "import functools, signal, time, gpt2scope.tui.inspect as inspect\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "def stuck(*args, **kwargs):\n"
        f"    open({str(started)!r}, 'w').close()\n"
        "    time.sleep(30)\n"
        "inspect.Runner = functools.partial(inspect.Runner, sampler=stuck)"
    )
    args = ["inspect", "--weights", str(tiny_checkpoint), "--prompt", "Hi", "--length", "3"]
    process = gpt2scope_process(*args, code=code)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=10)
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    assert process.returncode == 130
    assert "interrupted" in one_line_error(result)


@pytest.mark.slow
def test_a_reader_that_stops_early_gets_no_traceback(tiny_checkpoint):
    """`gpt2scope inspect | head`: the pipe closes while inspect still writes (40 tokens of
    JSON are some 180 kB, more than a pipe holds)."""
    args = ("--weights", str(tiny_checkpoint), "--length", "40", "--format", "json")
    process = gpt2scope_process("inspect", *args)
    process.stdout.read(10)
    process.stdout.close()  # as head does once it has its lines
    err = process.stderr.read().decode("utf-8", "replace")
    assert process.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
