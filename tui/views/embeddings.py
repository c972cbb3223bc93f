"""The embeddings view: the prompt as BPE pieces with their ids, and for the selected token
the rows of the token embedding (wte), the positional embedding (wpe) and their sum, the
residual stream that enters block 0."""

from __future__ import annotations

import math

import numpy as np
from rich.cells import cell_len
from rich.style import Style
from rich.text import Text

from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import Piece
from gpt2scope.tui.views.common import Drawn, append_if_fits, longest_fitting, no_run, piece_text
from gpt2scope.tui.views.spec import PaneSpec, on_view
from gpt2scope.tui.views.style import (
    DIM,
    HEADING,
    NOTE,
    SELECTED,
    pooled,
    signed_legend,
    signed_numbers,
    signed_strip,
)

# Alternate two backgrounds so that neighbouring pieces stay apart without a separator.
PIECE_STYLES = (Style(bgcolor="grey23"), Style(bgcolor="grey30"))
ID_STYLE = Style(color="grey62")
SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def chip(piece: Piece, index: int, width: int, selected: bool) -> Text:
    text = piece_text(piece, max(1, width - 8), style=PIECE_STYLES[index % 2])
    if selected:
        text.stylize(SELECTED)
    text.append(str(piece.token_id).translate(SUBSCRIPTS), ID_STYLE)
    return text


def chip_width(piece: Piece, width: int) -> int:
    return min(cell_len(piece.label), max(1, width - 8)) + len(str(piece.token_id))


def wrapped_rows(sizes: list[int], width: int) -> list[int]:
    """The line each chip lands on when chips of `sizes` wrap at `width`, one space apart."""
    rows, row, used = [], 0, 0
    for size in sizes:
        if used and used + 1 + size > width:
            row, used = row + 1, 0
        used += size + (1 if used else 0)
        rows.append(row)
    return rows


def first_shown(sizes: list[int], query: int, width: int, height: int) -> int:
    """The first piece to show so that the query lands near the middle of `height` lines,
    found by packing lines leftwards from the query."""
    lines, used = 1, sizes[query]
    for i in range(query - 1, -1, -1):
        if used + 1 + sizes[i] > width:
            lines, used = lines + 1, sizes[i]
            if lines > height // 2 + 1:
                return i + 1
        else:
            used += 1 + sizes[i]
    return 0


def token_stream(scope: Scope, width: int, height: int) -> list[Text]:
    """Every piece followed by its id in subscript digits, wrapped at token boundaries: the
    `height` lines around the selected token, with … where pieces are left out. Sizes
    first, so that only the pieces on screen are built."""
    inner = width - 2  # room for the … marks
    sizes = [chip_width(p, width) for p in scope.pieces]
    start = 0
    if wrapped_rows(sizes, inner)[-1] >= height:
        start = first_shown(sizes, scope.query, inner, height)
    rows = wrapped_rows(sizes[start:], inner)
    lines = [Text() for _ in range(min(height, rows[-1] + 1))]
    if start > 0:
        lines[0].append("…", NOTE)
    for i, row in enumerate(rows, start):
        if row < len(lines):
            line = lines[row]
            if line.cell_len:
                line.append(" ")
            line.append_text(chip(scope.pieces[i], i, width, i == scope.query))
    if rows[-1] >= len(lines):
        lines[-1].append(" …", NOTE)
    return lines


def first_numbers(values: np.ndarray, width: int) -> str:
    n = max(0, width // 6)
    shown = signed_numbers(values[:n], 6)
    return shown + (" …" if 0 < n < len(values) and width - len(shown) >= 2 else "")


def strip_rows(values: np.ndarray, scale: float, width: int, rows: int) -> list[Text]:
    cells = pooled(values, width * rows)
    return [signed_strip(cells[r * width : (r + 1) * width], scale) for r in range(rows)]


def render_embeddings(scope: Scope, width: int, height: int) -> Drawn:
    if scope.embedding is None:
        return no_run(width)
    query, piece = scope.query, scope.query_piece
    token_row, position_row, total = scope.embedding
    title = Text(f"token {query} ", HEADING)
    title.append_text(piece_text(piece, 16))
    append_if_fits(title, Text(f" id {piece.token_id}", DIM), width)

    n_embd = len(total)
    available = height - 1
    ideal_rows = math.ceil(n_embd / width)
    stream = token_stream(scope, width, max(1, available - 3 * (1 + ideal_rows)))
    rows = max(1, min(ideal_rows, (available - len(stream)) // 3 - 1))
    drawn = Drawn([title, *stream])
    scale = max(float(np.abs(v).max()) for v in (token_row, position_row, total)) or 1.0
    named = (
        (f"wte[{piece.token_id}]", token_row),
        (f"wpe[{query}]", position_row),
        ("wte+wpe = resid_pre[0]" if width >= 60 else "wte+wpe", total),
    )
    for name, values in named:
        info = Text(name, HEADING)
        if values is token_row and not token_row.any():
            # The demo model's training text uses about 30,600 of GPT-2's 50,257 tokens; the
            # others' rows are zero, and a strip of dots would look like a display fault.
            info.append(" untrained", NOTE)
            append_if_fits(info, Text(": all 0", NOTE), width)
        else:
            info.append(f" |x| {np.linalg.norm(values):.2f}", DIM)
            info.append(first_numbers(values, width - info.cell_len))
        drawn.add(info)
        drawn.lines += strip_rows(values, scale, width, rows)
    per_cell = math.ceil(n_embd / (width * rows))
    if len(drawn.lines) < height:
        legend = signed_legend()
        versions = (
            f"{n_embd} dims, {per_cell} per cell (largest |x|) ",
            f"{n_embd} dims, {per_cell} per cell ",
            f"{n_embd} dims ",
            "",
        )
        drawn.add(Text(longest_fitting(versions, width - legend.cell_len), NOTE) + legend)
    for line in drawn.lines:
        line.truncate(width)
    return drawn


SPEC = PaneSpec(
    id="embeddings",
    title="Embeddings",
    render=render_embeddings,
    about="the prompt's BPE pieces with ids (␣ space, ↵ newline, \\xNN bytes); for the selected "
    "token its wte row, wpe row and their sum (resid_pre[0]): each cell the largest |x| "
    "of its dims, glyph density |x| / max, orange +, blue -",
    depends=on_view,
    caption=(
        "what enters block 0: the token's row of wte plus its position's row",
        "what enters block 0: x = wte[id] + wpe[pos]",
        "what goes in: x = wte + wpe",
        "x = wte + wpe",
    ),
)
