"""The attention view: one head's pattern (queries down, keys across) and its q, k, v maps.

Only the window around the selected query is drawn, so the cost depends on the pane's size,
not on the run's length; the heading says which rows and keys the window holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.cells import cell_len
from rich.style import Style
from rich.text import Text

from gpt2scope.tui.session import HeadData, Scope, Settings
from gpt2scope.tui.text import SPACE, fit
from gpt2scope.tui.views.common import Drawn, append_if_fits, longest_fitting, no_run, piece_text
from gpt2scope.tui.views.spec import PaneSpec
from gpt2scope.tui.views.style import (
    BOLD,
    DIM,
    HEADING,
    MASK_STYLE,
    MASKED,
    NOTE,
    SELECTED,
    cells,
    signed_legend,
    signed_strip,
    weight_cell,
    weight_legend,
)

MIN_MAPS_WIDTH = 48  # below this the pane only has room for the pattern
MIN_MAP_DIMS = 8
MAX_LABEL_ROWS = 6
GAP = "┊"  # between key 0 and the later keys when the ones in between are hidden


@dataclass(frozen=True)
class Window:
    """Which part of the pattern fits: rows [r0, r1), keys [c0, c1), dims [0, dims); and
    key 0 before a gap column when it is not among those keys but fits."""

    index_width: int
    label_width: int
    cell_width: int
    label_rows: int
    r0: int
    r1: int
    c0: int
    c1: int
    dims: int  # q/k/v dimensions per map, 0 when the maps do not fit
    first: bool = False
    legend_below: bool = True  # on its own line under the pattern, not in the heading

    @property
    def prefix(self) -> int:
        return (self.index_width + 1 if self.index_width else 0) + self.label_width + 1

    @property
    def columns(self) -> list[int | None]:
        """The keys drawn, left to right; None is the gap column."""
        return [*([0, None] if self.first else []), *range(self.c0, self.c1)]


def window(scope: Scope, width: int, height: int) -> Window:
    n, query, d = scope.n_tokens, scope.query, scope.info.config.d_head
    longest = max(cell_len(p.label) for p in scope.pieces)
    longest_axis = max(cell_len(axis_label(p.label)) for p in scope.pieces)
    index_width = len(str(n - 1)) if width >= 40 else 0
    label_width = max(3, min(longest, 10 if width >= 60 else 5))
    available = width - (index_width + 1 if index_width else 0) - label_width - 1
    matrix_width, maps_width = available, 0
    if available >= MIN_MAPS_WIDTH and scope.settings.maps:
        # The pattern first; the maps get what is left, at least MIN_MAP_DIMS each.
        matrix_width = min(2 * n, available - (3 * MIN_MAP_DIMS + 4))
        maps_width = available - matrix_width
    # Two cells per key where they fit, three when the maps are off and leave the room.
    cell_width = 3 if not maps_width and matrix_width >= 3 * n else 1
    cell_width = 2 if cell_width == 1 and matrix_width >= 2 * min(n, 16) else cell_width
    n_keys = max(1, matrix_width // cell_width)
    maps_width += matrix_width - n_keys * cell_width
    dims = min(d, (maps_width - 4) // 3)
    # The legend goes up into the heading's line where it fits, for a line of key labels.
    lift = n + 2 <= height and legend_fits_heading(scope, width, maps_width > 0)
    below = 0 if lift else 1
    label_rows = max(1, min(height - 1 - below - n, longest_axis, MAX_LABEL_ROWS))
    n_rows = max(1, min(n, height - 1 - below - label_rows))
    r0 = min(max(query - n_rows // 2, 0), n - n_rows)
    c1 = min(n, max(r0 + n_rows, n_keys))
    c0 = max(0, c1 - n_keys)
    # Key 0 is where many heads rest (the attention sink): keep its column, at the cost of
    # two of the others, as long as the query's own column stays in view.
    first = c0 > 0 and n_keys >= 6 and query >= c0 + 2
    return Window(
        index_width=index_width,
        label_width=label_width,
        cell_width=cell_width,
        label_rows=label_rows,
        r0=r0,
        r1=r0 + n_rows,
        c0=c0 + 2 if first else c0,
        c1=c1,
        dims=dims if dims >= MIN_MAP_DIMS else 0,
        first=first,
        legend_below=bool(below),
    )


def legend_fits_heading(scope: Scope, width: int, maps: bool) -> bool:
    s = scope.settings
    return len(f"L{s.layer} H{s.head} {shown_name(s)}  ") + legend(maps, 0).cell_len <= width


def shown_name(settings: Settings) -> str:
    return "value-weighted" if settings.value_weighted else "pattern"


def heading(scope: Scope, w: Window, width: int) -> Text:
    """Which rows and keys are hidden comes first: in a small pane it matters most."""
    s, n = scope.settings, scope.n_tokens
    head = f"L{s.layer} H{s.head}"
    if not w.legend_below:  # then it has the room: see legend_fits_heading
        text = Text(f"{head} {shown_name(s)}  ", HEADING)
        append_if_fits(text, legend(w.dims > 0, width - text.cell_len), width)
        return text
    # Value-weighted cells must say so (w also sets the model map's): the notes give way.
    named = f"{head} {shown_name(s)}" if s.value_weighted else head
    text = Text(longest_fitting(window_notes(w, n), width - len(named)), NOTE)
    text.append(named, HEADING)
    # the rest in whole words, as far as they fit: the status line also names the query
    if s.value_weighted or append_if_fits(text, Text(f" {shown_name(s)}", HEADING), width):
        query = Text(f" · query {scope.query} ").append_text(piece_text(scope.query_piece, 12))
        append_if_fits(text, query, width)
    text.truncate(width)
    return text


def window_notes(w: Window, n: int) -> tuple[str, ...]:
    """The rows and keys in view, when some are hidden: in words, shorter and shorter."""
    parts = []
    if (w.r0, w.r1) != (0, n):
        parts.append(("rows", f"{w.r0}-{w.r1 - 1}"))
    if (w.c0, w.c1) != (0, n):
        parts.append(("keys", f"{'0, ' if w.first else ''}{w.c0}-{w.c1 - 1}"))
    full = "".join(f"{name} {span} of {n} · " for name, span in parts)
    spans = [(name, span.replace(", ", ",")) for name, span in parts]
    short = "".join(f"{name} {span}/{n} · " for name, span in spans)
    return full, short, "".join(f"{name} {span} · " for name, span in spans), ""


def axis_label(label: str) -> str:
    """A key's label for the vertical axis: without the leading space marker, which most
    labels share, so that the first row tells keys apart."""
    return label[1:] if len(label) > 1 and label[0] == SPACE else label


def key_label_rows(scope: Scope, w: Window) -> list[Text]:
    """Key labels written downwards, one column per key, the query's own key in bold."""
    rows = []
    for r in range(w.label_rows):
        corner = ""
        if r == w.label_rows - 1:  # queries down, keys across, as short as the labels need
            corner = next(c for c in ("q↓ k→", "q↓k→", "↓→") if len(c) < w.prefix)
        line = Text(fit(corner.rjust(w.prefix - 1), w.prefix - 1) + " ", DIM)
        for j in w.columns:
            if j is None:
                line.append(GAP.ljust(w.cell_width), MASK_STYLE)
                continue
            label = axis_label(scope.pieces[j].label)
            char = label[r] if r < len(label) else " "
            if cell_len(char) != 1:
                char = "▪"
            line.append(char.ljust(w.cell_width), BOLD if j == scope.query else DIM)
        rows.append(line)
    if w.dims:
        rows[0].append_text(maps_heading(w))
    return rows


