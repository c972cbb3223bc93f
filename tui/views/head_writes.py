"""What a head writes, as one line of text shared by the Query pane and the contributions
screen: the tokens its output z_h @ W_O[h] promotes and suppresses most, read through ln_f
(its scale frozen) and the unembedding (gpt2scope.engine.analysis.head_writes)."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

from gpt2scope.engine.analysis import HeadWrites
from gpt2scope.tui.text import Pieces
from gpt2scope.tui.views.common import longest_fitting, piece_text
from gpt2scope.tui.views.page import COMPUTING
from gpt2scope.tui.views.style import DIM, NEGATIVE, POSITIVE

PROMOTED = Style(color=f"rgb{POSITIVE}")
SUPPRESSED = Style(color=f"rgb{NEGATIVE}")
TOKEN_CELLS = 10


def writes_line(w: HeadWrites, pieces: Pieces, width: int, label: str, numbers: bool) -> Text:
    """`label`, then + and the promoted tokens, − and the suppressed, alternating so that
    both show when only a few fit; `numbers` adds each one's logit term."""
    line = Text(label, DIM)
    entries = []
    for (up, up_value), (down, down_value) in zip(w.promoted, w.suppressed, strict=True):
        entries += [("+", up, up_value, PROMOTED), ("−", down, down_value, SUPPRESSED)]
    for sign, token, value, style in entries:
        entry = Text(f" {sign}", style)
        entry.append_text(piece_text(pieces(token), TOKEN_CELLS, style=style))
        if numbers:
            entry.append(f" {value:+.2f}", DIM)
        if line.cell_len + entry.cell_len > width:
            break
        line.append_text(entry)
    return line


def unread_writes(failed: bool, width: int) -> Text:
    """In place of the writes line until the app has read them (tui/app.py)."""
    if not failed:
        return Text(f"writes {COMPUTING}", DIM)
    return Text(longest_fitting(("writes: could not be worked out", "writes: failed"), width), DIM)
