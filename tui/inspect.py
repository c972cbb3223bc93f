"""`gpt2scope inspect`: run the prompt and the generation with no UI, then print the views as
plain text or everything as one JSON object. The same runner and the same view functions as
the app, so the same options and seed give what the app would show."""

from __future__ import annotations

import io
import json
import queue
import sys

from gpt2scope.engine import (
    Done,
    EngineError,
    Failed,
    Model,
    Runner,
    gpt2_tokenizer,
)
from gpt2scope.tui.report import Why, run_json, run_text
from gpt2scope.tui.session import SAMPLE_PROMPT, ModelInfo, Scope, Session, Settings
from gpt2scope.tui.text import Pieces
from gpt2scope.tui.views.common import count

RUN_TIMEOUT = 600.0  # seconds per command: a long generation on a big model on a CPU


def inspect(
    model: Model,
    info: ModelInfo,
    settings: Settings,
    prompt: str | None,
    query: int,
    fmt: str,
    width: int,
    why: Why | None = None,
) -> int:
    """Run, select the query and print the run as `fmt` (text or json); the exit status.
    Raises ValueError or EngineError, in one line, for what cannot be run or selected."""
    prompt = SAMPLE_PROMPT if prompt is None else prompt
    scope = inspected(model, info, settings, prompt, query, why)
    pieces = Pieces(gpt2_tokenizer())
    if fmt == "json":
        # ASCII: no raw bidi or C1 code reaches a tty
        json.dump(run_json(scope, pieces, why), sys.stdout)
        sys.stdout.write("\n")
    else:
        if isinstance(sys.stdout, io.TextIOWrapper):
            # A terminal that cannot show a glyph gets its \u escape, not a traceback.
            sys.stdout.reconfigure(errors="backslashreplace")
        sys.stdout.write(run_text(scope, pieces, width, why))
    return 0


def inspected(
    model: Model,
    info: ModelInfo,
    settings: Settings,
    prompt: str,
    query: int,
    why: Why | None = None,
) -> Scope:
    """Run (through the knocked-out model when `why` knocks something out) and select: the
    scope the views are printed from."""
    tokenizer = gpt2_tokenizer()
    session = Session(info, tokenizer, settings)
    events: queue.Queue = queue.Queue()
    runner = Runner(model, events.put, settings.params, settings.seed, tokenizer)
    session.set_prompt(prompt)
    try:
        if why is not None and not why.ablation.empty:
            wait_for(session, events, runner.set_ablation(why.ablation))
        run(session, events, runner, prompt)
    finally:
        runner.close()
    select_query(session, query)
    return session.scope()


def run(session: Session, runner_events: queue.Queue, runner: Runner, prompt: str) -> None:
    """Prefill and generate, feeding every event to the session; raise on a failure."""
    last = runner.start_prompt(prompt, session.settings.bos)
    if session.settings.length:
        last = runner.generate(session.settings.length)
    wait_for(session, runner_events, last)


def wait_for(session: Session, events: queue.Queue, command: int) -> None:
    """Until the Done of `command`, the last one asked."""
    while True:
        try:
            event = events.get(timeout=RUN_TIMEOUT)
        except queue.Empty:
            raise EngineError(f"the model took more than {RUN_TIMEOUT:.0f} s") from None
        if isinstance(event, Failed):
            raise EngineError(event.message)
        if isinstance(event, Done) and event.command == command:
            return
        session.apply(event)


def select_query(session: Session, query: int) -> None:
    n = session.scope().n_tokens
    index = query + n if query < 0 else query
    if not 0 <= index < n:
        raise ValueError(f"--query {query}: the run has {count(n, 'token')}, 0..{n - 1}")
    session.update(query=index)