def maps_heading(w: Window) -> Text:
    text = Text("  ")
    for name in ("q", "k", "v"):
        label = f"{name} dims 0-{w.dims - 1}"
        if len(label) > w.dims:
            label = f"{name} 0-{w.dims - 1}"
        text.append(fit(label, w.dims) + " ", BOLD)
    return text


def row_label(scope: Scope, i: int, w: Window) -> Text:
    text = Text()
    if w.index_width:
        text.append(f"{i:>{w.index_width}} ", DIM)
    text.append_text(piece_text(scope.pieces[i], w.label_width, pad=True))
    if i == scope.query:
        text.stylize(SELECTED)
    text.append(" ")
    return text


def pattern_cells(a: HeadData, i: int, w: Window, weighted: bool) -> Text:
    row = a.shown_row(i, weighted)

    def cell(j: int | None) -> tuple[str, Style]:
        if j is None:
            return GAP.ljust(w.cell_width), MASK_STYLE
        if j > i:
            return MASKED * w.cell_width, MASK_STYLE
        return weight_cell(float(row[j]), w.cell_width)

    return cells(map(cell, w.columns))


def render_attention(scope: Scope, width: int, height: int) -> Drawn:
    a, query = scope.attn, scope.query
    if a is None or query is None:
        return no_run(width)
    w = window(scope, width, height)
    drawn = Drawn([heading(scope, w, width), *key_label_rows(scope, w)])
    maps = [m[:, : w.dims] for m in (a.q, a.k, a.v)]
    scales = [float(np.abs(m).max()) if m.size else 0.0 for m in maps]
    for i in range(w.r0, w.r1):
        line = row_label(scope, i, w)
        line.append_text(pattern_cells(a, i, w, scope.settings.value_weighted))
        if w.dims:
            for m, scale in zip(maps, scales, strict=True):
                line.append("  " if m is maps[0] else " ")
                line.append_text(signed_strip(m[i], scale))
        if i == query:
            drawn.focus = len(drawn.lines)
        drawn.add(line)
    if w.legend_below:
        drawn.add(legend(w.dims > 0, width))
    for line in drawn.lines:
        line.truncate(width)
    return drawn


