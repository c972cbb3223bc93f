"""The logit lens: the next-token prediction read off the residual stream after every block
(final LayerNorm ln_f, then the unembedding tied to wte), so the prediction can be watched
forming layer by layer. The last row is the model's real output. The right-hand column
follows one token through the layers: the one that comes next in the text, or, at the last
position, the model's own top choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.text import Text

from gpt2scope.engine.analysis import logit_lens_top
from gpt2scope.engine.run import RunView
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import Piece, Pieces, token_json
from gpt2scope.tui.views.common import Drawn, piece_text
from gpt2scope.tui.views.page import Page, not_ready, page_note, wrapped_note
from gpt2scope.tui.views.spec import ScreenSpec, view_identity
from gpt2scope.tui.views.style import CHOSEN, DIM, HEADING, NOTE, bar, sequential_style

LENS_TOP = 5
BLOCK_WIDTH = 6  # " 11 = "
TARGET_BAR = 8
ENTRY_GAP = 2


@dataclass(frozen=True)
class LensRow:
    layer: int  # read after this block
    top: tuple[tuple[Piece, float], ...]  # the likeliest next tokens and their probabilities
    target: float  # the probability of the lens's target token


@dataclass(frozen=True, eq=False)
class Lens:
    """The next-token prediction read off the residual stream after every block, through
    ln_f and the tied unembedding; the last row is the model's own output. The target is
    the token that follows in the text, or, at the last position, the model's top choice."""

    position: int
    rows: tuple[LensRow, ...]
    target: Piece
    target_is_next: bool


def lens_figure(view: RunView, position: int, pieces: Pieces, k: int = LENS_TOP) -> Lens:
    lens = logit_lens_top(view, position, k)
    rows = tuple(
        LensRow(
            r.layer, tuple(zip(map(pieces, r.top_ids), r.top_probs, strict=True)), r.target_prob
        )
        for r in lens.rows
    )
    return Lens(position, rows, pieces(lens.target), lens.target_is_next)


def probability(p: float) -> str:
    """Four cells, all probabilities (no percentages beside powers of ten): .43, .043,
    below .01 a power of ten (2e-4), as early blocks spread their mass thin over the
    vocabulary, and below 1e-9, where the exponent would need a fifth cell, ≈0."""
    if p >= 0.995:
        return " 1.0"
    if p >= 0.0995:
        return f"{p:.2f}"[1:].rjust(4)
    if p >= 0.00995:
        return f"{p:.3f}"[1:]
    if p >= 9.5e-10:
        return f"{p:.0e}".replace("e-0", "e-")
    return "  ≈0"


def title(page: Page[Lens]) -> Text:
    lens, scope = page.figure, page.source
    text = Text(f"logit lens · position {lens.position} ", HEADING)
    text.append_text(piece_text(scope.pieces[lens.position], 12))
    text.append(" → next token", HEADING)
    text.append_text(page_note(page))
    return text


def target_note(lens: Lens) -> Text:
    which = "the text's next token" if lens.target_is_next else "the output's top token"
    text = Text(f"right: p of {which} ", NOTE)  # the token last: it may be a comma
    text.append_text(piece_text(lens.target, 14, style=CHOSEN))
    return text


def render_lens(page: Page[Lens], width: int, height: int) -> Drawn:
    empty = not_ready(page, width)
    if empty is not None:
        return empty
    lens = page.figure
    k = len(lens.rows[0].top)
    target_width = 1 + 4 + (1 + TARGET_BAR if width >= 100 else 0)
    number = 1 + 4 + ENTRY_GAP  # after each label
    longest = max(cell_len(p.label) for row in lens.rows for p, _ in row.top)
    room = (width - BLOCK_WIDTH - target_width) // k - number
    label_width = max(3, min(14, longest, room))
    entry = label_width + number
    head = [
        title(page),
        *wrapped_note(
            "read after each block through ln_f and the unembedding (wte); = is the output",
            width,
        ),
        target_note(lens),
        Text("block " + f"top {k}".ljust(entry * k) + " " + "p".rjust(4), DIM),
    ]
    target_id = lens.target.token_id
    rows = []
    for row in lens.rows:
        last = row is lens.rows[-1]
        line = Text(f"{row.layer:>3} {'=' if last else ' '} ", HEADING if last else DIM)
        for piece, p in row.top:
            style = CHOSEN if piece.token_id == target_id else None
            line.append_text(piece_text(piece, label_width, pad=True, style=style))
            line.append(" " + probability(p) + " " * ENTRY_GAP, HEADING if last else "")
        line.append(" " + probability(row.target), CHOSEN)
        if width >= 100:
            line.append(" " + bar(row.target, TARGET_BAR), sequential_style(31))
        rows.append(line)
    drawn = Drawn([*head, *rows], focus=len(head) + len(rows) - 1, pinned=len(head))
    for line in drawn.lines:
        line.truncate(width)
    return drawn


def compute_lens(scope: Scope, pieces: Pieces) -> Lens:
    return lens_figure(scope.view, scope.query, pieces)


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


SPEC = ScreenSpec(
    id="logit_lens",
    title="Logit lens",
    key="l",
    label="lens",
    summary="logit lens: the prediction after every block",
    render=render_lens,
    about="the top 5 next tokens at the query position read after every block (ln_f, then the "
    "unembedding tied to wte), with probabilities (0 to 1: .43 is 43%); the last row is the "
    "model's output; right: the probability of the next token in the text (at the end: "
    "the output's top)",
    depends=lambda s: (view_identity(s), s.query),
    compute=compute_lens,
    json=lens_json,
)
