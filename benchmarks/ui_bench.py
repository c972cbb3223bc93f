"""The UI's timings, on the real app at 120x40: each pane's render over a 256-token run,
the delay from a key press to the repainted screen while tokens are being generated
(Textual's pilot), and the cold start of the command to its first full screen (tmux)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from textual.geometry import Region

from benchmarks.plan import Plan
from gpt2scope.engine import Model, gpt2_tokenizer
from gpt2scope.tui.app import ScopeApp
from gpt2scope.tui.views import PANES
from gpt2scope.tui.views.common import NO_RUN
from gpt2scope.tui.widgets import Pane
from tests.driver import make_app, settle

WIDTH, HEIGHT = 120, 40
PASSAGE = (
    "The trophy doesn't fit in the suitcase because it is too big. The city councilmen "
    "refused the demonstrators a permit because they feared violence. "
)
GENERATED = 32  # of the render run's tokens, generated rather than prompted
RENDER_REPEATS = 10
PRESS_GAP_S = 0.1  # between key presses, so that tokens arrive in between
WAIT_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 300.0  # a prefill and a generation of GPT-2 small, on a busy machine
COLD_START_TIMEOUT_S = 60.0
POLL_S = 0.01


def measure(model: Model, model_dir: Path, plan: Plan, device: str) -> dict:
    """`model` is the app's; `model_dir` holds it on disk for the cold start."""
    in_app = asyncio.run(app_timings(model, plan))
    # Cold start needs a terminal to draw in; without tmux it is left out, not guessed.
    # The median of a few launches: right after the in-app runs, the first launch here took
    # 3.0-5.1 s and the next ones 2.1-2.7 s. This VM pages out memory left untouched for a
    # while, page cache included, so the first reads the weights and torch's libraries
    # from disk again.
    launches = range(plan.cold_starts) if shutil.which("tmux") else []
    cold = [cold_start_s(model_dir, device) for _ in launches]
    return {
        "width": WIDTH,
        "height": HEIGHT,
        **in_app,
        "cold_start_s": statistics.median(cold) if cold else None,
        "cold_starts_s": cold,
    }


