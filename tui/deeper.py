"""The deeper views, beyond the six panes: each is a screen of its own, opened by one key, and
a key of `inspect --format json`. Per view: how to draw it, what its figure depends on, how
to compute the figure (off the UI thread in the app) and how to write it as JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.table import Table
from rich.text import Text

from gpt2scope.engine import SampleRecord
from gpt2scope.engine.analysis import HeadStats
from gpt2scope.tui.figures import (
    Block,
    Lens,
    Page,
    Stages,
    block_figure,
    lens_figure,
    map_figure,
    stages_figure,
)
from gpt2scope.tui.keys import KEYS, SCREEN_KEYS, Key
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import Piece, Pieces, token_json
from gpt2scope.tui.views.block import render_block
from gpt2scope.tui.views.common import Drawn
from gpt2scope.tui.views.history import render_history
from gpt2scope.tui.views.lens import render_lens
from gpt2scope.tui.views.model_map import render_model_map
from gpt2scope.tui.views.stages import N_STAGES, render_stages

HISTORY_CANDIDATES = 10  # per step in the JSON


@dataclass(frozen=True)
class Deeper:
    id: str  # the screen's name and the JSON key
    title: str
    render: Callable[[Page, int, int], Drawn]
    about: str  # for the help screen: what the numbers mean
    # What the figure is computed from (objects by id: the screen keeps the scope it
    # computed from alive), and how; a view with no figure draws straight from the scope.
    depends: Callable[[Scope], tuple]
    compute: Callable[[Scope, Pieces], Any] | None
    json: Callable[[Any, Scope, Pieces], Any]
    # False for a figure too costly to recompute at every token: it waits for the run.
    while_generating: bool = True

    @property
    def action(self) -> str:
        return f"open('{self.id}')"

    @property
    def key(self) -> str:
        """The key that opens it, as help writes it."""
        return next(k.shown for k in KEYS if k.action == self.action)

    @property
    def keys(self) -> tuple[Key, ...]:
        """Its own keys, on top of the app's."""
        return SCREEN_KEYS[self.id]


def compute_stages(scope: Scope, pieces: Pieces) -> Stages:
    s = scope.settings
    return stages_figure(scope.view, s.layer, s.head, scope.query)


def compute_map(scope: Scope, pieces: Pieces) -> tuple[HeadStats, ...]:
    return map_figure(scope.view)


def compute_lens(scope: Scope, pieces: Pieces) -> Lens:
    return lens_figure(scope.view, scope.query, pieces)


def compute_block(scope: Scope, pieces: Pieces) -> Block:
    return block_figure(scope.view, scope.settings.layer, scope.query)


def scores_json(scores: Any) -> list[float | None]:
    """JSON has no -inf: a masked score is null."""
    return [None if math.isinf(x) else x for x in scores.tolist()]


def stages_json(s: Stages, scope: Scope, pieces: Pieces) -> dict[str, Any]:
    return {
        "layer": s.layer,
        "head": s.head,
        "query": s.query,
        "resid_pre": s.resid_pre.tolist(),
        "ln_mean": s.ln_mean,
        "ln_std": s.ln_std,
        "normalized": s.normalized.tolist(),
        "q": s.q.tolist(),
        "k": s.k.tolist(),
        "v": s.v.tolist(),
        "raw_scores": s.raw_scores.tolist(),
        "scaled_scores": scores_json(s.scaled_scores),
        "pattern": s.pattern.tolist(),
        "z": s.z.tolist(),
    }


def head_stats_json(
    stats: tuple[HeadStats, ...], scope: Scope, pieces: Pieces
) -> list[dict[str, Any]]:
    return [
        {
            "layer": h.layer,
            "head": h.head,
            "entropy_bits": h.entropy,
            "first_token": h.first_token,
            "previous_token": h.previous_token,
            "self_token": h.self_token,
            "kind": h.kind,
        }
        for h in stats
    ]


def lens_json(lens: Lens, scope: Scope, pieces: Pieces) -> dict[str, Any]:
    return {
        "position": lens.position,
        "target": {**token_json(lens.target), "is_next": lens.target_is_next},
        "rows": [
            {
                "layer": row.layer,
                # read through the model's own softmax: nothing is sampled here
                "top": [{**token_json(piece), "model_probability": p} for piece, p in row.top],
                "target_model_probability": row.target,
            }
            for row in lens.rows
        ],
    }


def block_json(block: Block, scope: Scope, pieces: Pieces) -> dict[str, Any]:
    b = block.internals
    return {
        "layer": b.layer,
        "position": b.position,
        "resid_pre_norm": b.resid_pre_norm,
        "attn_out_norm": b.attn_out_norm,
        "resid_mid_norm": b.resid_mid_norm,
        "mlp_out_norm": b.mlp_out_norm,
        "resid_post_norm": b.resid_post_norm,
        "ln_1": {"mean": b.ln_1[0], "std": b.ln_1[1]},
        "ln_2": {"mean": b.ln_2[0], "std": b.ln_2[1]},
        "mlp_post": block.mlp_post.tolist(),
        "top_neurons": [{"index": i, "activation": a} for i, a in b.top_neurons],
    }


