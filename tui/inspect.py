"""`gpt2scope inspect`: run the prompt and the generation with no UI, then print the views as
plain text or everything as one JSON object. The same runner and the same view functions as
the app, so the same options and seed give what the app would show."""

from __future__ import annotations

import argparse
import io
import json
import queue
import sys
from dataclasses import asdict
from typing import Any

import numpy as np

from gpt2scope.engine import (
    EngineError,
    Failed,
    Finished,
    Prefilled,
    Runner,
    SampleRecord,
    StateChanged,
    gpt2_tokenizer,
)
from gpt2scope.tui.cli import Options, add_run_options, options_from
from gpt2scope.tui.deeper import deeper_json, deeper_text
from gpt2scope.tui.heap import return_freed_memory
from gpt2scope.tui.models import OpenError, open_model
from gpt2scope.tui.session import (
    SAMPLE_PROMPT,
    Prediction,
    Scope,
    Session,
    check_settings,
    settings_from,
)
from gpt2scope.tui.text import Pieces, token_json, visible
from gpt2scope.tui.views import VIEWS, render_header

DEFAULT_WIDTH = 100
MIN_WIDTH, MAX_WIDTH = 40, 1000  # --width is clamped to these: a view costs width x height
CANDIDATE_LINES = 24  # the probabilities view: the top candidates, not all 64
RUN_TIMEOUT = 600.0  # seconds per command: a long generation on a big model on a CPU


def inspect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2scope inspect",
        description="Run the prompt and generate `length` tokens with no UI, then print the "
        "six views and the deeper screens as text, or everything as one JSON object. Same "
        "seed, same output.",
    )
    add_run_options(parser, editor=False)
    parser.add_argument(
        "--query",
        metavar="N",
        type=int,
        default=-1,
        help="the query token, 0-based; negative counts from the end (default -1, the last)",
    )
    parser.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="text: the six views and the deeper ones (default); json: one object with "
        "model, tokens, continuation, layer, head, query, pattern, probabilities, qkv, "
        "stages, head_stats, logit_lens, block and history",
    )
    parser.add_argument(
        "--width",
        metavar="N",
        type=int,
        default=DEFAULT_WIDTH,
        help=f"text width, {MIN_WIDTH}..{MAX_WIDTH} (default {DEFAULT_WIDTH})",
    )
    return parser


def run(session: Session, runner_events: queue.Queue, runner: Runner, prompt: str) -> None:
    """Prefill and generate, feeding every event to the session; raise on a failure."""
    runner.start_prompt(prompt, session.settings.bos)
    wait_for(session, runner_events, Prefilled)
    if session.settings.length:
        runner.generate(session.settings.length)
        wait_for(session, runner_events, Finished)
    session.apply(StateChanged("idle"))


def wait_for(session: Session, events: queue.Queue, kind: type) -> None:
    while True:
        try:
            event = events.get(timeout=RUN_TIMEOUT)
        except queue.Empty:
            raise EngineError(f"the model took more than {RUN_TIMEOUT:.0f} s") from None
        if isinstance(event, Failed):
            raise EngineError(event.message)
        session.apply(event)
        if isinstance(event, kind):
            return


def select_query(session: Session, query: int) -> None:
    n = session.scope().n_tokens
    index = query + n if query < 0 else query
    if not 0 <= index < n:
        raise ValueError(f"--query {query}: the run has {n} tokens, 0..{n - 1}")
    session.update(query=index)


def as_text(scope: Scope, width: int, pieces: Pieces) -> str:
    lines = [line.plain for line in render_header(scope, width, live=False)]
    lines.append(f"prompt: {visible(scope.prompt)}")
    height = max(40, scope.n_tokens + 8)
    for view in VIEWS:
        view_height = CANDIDATE_LINES if view.id == "probabilities" else height
        lines += ["", f"== {view.title} ==".ljust(width, "=")]
        lines += [line.plain for line in view.render(scope, width, view_height).lines]
    for title, drawn in deeper_text(scope, pieces, width, height):
        lines += ["", f"== {title} ==".ljust(width, "=")]
        lines += [line.plain for line in drawn.lines]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def prediction_json(p: Prediction) -> dict[str, Any]:
    return {
        "step": p.step,
        "chosen": None if p.chosen is None else p.chosen.token_id,
        **asdict(p.params),
        "entropy_bits": p.entropy,
        "sampled_entropy_bits": p.sampled_entropy,
        "n_kept": p.n_kept,
        "candidates": [
            {
                **token_json(c.piece),
                "model_probability": c.prob,
                "temperature_probability": c.prob_temperature,
                "probability": c.prob_sampled,
                "kept": c.kept,
            }
            for c in p.candidates
        ],
    }