def prompt_of(n_tokens: int) -> str:
    """Text of about n_tokens GPT-2 tokens."""
    tokenizer = gpt2_tokenizer()
    ids = tokenizer.encode(PASSAGE * (n_tokens // 20 + 1))[:n_tokens]
    return tokenizer.decode(ids)


async def app_timings(model: Model, plan: Plan) -> dict:
    generated = min(GENERATED, plan.ui_tokens // 4)
    prompt = prompt_of(plan.ui_tokens - generated)
    app = make_app(model, "bench", "path", prompt=prompt, length=generated)
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        await settle(pilot, SETTLE_TIMEOUT_S)
        await pilot.press("g")
        await settle(pilot, SETTLE_TIMEOUT_S)
        n_tokens = app.session.scope().n_tokens
        render = {pane.id: render_ms(pane) for pane in app.query(Pane)}
        presses = await key_repaint_ms(pilot, plan.ui_presses)
        await pilot.press("escape")
        await settle(pilot, SETTLE_TIMEOUT_S)
    return {
        "tokens": n_tokens,
        "render_ms": render,
        "key_repaint_ms": statistics.median(presses),
        "key_repaint_max_ms": max(presses),
        "presses": len(presses),
    }


def render_ms(pane: Pane) -> float:
    """Median time for the pane to draw a new snapshot of the same run into its lines: the
    view's render function and Textual's conversion to strips. A copy of the scope is a new
    snapshot, as each token brings, and the refresh drops Textual's cached lines, so each
    repeat draws from scratch."""
    crop = Region(0, 0, *pane.outer_size)
    times = []
    for _ in range(RENDER_REPEATS):
        pane.scope = dataclasses.replace(pane.scope)
        pane.refresh()
        start = time.perf_counter()
        pane.render_lines(crop)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


async def key_repaint_ms(pilot, presses: int) -> list[float]:
    """Press ] and [ (layer up, down) while a generation runs; for each press, the time
    until the screen is repainted showing the new layer. A tiny model may finish its
    generation after the first press; GPT-2 small generates for longer than all presses."""
    app: ScopeApp = pilot.app
    painted = spy_on_repaints(app)
    app.change(length=app.model.config.n_ctx)
    await pilot.press("g")
    latencies = []
    for i in range(presses):
        # The runner's own state, set on its thread: the app hears of it only later.
        if latencies and app.runner.state != "generating":
            break
        key, layer = ("right_square_bracket", 1) if i % 2 == 0 else ("left_square_bracket", 0)
        latencies.append(await press_to_repaint(pilot, painted, key, layer))
        await pilot.pause(PRESS_GAP_S)
    return [s * 1e3 for s in latencies]


def spy_on_repaints(app: ScopeApp) -> list[tuple[float, int]]:
    """Record (time, layer on screen) at each screen update. Textual hands every update to
    App._display, also in headless mode, after rendering the dirty widgets into it; no
    public hook fires at that moment."""
    painted: list[tuple[float, int]] = []
    display = app._display
    attention = app.query_one("#attention", Pane)

    def recording(screen, renderable) -> None:
        display(screen, renderable)
        if attention.scope is not None:
            painted.append((time.perf_counter(), attention.scope.settings.layer))

    app._display = recording
    return painted


async def press_to_repaint(pilot, painted: list, key: str, layer: int) -> float:
    start = time.perf_counter()
    await pilot.press(key)
    await until(pilot, lambda: repainted(painted, start, layer) is not None)
    return repainted(painted, start, layer) - start


def repainted(painted: list[tuple[float, int]], since: float, layer: int) -> float | None:
    """When the screen first showed `layer` after `since`, if it has."""
    return next((t for t, shown in painted if t > since and shown == layer), None)


async def until(pilot, condition: Callable[[], bool]) -> None:
    """Let the app run until `condition` holds."""
    deadline = time.perf_counter() + WAIT_TIMEOUT_S
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the app did not get there within {WAIT_TIMEOUT_S} s")
        await pilot.pause(POLL_S)


def app_command(model_dir: Path, device: str) -> list[str]:
    """The installed `gpt2scope` script beside this Python, else the same entry point."""
    script = Path(sys.executable).with_name("gpt2scope")
    launcher = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from gpt2scope.tui.cli import main; raise SystemExit(main())"]
    )
    return [*launcher, "--weights", str(model_dir), "--prompt", PASSAGE, "--device", device]


def cold_start_s(model_dir: Path, device: str) -> float:
    """Seconds from launching the command in a 120x40 tmux terminal to the first screen
    with all six panes showing the prompt's run. The tmux server is private to this call
    (its socket in a temporary folder), so no one else's sessions are touched."""
    command = shlex.join(app_command(model_dir, device))
    size = ["-x", str(WIDTH), "-y", str(HEIGHT)]
    with tempfile.TemporaryDirectory(prefix="gpt2scope-tmux-") as folder:
        tmux = ["tmux", "-f", os.devnull, "-S", str(Path(folder) / "socket")]
        start = time.perf_counter()
        subprocess.run([*tmux, "new-session", "-d", "-s", "bench", *size, command], check=True)
        try:
            while time.perf_counter() - start < COLD_START_TIMEOUT_S:
                if full_screen(capture(tmux)):
                    return time.perf_counter() - start
                time.sleep(POLL_S)
        finally:
            subprocess.run([*tmux, "kill-server"], capture_output=True)
    raise TimeoutError(f"no full screen within {COLD_START_TIMEOUT_S} s")


def capture(tmux: list[str]) -> str:
    """The text on the tmux terminal's screen now."""
    args = [*tmux, "capture-pane", "-p", "-t", "bench"]
    return subprocess.run(args, capture_output=True, text=True).stdout


def full_screen(screen: str) -> bool:
    return all(view.title in screen for view in PANES) and NO_RUN[-1] not in screen