def step_json(step: int, piece: Piece, record: SampleRecord, pieces: Pieces) -> dict[str, Any]:
    argmax = record.candidate_ids[0]  # candidates come sorted by logit, ties by id
    top = zip(
        record.candidate_ids, record.candidate_probs, record.candidate_probs_filtered, strict=True
    )
    return {
        "step": step,
        "chosen": {
            **token_json(piece),
            "probability": record.probability,
            "model_probability": record.model_probability,
            "rank": record.rank,
        },
        "argmax": {**token_json(pieces(argmax)), "model_probability": record.candidate_probs[0]},
        "entropy_bits": record.entropy,
        "sampled_entropy_bits": record.sampled_entropy,
        "temperature": record.params.temperature,
        "top_k": record.params.top_k,
        "top_p": record.params.top_p,
        "top": [
            {**token_json(pieces(i)), "model_probability": p, "probability": sampled}
            for i, p, sampled in list(top)[:HISTORY_CANDIDATES]
        ],
    }


def history_json(figure: None, scope: Scope, pieces: Pieces) -> list[dict[str, Any]]:
    return [
        step_json(i + 1, piece, record, pieces)
        for i, (piece, record) in enumerate(zip(scope.history_pieces, scope.history, strict=True))
    ]


def view_identity(scope: Scope) -> int:
    return id(scope.view)


DEEPER = (
    Deeper(
        "stages",
        "Step-through",
        render_stages,
        "one attention row of layer L head H for the query token, in its five stages with "
        "the real numbers: (1) resid_pre after ln_1 and its q, k, v; (2) q·k per key; (3) "
        "÷√d_head, keys after the query masked to -inf; (4) softmax: the pattern; (5) z = "
        "Σ w·v, checked against the engine's head output",
        lambda s: (view_identity(s), s.settings.layer, s.settings.head, s.query),
        compute_stages,
        stages_json,
    ),
    Deeper(
        "head_stats",
        "Model map",
        render_model_map,
        "every layer × head over the current text, named prev (P), sink (S), self (=) by the "
        "pattern with ≥50% of its weight, with that mass (%), or other (?), and the entropy "
        "(bits: low is focused, high is broad); tall cells add bars for the mass on position "
        "0, the previous token and the query itself",
        lambda s: (view_identity(s),),
        compute_map,
        head_stats_json,
        while_generating=False,
    ),
    Deeper(
        "logit_lens",
        "Logit lens",
        render_lens,
        "the top 5 next tokens at the query position read after every block (ln_f, then the "
        "unembedding tied to wte), with probabilities; the last row is the model's output; "
        "right: the probability of the next token in the text (at the end: the output's top)",
        lambda s: (view_identity(s), s.query),
        compute_lens,
        lens_json,
    ),
    Deeper(
        "block",
        "Block internals",
        render_block,
        "layer L at the query token: |x| of resid_pre, attn_out, resid_mid, mlp_out and the "
        "block's output, the mean and std ln_1 and ln_2 normalise by, and the 4·n_embd "
        "mlp_post activations after GELU (orange +, blue −) with the top neurons",
        lambda s: (view_identity(s), s.settings.layer, s.query),
        compute_block,
        block_json,
    ),
    Deeper(
        "history",
        "History",
        render_history,
        "every generation step: the text with the step shown reversed, what it chose (p, "
        "rank) against the argmax, where the query before it looked, and its candidates; "
        "the other views show that step too; enter puts the candidate under the cursor in "
        "the chosen one's place and generates the rest again",
        lambda s: (),
        None,
        history_json,
    ),
)
BY_ID = {d.id: d for d in DEEPER}


def figure_of(deeper: Deeper, scope: Scope, pieces: Pieces) -> Any:
    """The figure computed in line (None for a view drawn from the scope alone)."""
    return None if deeper.compute is None else deeper.compute(scope, pieces)


def deeper_json(scope: Scope, pieces: Pieces) -> dict[str, Any]:
    """Every deeper view's key of `inspect --format json`."""
    return {d.id: d.json(figure_of(d, scope, pieces), scope, pieces) for d in DEEPER}


def deeper_text(scope: Scope, pieces: Pieces, width: int, height: int) -> list[tuple[str, Drawn]]:
    """Each deeper view drawn for `inspect --format text`, the step-through at every stage."""
    drawn = []
    for d in DEEPER:
        figure = figure_of(d, scope, pieces)
        stages = d.id == "stages"
        for cursor in range(N_STAGES) if stages else [chosen_index(scope)]:
            title = f"{d.title}, stage {cursor + 1}" if stages else d.title
            drawn.append((title, d.render(Page(scope, figure, scope, cursor), width, height)))
    return drawn


def chosen_index(scope: Scope) -> int:
    """Where the shown step's chosen token is among its candidates (0 with none)."""
    p = scope.step_prediction
    if p is None:
        return 0
    ids = [c.piece.token_id for c in p.candidates]
    return ids.index(p.chosen.token_id) if p.chosen.token_id in ids else 0


def deeper_table() -> Table:
    """The deeper views for the help screen: key, name, what the numbers mean, own keys."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for d in DEEPER:
        text = Text.assemble((d.title, "bold"), f": {d.about}.")
        if d.keys:
            text.append("\n" + " · ".join(f"{k.shown} {k.help}" for k in d.keys), "italic")
        table.add_row(d.key, text)
    return table
