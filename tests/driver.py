"""Helpers for driving the app from tests: build it on a given model (and the `sampler`
fixture's sampler) and wait for the runner."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

from textual.pilot import Pilot

from gpt2scope.engine import Model, Sampler, sample
from gpt2scope.tui.app import ScopeApp
from gpt2scope.tui.cli import Options, app_parser, options_from, settings_from
from gpt2scope.tui.session import ModelInfo
from gpt2scope.tui.widgets import Pane
from gpt2scope.weights import DownloadCancelled

SETTLE_TIMEOUT = 20.0


def options(**changes: object) -> Options:
    """The command line's defaults, with `changes`."""
    return replace(options_from(app_parser().parse_args([])), **changes)


def make_app(
    model: Model,
    name: str = "tiny",
    origin: str = "path",
    sampler: Sampler = sample,
    **changes: object,
) -> ScopeApp:
    """The app as `gpt2scope` would open it on `model`, with the flags' `changes`."""
    info = ModelInfo.of(model, name, origin, f"{name} ({origin})")
    o = options(**changes)
    return ScopeApp(
        model, info, settings_from(o), o.prompt, o.device, sampler=sampler, layout=o.layout
    )


def settled(app: ScopeApp) -> bool:
    """No command is outstanding and the screen shows the result."""
    # A deeper screen's figure is computed in a worker after the scope arrives.
    computing = getattr(app.screen, "computing", 0) or app.reading_writes
    return not app.outstanding and app.scope is app.session.scope() and not computing


async def settle(pilot: Pilot, timeout: float = SETTLE_TIMEOUT) -> None:
    """Wait until every command sent has finished and the screen shows the result."""
    app = pilot.app
    deadline = time.monotonic() + timeout
    while not settled(app):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the runner did not settle: commands {app.outstanding} outstanding")
        await pilot.pause(0.02)
    await pilot.pause()


async def wait_for(pilot: Pilot, done: Callable[[], bool], timeout: float = SETTLE_TIMEOUT) -> None:
    """Wait until `done()` is true, failing after `timeout` seconds instead of hanging."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting after {timeout} s")
        await pilot.pause(0.02)


def shown(pane: Pane) -> str:
    """The text a pane shows now, one line per line."""
    return "\n".join(map(str, pane.shown_lines()))


class HeldDownload:
    """Stands in for `download`: reports half of a 10 MB file, then waits to be cancelled."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def __call__(self, name, progress, cancel, on_progress):
        on_progress("model.safetensors", 5_000_000, 10_000_000)
        if cancel.wait(timeout=10):
            self.cancelled.set()
        raise DownloadCancelled(f"download of {name} cancelled")
