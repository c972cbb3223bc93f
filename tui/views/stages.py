"""The step-through view: one attention row of the selected head for the selected query, in
the five stages that compute it, with the real numbers.

1. the query's row after ln_1, projected to q, k and v;
2. q·k for every key;
3. divided by √d_head, the keys after the query masked to -inf;
4. the softmax of those: the attention weights;
5. the weighted sum of the value vectors, z: the head's output for this query.

Stages 2 to 4 add a column each to one table of keys, so each stage is seen next to the
numbers it came from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from rich.cells import cell_len
from rich.text import Text

from gpt2scope.engine.analysis import (
    AttentionStages,
    attention_stages,
    numpy,
    scaled_and_unscaled,
)
from gpt2scope.engine.run import RunView
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import Pieces
from gpt2scope.tui.views.common import Drawn, append_if_fits, count, piece_text
from gpt2scope.tui.views.page import LazyLines, Page, not_ready, page_note, wrapped_note
from gpt2scope.tui.views.qkv import vector
from gpt2scope.tui.views.query import entropy_bits
from gpt2scope.tui.views.spec import Cursor, Key, ScreenSpec, view_identity
from gpt2scope.tui.views.style import (
    BOLD,
    DIM,
    HEADING,
    MASK_STYLE,
    NOTE,
    SELECTED,
    bar,
    percent,
    pooled,
    sequential_style,
    signed,
    signed_strip,
)

NUMBER_WIDTH = 8
MAX_WEIGHT_BAR = 20
WEIGHT_WIDTH = 7  # " masked" or "  43.1%"
MIN_STRIP = 8
CHECK_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Stage:
    name: str
    about: str


STAGES = (
    Stage(
        "ln_1 → q k v",
        "The row entering the block (resid_pre), normalised by ln_1, projected to this "
        "head's q, k and v; each key's k and v come from its own row the same way.",
    ),
    Stage(
        "q·k",
        "The query's q dotted with every key's k: a raw score per key, before any scaling. "
        "Keys after the query get one too; the next stage hides them.",
    ),
    Stage(
        "÷√d_head, mask",
        "Divided by √d_head so that the softmax is not too peaked; the keys after the "
        "query are its future, masked to -inf.",
    ),
    Stage(
        "softmax",
        "exp(score), normalised over the visible keys: the attention weights (pattern), "
        "which sum to 1; a masked key gets exactly 0.",
    ),
    Stage(
        "Σ w·v = z",
        "Each visible key's v, weighted by its w, and summed: z, what this head writes for "
        "the query (c_proj then mixes the heads).",
    ),
)
N_STAGES = len(STAGES)
SOFTMAX = 3  # the first stage with weights


@dataclass(frozen=True, eq=False)
class Stages(AttentionStages):
    """One attention row, stage by stage (engine.analysis.attention_stages), with the head's
    z the forward pass itself gives at the query, which the last stage must equal."""

    engine_z: np.ndarray  # [d_head] RunView.get("z") at the query

    @property
    def raw_scores(self) -> np.ndarray:  # [T] q·k
        return self.row.raw_scores

    @property
    def scaled_scores(self) -> np.ndarray:  # [T] q·k / √d_head, -inf after the query
        return self.row.scores

    @property
    def pattern(self) -> np.ndarray:  # [T] softmax of the scaled scores
        return self.row.pattern

    @property
    def z(self) -> np.ndarray:  # [d_head] Σ pattern·v
        return self.row.z


def stages_figure(view: RunView, layer: int, head: int, query: int) -> Stages:
    stages = attention_stages(view, layer, head, query)
    return Stages(**vars(stages), engine_z=numpy(view.get("z", layer, query)[head]))


def title(page: Page[Stages], stage: int, width: int) -> Text:
    s, scope = page.figure, page.source
    text = Text(f"L{s.layer} H{s.head} · query {s.query} ", HEADING)
    text.append_text(piece_text(scope.pieces[s.query], 12))
    append_if_fits(text, Text(f" · stage {stage + 1} of {N_STAGES}", HEADING), width)
    text.append_text(page_note(page))
    return text


def pipeline(stage: int, width: int) -> Text:
    """The five stages in a row, the current one highlighted; only numbers if too narrow."""
    for named in (True, False):
        text = Text()
        for i, st in enumerate(STAGES):
            if i:
                text.append(" › ", DIM)
            label = f"{i + 1} {st.name}" if named or i == stage else str(i + 1)
            text.append(label, SELECTED if i == stage else BOLD if i < stage else DIM)
        if text.cell_len <= width:
            return text
    return text


def strip_line(name: str, values: np.ndarray, width: int) -> Text:
    """A long vector as one glyph strip, with its norm."""
    head = Text(f"{name:<10}", HEADING)
    label = f" |x| {np.linalg.norm(values):.2f}"
    cells = max(1, width - head.cell_len - len(label))
    scale = float(np.abs(values).max()) or 1.0
    return head + signed_strip(pooled(values, cells), scale) + Text(label, DIM)


def input_lines(s: Stages, width: int, room: int) -> list[Text]:
    """Stage 1: the row, its LayerNorm, and its q, k, v; as numbers when they fit."""
    q = s.query
    lines = [
        strip_line("resid_pre", s.resid_pre, width),
        Text(f"ln_1      mean {s.ln_mean:+.4f}  std {s.ln_std:.4f}: (x − mean) / std · γ + β"),
        strip_line("ln_1(x)", s.normalized, width),
    ]
    projections = [(f"q[{q}]", s.q), (f"k[{q}]", s.k[q]), (f"v[{q}]", s.v[q])]
    for n_numbers in (3, 1, 0):
        body = []
        for i, (name, values) in enumerate(projections):
            body += vector(name, values, width, i < n_numbers)
        if len(lines) + len(body) + 1 <= room or n_numbers == 0:
            break
    note = Text("q = ln_1(x) · W_q + b_q; likewise k and v (c_attn)", NOTE)
    return [*lines, note, *body]


@dataclass(frozen=True)
class Columns:
    """The key table: index, label, q·k, then from stage 3 ÷√d, from stage 4 the weight,
    and, where there is room, each key's k as a strip to set beside the query's q."""

    index_width: int
    label_width: int
    bar_width: int
    strip: int  # cells of the k strips, 0 when they do not fit

    @classmethod
    def fit(cls, scope: Scope, s: Stages, stage: int, width: int) -> Columns:
        n_keys = len(s.raw_scores)
        index_width = len(str(n_keys - 1))
        longest = max(cell_len(scope.pieces[j].label) for j in range(n_keys))
        numbers = NUMBER_WIDTH * min(stage, 2)
        weight = 2 + WEIGHT_WIDTH if stage >= 3 else 0
        rest = width - index_width - 1 - numbers - weight
        label_width = max(3, min(longest, 12, rest - (8 if stage >= 3 else 0)))
        bar_width = max(min(MAX_WEIGHT_BAR, rest - label_width), 0) if stage >= 3 else 0
        strip = min(len(s.q), rest - label_width - bar_width - 2)
        return cls(index_width, label_width, bar_width, strip if strip >= MIN_STRIP else 0)

    def header(self, s: Stages, stage: int) -> list[Text]:
        text = " " * (self.index_width + 1) + "key".ljust(self.label_width)
        text += "q·k".rjust(NUMBER_WIDTH)
        if stage >= 2:
            text += "÷√d".rjust(NUMBER_WIDTH)
        if stage >= 3:
            text += "  " + "weight".ljust(self.bar_width) + "w%".rjust(WEIGHT_WIDTH)
        if not self.strip:
            return [Text(text, DIM)]
        q_line = Text(f"q[{s.query}]".rjust(len(text)) + "  ", HEADING)
        q_line.append_text(signed_strip(pooled(s.q, self.strip), float(np.abs(s.q).max()) or 1))
        return [q_line, Text(text + "  k[j]", DIM)]


def key_row(s: Stages, scope: Scope, c: Columns, j: int, stage: int, k_scale: float) -> Text:
    masked = j > s.query
    line = Text(f"{j:>{c.index_width}} ", DIM)
    label = piece_text(scope.pieces[j], c.label_width, pad=True)
    if j == s.query:
        label.stylize(SELECTED)
    line.append_text(label)
    line.append(signed(float(s.raw_scores[j]), NUMBER_WIDTH), DIM if masked else "")
    if stage >= 2:
        scaled = signed(float(s.scaled_scores[j]), NUMBER_WIDTH)
        line.append("-inf".rjust(NUMBER_WIDTH) if masked else scaled, MASK_STYLE if masked else "")
    if stage >= 3:
        w = float(s.pattern[j])
        line.append("  " + bar(w, c.bar_width), sequential_style(round(min(w, 1.0) * 31)))
        weight = "masked" if masked else percent(w)
        line.append(weight.rjust(WEIGHT_WIDTH), MASK_STYLE if masked else HEADING)
    if c.strip:
        line.append("  ")
        line.append_text(signed_strip(pooled(s.k[j], c.strip), k_scale))
    return line


def table_summary(s: Stages, scope: Scope, stage: int) -> Text:
    n_keys, visible = len(s.raw_scores), s.query + 1
    if stage == 1:
        return Text(f"{count(visible, 'key')} up to the query, {n_keys - visible} after it", NOTE)
    d = len(s.q)
    if stage == 2:
        masked = count(n_keys - visible, "key")
        return Text(f"÷ √{d} = {math.sqrt(d):.3f}; {masked} masked", NOTE)
    heaviest = int(np.argmax(s.pattern))
    text = Text(f"Σ w = {float(s.pattern.sum()):.4f} · heaviest: key {heaviest} ", NOTE)
    text.append_text(piece_text(scope.pieces[heaviest], 12))
    text.append(f" {percent(float(s.pattern[heaviest])).strip()}", NOTE)
    return text


def scaling_line(s: Stages) -> Text:
    """The softmax with and without ÷√d_head side by side: why the scale is there, seen."""
    scaled, unscaled = scaled_and_unscaled(s.raw_scores[: s.query + 1], len(s.q))
    text = Text(f"entropy {entropy_bits(scaled):.2f} bits, top {percent(float(scaled.max()))}")
    text.append(" · without ÷√d: ", NOTE)
    text.append(f"{entropy_bits(unscaled):.2f} bits, top {percent(float(unscaled.max()))}")
    return text


def check_line(s: Stages) -> Text:
    """The last stage against the engine's own head output, to the last digit that matters."""
    delta = float(np.abs(s.z - s.engine_z).max()) if len(s.z) else 0.0
    same = delta <= CHECK_TOLERANCE
    text = Text(f"= the forward pass's own z[{s.query}]: max |Δ| {delta:.1e} ")
    text.append("✓" if same else "✗ differs", BOLD if same else "bold red")
    return text


