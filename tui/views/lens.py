"""The logit lens: the next-token prediction read off the residual stream after every block
(final LayerNorm ln_f, then the unembedding tied to wte), so the prediction can be watched
forming layer by layer. The last row is the model's real output. The right-hand column
follows one token through the layers: the one that comes next in the text, or, at the last
position, the model's own top choice.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text

from gpt2scope.tui.figures import Lens, Page
from gpt2scope.tui.views.common import Drawn, piece_text
from gpt2scope.tui.views.page import not_ready, page_note, wrapped_note
from gpt2scope.tui.views.style import CHOSEN, DIM, HEADING, NOTE, bar, sequential_style

BLOCK_WIDTH = 6  # " 11 = "
TARGET_BAR = 8
ENTRY_GAP = 2


def probability(p: float) -> str:
    """Four cells: 43%, 4.3%, below 0.1% a power of ten (2e-4), as early blocks spread
    their mass thin over the vocabulary, and below 1e-9, where the exponent would need a
    fifth cell, ≈0."""
    if p >= 0.0995:
        return f"{p:.0%}".rjust(4)
    if p >= 0.00095:
        return f"{p * 100:.1f}%"
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