def qkv_json(scope: Scope) -> dict[str, Any]:
    a, query = scope.attn, scope.query
    keys = a.top_keys(query)
    return {
        "q": a.q[query].tolist(),
        "keys": [
            {
                "index": j,
                "k": a.k[j].tolist(),
                "v": a.v[j].tolist(),
                "dot": float(np.dot(a.q[query].astype(np.float64), a.k[j])),
                "score": float(a.scores_row(query)[j]),
                "weight": float(a.pattern_row(query)[j]),
            }
            for j in keys
        ],
        "z": a.z_row(query).tolist(),
    }


def as_json(scope: Scope) -> dict[str, Any]:
    s = scope.settings
    model = asdict(scope.info)
    model.update(model.pop("config"))  # one flat record: name, ..., n_layer, ...
    return {
        "model": model,
        "prompt": scope.prompt,
        **asdict(s.params),
        "length": s.length,
        "seed": s.seed,
        "bos": s.bos,
        "tokens": [token_json(p) for p in scope.pieces],
        "prompt_tokens": scope.prompt_length,
        "continuation": [
            {**token_json(scope.pieces[scope.prompt_length + i]), **record_json(r)}
            for i, r in enumerate(scope.sampled)
        ],
        "finish": scope.finish,
        "layer": s.layer,
        "head": s.head,
        "query": scope.query,
        "pattern": scope.attn.pattern.tolist(),
        "probabilities": prediction_json(scope.prediction),
        "qkv": qkv_json(scope),
    }


def run_json(scope: Scope, pieces: Pieces) -> dict[str, Any]:
    """What `--format json` and the app's export write: as_json and the deeper views."""
    return {**as_json(scope), **deeper_json(scope, pieces)}


def record_json(record: SampleRecord) -> dict[str, Any]:
    return {
        "probability": record.probability,
        "model_probability": record.model_probability,
        "rank": record.rank,
    }


def inspect_main(argv: list[str]) -> int:
    args = inspect_parser().parse_args(argv)
    options = options_from(args)
    return_freed_memory()
    try:
        scope = inspected(options, args.query)
    except (ValueError, *OpenError) as e:
        print(f"gpt2scope inspect: error: {visible(str(e))}", file=sys.stderr)
        return 1
    pieces = Pieces(gpt2_tokenizer())
    if args.format == "json":
        # ASCII: no raw bidi or C1 code reaches a tty
        json.dump(run_json(scope, pieces), sys.stdout)
        sys.stdout.write("\n")
    else:
        if isinstance(sys.stdout, io.TextIOWrapper):
            # A terminal that cannot show a glyph gets its \u escape, not a traceback.
            sys.stdout.reconfigure(errors="backslashreplace")
        sys.stdout.write(as_text(scope, min(max(args.width, MIN_WIDTH), MAX_WIDTH), pieces))
    return 0


def inspected(options: Options, query: int) -> Scope:
    """Load, run and select: the scope the views are printed from."""
    settings = settings_from(options)
    model, info = open_model(options.weights, options.device)
    check_settings(settings, model.config)
    tokenizer = gpt2_tokenizer()
    session = Session(info, tokenizer, settings)
    events: queue.Queue = queue.Queue()
    runner = Runner(model, events.put, settings.params, settings.seed, tokenizer)
    prompt = options.prompt if options.prompt is not None else SAMPLE_PROMPT
    session.set_prompt(prompt)
    try:
        run(session, events, runner, prompt)
    finally:
        runner.close()
    select_query(session, query)
    return session.scope()