def legend(maps: bool, width: int) -> Text:
    """The weight scale, and the q, k, v maps' when they are drawn; `width` for the note
    on how to see them when they are not (0: none)."""
    text = weight_legend()
    if maps:
        text.append("   q k v: ")
        text.append_text(signed_legend())
    elif width:
        versions = (" · q k v maps: v or z", " · maps: v, z", "")
        text.append(longest_fitting(versions, width - text.cell_len), NOTE)
    return text


def on_pattern(scope: Scope) -> tuple:
    return id(scope.attn), scope.query, scope.settings.maps, scope.settings.value_weighted


def attention_json(scope: Scope) -> dict[str, Any]:
    """The pattern; with value weighting on, also its value-weighted rows."""
    a = scope.attn
    out = {"pattern": a.pattern.tolist()}
    if scope.settings.value_weighted:
        out["value_weighted"] = [a.weighted_row(i).tolist() for i in range(len(a.q))]
    return out


SPEC = PaneSpec(
    id="attention",
    title="Attention",
    render=render_attention,
    about="pattern[query, key] of layer L head H: queries down, keys across; glyph and colour "
    "grow with the weight (·░▒▓█ on a √ scale, 0 to 1), ╱ where the key is in the "
    "query's future (masked); beside it the q, k, v maps, one cell per dimension; w shows "
    "value-weighted norms ||a_ij v_j W_O[h]|| instead, each row renormalised to 1 (a key "
    "with a large weight and a small value, often position 0, then fades)",
    depends=on_pattern,
    json=attention_json,
    caption=(
        "how much each query (row) reads from each earlier key (column): w = softmax(q·k / √d)",
        "how much each row reads from each key: w = softmax(q·k / √d)",
        "rows read keys: softmax(q·k/√d)",
        "w = softmax(q·k/√d)",
    ),
)
