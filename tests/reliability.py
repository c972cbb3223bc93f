"""Helpers shared by the tests/test_reliability_*.py files: what the terminal would receive,
notices on screen, threads left behind."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
import unicodedata
from pathlib import Path

import pytest
from textual.pilot import Pilot

from gpt2scope.engine import Failed, Finished, Model, Runner, gpt2_tokenizer
from gpt2scope.engine.sampling import SamplingParams
from gpt2scope.tui.app import ScopeApp
from gpt2scope.tui.session import ModelInfo, Session, Settings

ROOT = Path(__file__).resolve().parent.parent
RUNNER_THREAD = "gpt2scope-runner"
# Strings that act on a terminal when written raw: colours, clear-screen, the window title,
# a hyperlink, the bracketed-paste markers, C1 controls, bidi overrides and isolates,
# zero-width characters.
NASTY = (
    "colour \x1b[31mred\x1b[0m",
    " clear \x1b[2J\x1b[H",
    " title \x1b]0;pwned\x07",
    " link \x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\",
    " paste \x1b[200~ end \x1b[201~",
    " c0 \x00\x07\x08\r\x0b\x0c\x7f c1 \x85\x9b\x9d\x9c",
    " bidi \u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069 gnp.exe",
    " zero \u200b\u200c\u200d\u200e\u200f\u2060\ufeff width",
)
NASTY_PROMPT = "".join(NASTY)
# CJK and kana (two cells each), emoji split over byte tokens, Hangul, and tokens that are a
# lone combining mark (a stroke overlay, an Arabic vowel sign, a variation selector) or a
# Devanagari vowel sign: nothing of their own to draw on.
WIDE_TEXT = "Hi 漢字の・ー 😀👍🏽 한국어 é"
COMBINING_IDS = [48869, 24333, 37929, 48077, 44208]


def is_unsafe(char: str) -> bool:
    """A character that must never reach a terminal raw: it moves the cursor, starts an
    escape sequence, reorders the line or draws nothing."""
    code = ord(char)
    return (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or 0x200B <= code <= 0x200F
        or 0x202A <= code <= 0x202E
        or 0x2060 <= code <= 0x2069
        or code == 0xFEFF
        or unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp", "Cs"}
    )


def unsafe_in(text: str, allowed: str = "\n") -> list[str]:
    return sorted({f"U+{ord(c):04X}" for c in text if is_unsafe(c) and c not in allowed})


def screen_lines(app: ScopeApp) -> list[str]:
    """The text a full repaint writes to the terminal, line by line: every segment Textual
    writes raw between its own cursor moves and colour codes."""
    update = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    return [
        "".join(seg.text for strip in line for seg in strip if not seg.control)
        for line in update.strips
    ]


def screen_text(app: ScopeApp) -> str:
    return "\n".join(screen_lines(app))


async def notices(pilot: Pilot, tries: int = 50) -> str:
    """The text of the notifications on screen, once they have been mounted."""
    for _ in range(tries):
        toasts = pilot.app.screen.query("Toast")
        if toasts:
            return " ".join(str(t.render()) for t in toasts)
        await pilot.pause(0.02)
    return ""


def runner_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == RUNNER_THREAD and t.is_alive()}


def new_runner_threads(before: set[threading.Thread], grace: float = 1.0) -> set:
    """Runner threads started since `before` and still alive after `grace` seconds."""
    deadline = time.monotonic() + grace
    while (left := runner_threads() - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def gpt2scope_process(*args: str, code: str = "", **env: str) -> subprocess.Popen:
    """Start `gpt2scope ARGS` in a fresh process, running the Python `code` first."""
    program = (
        f"import sys\n{code}\nfrom gpt2scope.tui.cli import main\nsys.exit(main(sys.argv[1:]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", program, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", **env},
    )


def run_cli(
    *args: str, code: str = "", timeout: float = 120, **env: str
) -> subprocess.CompletedProcess:
    """Run `gpt2scope ARGS` in a fresh process to its end."""
    process = gpt2scope_process(*args, code=code, **env)
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The single stderr line of a failed command; asserts that it is one, without a
    traceback, with nothing on stdout."""
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode != 0, err
    assert result.stdout == b"", result.stdout[:200]
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    return err


def session_of(model: Model, token_ids: list[int], length: int) -> Session:
    """Run the tokens and a generation through a real runner, as the app does."""
    tok = gpt2_tokenizer()
    session = Session(ModelInfo.of(model, "tiny", "path", "tiny"), tok, Settings())
    events: queue.Queue = queue.Queue()
    runner = Runner(model, events.put, SamplingParams(), 0, tok)
    try:
        runner.start_tokens(token_ids)
        runner.generate(length)
        while not isinstance(event := events.get(timeout=60), Finished):
            assert not isinstance(event, Failed), event
            session.apply(event)
        session.apply(event)
    finally:
        runner.close()
    return session


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def no_runner_left_behind():
    """Used by every reliability test: no case may leave the runner's thread alive."""
    before = runner_threads()
    yield
    assert not new_runner_threads(before)