KEYS_IN_VIEW = 16  # stage 5 keeps z's numbers when a longer table would scroll anyway


def output_lines(s: Stages, width: int, room: int) -> list[Text]:
    """z as numbers only where they leave the table room for every key (up to a screenful):
    else the pane opens scrolled, a key hidden under the more-above line."""
    lines = []
    keys = min(s.query + 1, KEYS_IN_VIEW)
    for as_numbers in (True, False):
        lines = vector(f"z[{s.query}]", s.z, width, as_numbers)
        if len(lines) + 3 + keys <= room:
            break
    note = Text(f"z = Σ w[j]·v[j] over the {s.query + 1} visible keys", NOTE)
    return [note, *lines, check_line(s)]


def contribution_table(s: Stages, scope: Scope, width: int) -> tuple[Text, Callable[[int], Text]]:
    """Stage 5's table, header and row maker: each visible key's weight and its w·v, the
    part of z it gives."""
    visible = s.query + 1
    index_width = len(str(visible - 1))
    label_width = max(3, min(12, width // 5))
    parts = s.pattern[:visible, None] * s.v[:visible]
    scale = float(np.abs(parts).max()) if parts.size else 0.0
    cells = max(1, width - index_width - 1 - label_width - 7 - 1)
    header = " " * (index_width + 1) + "key".ljust(label_width) + "     w% " + "w·v"

    def row(j: int) -> Text:
        line = Text(f"{j:>{index_width}} ", DIM)
        label = piece_text(scope.pieces[j], label_width, pad=True)
        if j == s.query:
            label.stylize(SELECTED)
        line.append_text(label)
        line.append(" " + percent(float(s.pattern[j])) + " ", HEADING)
        line.append_text(signed_strip(pooled(parts[j], cells), scale))
        return line

    return Text(header, DIM), row


def table(
    head: list[Text], n_rows: int, row: Callable[[int], Text], focus: int, width: int
) -> Drawn:
    """The head lines pinned, then a row per key made only when shown (the run may have a
    thousand keys), each cut to the width; row `focus` is kept in view."""

    def make(index: int) -> Text:
        line = row(index - len(head))
        line.truncate(width)
        return line

    for line in head:
        line.truncate(width)
    lines = LazyLines([*head, *[None] * n_rows], make)
    return Drawn(lines, focus=len(head) + focus, pinned=len(head))


def render_stages(page: Page[Stages], width: int, height: int) -> Drawn:
    empty = not_ready(page, width)
    if empty is not None:
        return empty
    s, scope = page.figure, page.source
    stage = min(max(page.cursor, 0), N_STAGES - 1)
    head = [title(page, stage, width), pipeline(stage, width)]
    head += wrapped_note(STAGES[stage].about, width, 2 if height < 30 else 3)
    if stage == 0:
        drawn = Drawn([*head, *input_lines(s, width, height - len(head))], pinned=len(head))
        for line in drawn.lines:
            line.truncate(width)
        return drawn
    # Once there are weights, a table too long for the pane keeps the heaviest key in view.
    focus = s.query if stage < SOFTMAX else int(np.argmax(s.pattern))
    if stage < N_STAGES - 1:
        c = Columns.fit(scope, s, stage, width)
        head.append(table_summary(s, scope, stage))
        if stage == SOFTMAX:
            head.append(scaling_line(s))
        head += c.header(s, stage)
        k_scale = float(np.abs(s.k).max()) or 1.0
        row = partial(key_row, s, scope, c, stage=stage, k_scale=k_scale)
        return table(head, len(s.raw_scores), row, focus, width)
    head += output_lines(s, width, height - len(head))
    header, row = contribution_table(s, scope, width)
    return table([*head, header], s.query + 1, row, focus, width)


def compute_stages(scope: Scope, pieces: Pieces) -> Stages:
    s = scope.settings
    return stages_figure(scope.view, s.layer, s.head, scope.query)


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


SPEC = ScreenSpec(
    id="stages",
    title="Step-through",
    key="a",
    label="stages",
    summary="step-through: one attention row, stage by stage",
    render=render_stages,
    about="one attention row of layer L head H for the query token, in its five stages with "
    "the real numbers: (1) resid_pre after ln_1 and its q, k, v; (2) q·k per key; (3) "
    "÷√d_head, keys after the query masked to -inf; (4) softmax: the pattern; (5) z = "
    "Σ w·v, checked against the engine's head output",
    depends=lambda s: (view_identity(s), s.settings.layer, s.settings.head, s.query),
    compute=compute_stages,
    json=stages_json,
    keys=(
        Key("down", "↓", "cursor(1)", "stage+", "next stage", True, "stage"),
        Key("up", "↑", "cursor(-1)", "stage-", "previous stage", True, "stage"),
    ),
    cursor=Cursor(count=lambda scope: N_STAGES),
    text_at_every_cursor=True,
)
