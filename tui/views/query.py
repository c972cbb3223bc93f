"""The query view: every key the selected query may see, by attention weight, with the score
the weight came from (weight = softmax of the scores over those keys)."""

from __future__ import annotations

import math

import numpy as np
from rich.cells import cell_len
from rich.text import Text

from gpt2scope.engine.ablation import AblationMode
from gpt2scope.tui.session import TOP_KEYS, Scope
from gpt2scope.tui.views.common import (
    Drawn,
    Lines,
    append_if_fits,
    count,
    longest_fitting,
    no_run,
    piece_text,
)
from gpt2scope.tui.views.head_writes import unread_writes, writes_line
from gpt2scope.tui.views.spec import PaneSpec, on_head
from gpt2scope.tui.views.style import (
    DIM,
    HEADING,
    MAX_BAR,
    NOTE,
    bar,
    percent,
    sequential_style,
    signed,
)

TOP_STYLE = sequential_style(31) + HEADING
SCORE_WIDTH = 6


def render_query(scope: Scope, width: int, height: int) -> Drawn:
    a, query = scope.attn, scope.query
    if a is None or query is None:
        return no_run(width)
    n_keys = query + 1
    s = scope.settings
    weights = a.shown_row(query, s.value_weighted)[:n_keys]
    order = np.argsort(-weights, kind="stable")
    index_width = len(str(n_keys - 1))
    longest = max(cell_len(scope.pieces[j].label) for j in range(n_keys))
    fixed = 2 + index_width + 1 + 1 + 5 + 1 + 5 + 1 + SCORE_WIDTH
    # Both weights before the score: in a narrow pane the score goes first.
    scored = width - fixed >= 3
    fixed -= 0 if scored else SCORE_WIDTH + 1
    rest = width - fixed
    if rest >= 16:
        label_width = max(3, min(longest, 12, rest // 2))
        bar_width = min(rest - label_width - 1, MAX_BAR)
    else:
        label_width, bar_width = max(3, rest), 0

    title = Text(f"query {query} ", HEADING)
    title.append_text(piece_text(scope.query_piece, 12))
    # Sorted by the value-weighted share, say so first (w also sets the model map's).
    by = (" · by vw%",) if s.value_weighted else ()
    for part in (*by, f" · {count(n_keys, 'key')}", f" · L{s.layer} H{s.head}"):
        if not append_if_fits(title, Text(part, DIM), width):
            break
    header = "  " + "#".rjust(index_width) + " " + "key".ljust(label_width) + " "
    shown = "norm" if s.value_weighted else "weight"
    header += (shown.ljust(bar_width) + " " if bar_width else "") + "   w%   vw%"
    header += "score".rjust(7) if scored else ""
    d = scope.info.config.d_head
    note = longest_fitting(
        (
            f"w = softmax(score); score = q·k / √{d} = q·k / {math.sqrt(d):.2f}",
            f"w = softmax(score), score = q·k / √{d}",
            f"score = q·k / √{d}",
        ),
        width,
    )
    writes = writes_of(scope, width)
    heading = [title, entropy_line(weights, width), writes, Text(header, DIM)]
    widths = (index_width, label_width, bar_width, scored)

    def draw(i: int) -> Text:
        rank = i - len(heading)
        if rank < 0:
            line = heading[i]
        elif rank < n_keys:
            line = key_line(scope, int(order[rank]), rank, widths)
        else:
            line = Text(note, NOTE)
        line.truncate(width)
        return line

    return Drawn(Lines(draw, range(len(heading) + n_keys + 1)), pinned=len(heading))


def writes_of(scope: Scope, width: int) -> Text:
    """What the head writes at the query; a head knocked out to 0 writes nothing, said so
    rather than listing the ties of an all-zero write."""
    a, s, ablation = scope.attn, scope.settings, scope.view.ablation
    if (s.layer, s.head) in ablation.heads and ablation.mode == AblationMode.ZERO:
        return Text("writes nothing: knocked out (z = 0); o brings it back", DIM)
    if scope.writes is None:
        return unread_writes(scope.writes_failed, width)
    return writes_line(scope.writes, a.pieces, width, "writes", numbers=width >= 60)


def query_depends(scope: Scope) -> tuple:
    """The head and query, and whether the app has read what the head writes there yet."""
    return (*on_head(scope), scope.writes is not None)


def entropy_bits(weights: np.ndarray) -> float:
    w = weights[weights > 0].astype(np.float64)
    return float(-(w * np.log2(w)).sum()) + 0.0  # + 0.0: no -0.00 for a one-key row


def entropy_line(weights: np.ndarray, width: int) -> Text:
    """How spread the row is: its entropy against a uniform row's, log2 of the keys."""
    h, n = entropy_bits(weights), len(weights)
    top = math.log2(n)
    versions = (
        f"entropy {h:.2f} bits of at most log2({n}) = {top:.2f} (uniform)",
        f"entropy {h:.2f} of log2({n}) = {top:.2f} bits",
        f"H {h:.2f} of log2 {n} = {top:.2f} bits",
        f"H {h:.2f}/{top:.2f} bits",
    )
    return Text(longest_fitting(versions, width), DIM)


def key_line(scope: Scope, j: int, rank: int, widths: tuple[int, int, int, bool]) -> Text:
    """Key j's line: its index and token, a bar and percentages for its weights, its score."""
    index_width, label_width, bar_width, scored = widths
    a, query = scope.attn, scope.query
    weights, weighted = a.pattern_row(query), a.weighted_row(query)
    shown = weighted if scope.settings.value_weighted else weights
    top = rank < TOP_KEYS
    line = Text("★ " if top else "  ", TOP_STYLE if top else DIM)
    line.append(f"{j:>{index_width}} ", DIM)
    line.append_text(piece_text(scope.pieces[j], label_width, pad=True))
    line.append(" ")
    if bar_width:
        line.append(bar(float(shown[j]), bar_width) + " ", sequential_style(31 if top else 12))
    for gap, column in (("", weights), (" ", weighted)):
        style = TOP_STYLE if top and column is shown else ""
        line.append(gap + percent(float(column[j])), style)
    if scored:
        line.append(" " + signed(float(a.scores_row(query)[j]), SCORE_WIDTH))
    return line


SPEC = PaneSpec(
    id="query",
    title="Query",
    render=render_query,
    about="every key the selected query may see, heaviest first: w% = attention weight, vw% = "
    "its value-weighted norm ||w·v_j W_O[h]|| as a share of the row's (w sorts by it), "
    "score = q·k/√d_head before the softmax; ★ the top 5. Above them, what the head writes "
    "at the query (z_h W_O[h] through ln_f, scale frozen, and the unembedding): + the "
    "tokens it promotes most, − those it suppresses",
    depends=query_depends,
    caption=(
        "the selected query's attention row, heaviest key first: w = softmax(q·k / √d)",
        "the query's row, heaviest first: w = softmax(q·k / √d)",
        "the query's keys by weight",
        "w by key",
    ),
)
