"""A run as `inspect` prints it and the app exports it: every pane and deeper screen, as one
JSON object or as plain text, made from the specs in tui/views."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from gpt2scope.engine import (
    Ablation,
    attribution,
    default_target,
    head_effects,
    saliency,
)
from gpt2scope.engine.ablation import NO_ABLATION
from gpt2scope.engine.probe import induction_probe
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import Pieces, token_json, visible
from gpt2scope.tui.views import PANES, SCREENS, Drawn, render_header
from gpt2scope.tui.views.attribution import attribution_json, token_of
from gpt2scope.tui.views.history import chosen_index
from gpt2scope.tui.views.model_map import probe_json
from gpt2scope.tui.views.page import Page
from gpt2scope.tui.views.patching import (
    Patching,
    measured,
    pair_of,
    patching_json,
    patching_text,
)

CANDIDATE_LINES = 24  # the probabilities pane: the top candidates, not all 64


@dataclass(frozen=True)
class Why:
    """What `inspect` explains at the query: the target (None: the next token, or the top
    prediction after the last), an optional contrast, the knock-outs the run went through,
    and whether to knock out every head in turn."""

    target: int | None = None
    contrast: int | None = None
    ablation: Ablation = NO_ABLATION
    head_effects: bool = False
    # --corrupt: the corrupted prompt's tokens, and the answer patching measures LD with.
    corrupt: list[int] | None = None
    answer: int | None = None
    induction_probe: int | None = None  # --induction-probe's N


def why_json(scope: Scope, pieces: Pieces, why: Why) -> dict[str, Any]:
    """The run-level keys of issue 24: attribution, saliency, and ablation and head_effects
    when asked for."""
    view, position = scope.view, scope.query
    target = default_target(view, position) if why.target is None else why.target
    dla = attribution(view, position, target, why.contrast)
    out: dict[str, Any] = {
        "attribution": attribution_json(dla, pieces),
        "saliency": {
            "position": position,
            "target": token_of(target, pieces),
            "method": "gradient_x_input",
            "scores": saliency(view, position, target),
        },
    }
    if not why.ablation.empty:
        out["ablation"] = why.ablation.json()
    if why.head_effects:
        mode = why.ablation.mode  # --ablation's, also when nothing else is knocked out
        out["head_effects"] = {
            "mode": str(mode),
            "target": out["attribution"]["target"],
            "contrast": out["attribution"]["contrast"],
            "base": dla.model_value,
            "effects": head_effects(view, position, target, why.contrast, mode),
        }
    if why.corrupt is not None:
        out["patching"] = patching_json(patching_of(scope, pieces, why))
    if why.induction_probe is not None:
        probe = induction_probe(
            view.config, view.params, view.ablation, why.induction_probe, scope.settings.seed
        )
        out["induction_probe"] = probe_json(probe)
    return out


def patching_of(scope: Scope, pieces: Pieces, why: Why) -> Patching:
    """The clean prompt's tokens (not the continuation) against --corrupt's."""
    view = scope.view
    clean = list(view.tokens[: scope.prompt_length])
    pair = pair_of(view.config, view.params, clean, why.corrupt, pieces, why.answer, why.contrast)
    return measured(pair, pieces)


def run_json(scope: Scope, pieces: Pieces, why: Why | None = None) -> dict[str, Any]:
    """The model, the settings and the run, then every pane's and every screen's keys, and
    with `why` the attribution keys."""
    s = scope.settings
    model = asdict(scope.info)
    model.update(model.pop("config"))  # one flat record: name, ..., n_layer, ...
    out: dict[str, Any] = {
        "model": model,
        "prompt": scope.prompt,
        **asdict(s.params),
        "length": s.length,
        "seed": s.seed,
        "bos": s.bos,
        "tokens": [token_json(p) for p in scope.pieces],
        "prompt_tokens": scope.prompt_length,
        "layer": s.layer,
        "head": s.head,
        "query": scope.query,
    }
    for pane in PANES:
        if pane.json is not None:
            out |= pane.json(scope)
    for screen in SCREENS:
        out[screen.id] = screen.json(screen.figure(scope, pieces), scope, pieces)
    if why is not None and scope.view is not None:
        out |= why_json(scope, pieces, why)
    return out


def screens_text(scope: Scope, pieces: Pieces, width: int, height: int) -> list[tuple[str, Drawn]]:
    """Each deeper screen drawn for `inspect --format text`, the step-through at every stage."""
    drawn = []
    for screen in SCREENS:
        figure = screen.figure(scope, pieces)
        if screen.text_at_every_cursor:
            cursors = range(screen.cursor.count(scope))
        else:
            cursors = [chosen_index(scope)]
        for cursor in cursors:
            title = (
                f"{screen.title}, stage {cursor + 1}"
                if screen.text_at_every_cursor
                else screen.title
            )
            drawn.append(
                (
                    title,
                    screen.render(Page(scope, figure, scope, cursor, live=False), width, height),
                )
            )
    return drawn


def run_text(scope: Scope, pieces: Pieces, width: int, why: Why | None = None) -> str:
    """The header, the six panes and the deeper screens as plain text, and with --corrupt
    the patching maps."""
    lines = [line.plain for line in render_header(scope, width, live=False)]
    lines.append(f"prompt: {visible(scope.prompt)}")
    height = max(40, scope.n_tokens + 8)
    if scope.attn is not None:  # what the app reads on a worker, here read in line
        scope = replace(scope, writes=scope.attn.read_writes(scope.query))
    for pane in PANES:
        pane_height = CANDIDATE_LINES if pane.id == "probabilities" else height
        lines += ["", f"== {pane.title} ==".ljust(width, "=")]
        lines += [line.plain for line in pane.render(scope, width, pane_height).lines]
    for title, drawn in screens_text(scope, pieces, width, height):
        lines += ["", f"== {title} ==".ljust(width, "=")]
        lines += [line.plain for line in drawn.lines]
    if why is not None and why.corrupt is not None and scope.view is not None:
        lines += ["", "== Patching ==".ljust(width, "=")]
        lines += patching_text(patching_of(scope, pieces, why), width)
    return "\n".join(line.rstrip() for line in lines) + "\n"
