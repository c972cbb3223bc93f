"""Contributions: why the model predicts a token at the query, by direct logit attribution
(gpt2scope.engine.attribution). The final residual stream is a sum of writes (the embedding,
each head, each attention bias, each MLP); with ln_f's scale frozen each adds a term to the
target's logit, and the terms add up to the logit. A layer x head grid of the heads' terms
with an MLP column, the largest pushers and pullers, the saliency of each earlier token
(gradient x input), and, when computed, each head's total effect (knocked out alone).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from rich.cells import cell_len
from rich.style import Style
from rich.text import Text

from gpt2scope.engine import Attribution, Component, attribution, default_target, gpt2, saliency
from gpt2scope.engine.analysis import HeadWrites, head_writes
from gpt2scope.engine.run import RunView
from gpt2scope.tui.session import HeadEffects, Scope, Settings
from gpt2scope.tui.text import Piece, Pieces, token_json
from gpt2scope.tui.views.common import Drawn, packed, piece_text
from gpt2scope.tui.views.head_writes import unread_writes, writes_line
from gpt2scope.tui.views.page import COMPUTING, Page, not_ready, page_note
from gpt2scope.tui.views.spec import HEAD_CURSOR, Key, ScreenSpec, view_identity
from gpt2scope.tui.views.style import (
    DENSITY,
    DIM,
    HEADING,
    NOTE,
    SELECTED,
    bar,
    percent,
    signed,
    signed_cell,
    signed_legend,
)

N_TARGETS = 10  # the targets x moves through: the default one, then the top predictions
LIST_ROWS = (8, 12)  # the pushers and pullers list: at least, at most this many rows
ENTRY = 16  # "ln_f.bias +12.34 " in the list
TOKEN_CELLS = 8  # the most cells a token takes in the saliency strip
STRIP_LABEL = 9  # "saliency "
PROGRESS = 10  # cells of the head effects' progress bar
WRITES_ROOM = 24  # "writes +·token −·token"


@dataclass(frozen=True, eq=False)
class Contributions:
    attribution: Attribution
    target: Piece
    contrast: Piece | None
    candidates: tuple[int, ...]  # what x moves through at this position
    target_logit: float
    target_prob: float
    contrast_logit: float | None
    contrast_prob: float | None
    heads: np.ndarray  # [n_layer, n_head] the heads' terms
    mlps: np.ndarray  # [n_layer]
    biases: float  # the attention biases' terms, summed
    embed: float
    ln_f_bias: float
    pieces: Pieces  # the tokens the heads' writes promote and suppress
    view: RunView
    # What the head selected when it was computed writes at the query, read on the worker
    # with the rest: all of them at once is a [heads, vocab] product, 2 s at gpt2-xl.
    selected_writes: tuple[tuple[int, int], HeadWrites] | None = None
    # gradient x input of log p(target), positions 0..query; None until with_saliency
    saliency: tuple[float, ...] | None = None


def logits_at(view: RunView, position: int) -> torch.Tensor:
    """The model's next-token logits after `position`: the run's own after the last token."""
    if position == view.n_tokens - 1:
        return view.logits
    with torch.no_grad():
        resid = view.get("resid_post", view.config.n_layer - 1, position)
        return gpt2.unembed(view.params, resid)


def target_candidates(view: RunView, position: int, logits: torch.Tensor) -> tuple[int, ...]:
    """The default target (the next token of the text, or the top prediction), then the top
    predictions after it."""
    first = default_target(view, position)
    top = torch.topk(logits, min(N_TARGETS, len(logits))).indices.tolist()
    return (first, *[t for t in top if t != first][: N_TARGETS - 1])


def runner_up(logits: torch.Tensor, target: int) -> int:
    """The most likely token other than `target`."""
    first, second = torch.topk(logits, 2).indices.tolist()
    return second if first == target else first


def chosen_tokens(view: RunView, position: int, settings: Settings) -> tuple[int, int | None]:
    """The target and the contrast (None: off) the settings pick at `position`."""
    target = settings.target
    if target is None or not 0 <= target < view.config.vocab_size:
        target = default_target(view, position)
    contrast = settings.contrast
    if contrast is not None and contrast == target:
        contrast = runner_up(logits_at(view, position), target)
    return target, contrast


def moved_target(scope: Scope, delta: int) -> dict[str, int | None]:
    """The settings that move the target `delta` places through the candidates (the default
    one is None, so that it follows the run); a contrast on follows as the runner-up."""
    view, position = scope.view, scope.query
    logits = logits_at(view, position)
    candidates = target_candidates(view, position, logits)
    target, contrast = chosen_tokens(view, position, scope.settings)
    index = candidates.index(target) if target in candidates else -delta
    new = candidates[(index + delta) % len(candidates)]
    if contrast is not None:
        contrast = runner_up(logits, new)
    return {"target": None if new == candidates[0] else new, "contrast": contrast}


def toggled_contrast(scope: Scope) -> int | None:
    """Off, or the runner-up to the target."""
    if scope.settings.contrast is not None:
        return None
    view, position = scope.view, scope.query
    target, _ = chosen_tokens(view, position, scope.settings)
    return runner_up(logits_at(view, position), target)


def direct_contributions(
    view: RunView, position: int, settings: Settings, pieces: Pieces
) -> Contributions:
    """All but the saliency, whose forward and backward pass takes 2.7 s of the 2.9 at
    gpt2-xl over 40 tokens: the screen draws this first."""
    target, contrast = chosen_tokens(view, position, settings)
    a = attribution(view, position, target, contrast)
    logits = logits_at(view, position)
    probs = torch.softmax(logits.float(), -1)
    L, H = view.config.n_layer, view.config.n_head
    heads = np.zeros((L, H))
    mlps = np.zeros(L)
    by_name = {c.name: c.value for c in a.components}
    for c in a.components:
        if c.head is not None:
            heads[c.layer, c.head] = c.value
        elif c.name.endswith(".mlp"):
            mlps[c.layer] = c.value
    writes = None
    if settings.layer < L and settings.head < H:
        head = (settings.layer, settings.head)
        writes = head, head_writes(view, position, [head])[0]
    return Contributions(
        attribution=a,
        target=pieces(target),
        contrast=None if contrast is None else pieces(contrast),
        candidates=target_candidates(view, position, logits),
        target_logit=float(logits[target]),
        target_prob=float(probs[target]),
        contrast_logit=None if contrast is None else float(logits[contrast]),
        contrast_prob=None if contrast is None else float(probs[contrast]),
        heads=heads,
        mlps=mlps,
        biases=sum(c.value for c in a.components if c.name.endswith(".attn_bias")),
        embed=by_name["embed"],
        ln_f_bias=by_name["ln_f.bias"],
        pieces=pieces,
        view=view,
        selected_writes=writes,
    )


def with_saliency(figure: Contributions) -> Contributions:
    a = figure.attribution
    return replace(figure, saliency=tuple(saliency(figure.view, a.position, a.target)))


def compute_contributions(scope: Scope, pieces: Pieces) -> Contributions:
    return direct_contributions(scope.view, scope.query, scope.settings, pieces)


# Drawing.


def cell(value: float, scale: float, width: int) -> tuple[str, Style]:
    """A signed glyph: the sign first (readable without colour), then the density."""
    glyph, style = signed_cell(value, scale)
    sign = "+" if value > 0 else "−" if value < 0 else " "
    return (sign + glyph).ljust(width), style


def grid_cells(values: np.ndarray, scale: float, width: int, selected: int | None) -> Text:
    line = Text()
    for h, value in enumerate(values):
        text, style = cell(float(value), scale, width)
        line.append(text, style + SELECTED if h == selected else style)
    return line


def scale_of(values: np.ndarray) -> float:
    return float(np.abs(values).max()) if values.size else 0.0


def matching_effects(page: Page[Contributions]) -> HeadEffects | None:
    """The head effects of this figure's run, position, target and contrast, if any."""
    e, a = page.scope.effects, page.figure.attribution
    if e is None or page.source is None or e.view is not page.source.view:
        return None
    return e if (e.position, e.target, e.contrast) == (a.position, a.target, a.contrast) else None


@dataclass(frozen=True)
class Layout:
    heads: int
    cell: int  # cells per head
    label: int  # "L11 "
    effects: bool
    list_columns: int  # 0, 1 or 2 columns of pushers and pullers

    @property
    def grids(self) -> int:
        """The cells the head grid, its MLP column and the effects grid take."""
        grid = self.label + self.cell * (self.heads + 1) + 2  # a gap before the MLP, after
        return grid + (2 + self.heads * self.cell if self.effects else 0)


def list_columns(room: int) -> int:
    return 2 if room >= 2 * ENTRY + 1 else 1 if room >= ENTRY + 1 else 0


def layout_for(n_layer: int, n_head: int, width: int, effects: bool) -> Layout:
    """Cells of three (sign, glyph, gap) where they leave room for the list, else of two."""
    label = len(f"L{n_layer - 1} ")
    layout = Layout(n_head, 3, label, effects, 0)
    if not list_columns(width - layout.grids):
        layout = replace(layout, cell=2)
    return replace(layout, list_columns=list_columns(width - layout.grids))


def head_labels(n_head: int, width: int) -> str:
    return "".join(
        (str(h) if len(str(h)) < width else str(h % 10)).ljust(width) for h in range(n_head)
    )


def listed(components: tuple[Component, ...], rows: int) -> tuple[list, list]:
    ordered = sorted(components, key=lambda c: c.value)
    pushers = [c for c in reversed(ordered) if c.value > 0][:rows]
    pullers = [c for c in ordered if c.value < 0][:rows]
    return pushers, pullers


def entry(c: Component | None) -> Text:
    if c is None:
        return Text(" " * ENTRY)
    name = c.name.replace(".attn_bias", ".bias")
    _, style = signed_cell(c.value, abs(c.value))
    return Text.assemble(f"{name:<9}", (signed(c.value, 6), style), " ")


def list_lines(f: Contributions, rows: int, columns: int) -> tuple[Text, list[Text]]:
    """The pushers and pullers beside the grid: two columns, or one (pushers, then pullers)."""
    if columns == 2:
        pushers, pullers = listed(f.attribution.components, rows)
        header = Text("pushers".ljust(ENTRY) + "pullers", HEADING)
        lines = []
        for i in range(rows):
            line = entry(pushers[i] if i < len(pushers) else None)
            line.append_text(entry(pullers[i] if i < len(pullers) else None))
            lines.append(line)
        return header, lines
    half = rows // 2
    pushers, pullers = listed(f.attribution.components, max(half, 1))
    entries = [*pushers, None, *pullers][:rows] if pushers else pullers[:rows]
    return Text("pushers, pullers", HEADING), [entry(c) for c in entries]


def progress(e: HeadEffects) -> Text:
    """How far the head effects are: a bar and the layers done, until they all are."""
    text = Text(f"total effects ({e.mode})", HEADING)
    if not e.done:
        text.append(" ")
        text.append(bar(e.n_done / len(e.rows), PROGRESS).replace(" ", "░"), Style(color="cyan"))
        status = " cancelled" if e.cancelled else f" {e.n_done}/{len(e.rows)} · esc cancels"
        text.append(status, NOTE if e.cancelled else DIM)
    return text


def token_cells(piece: Piece) -> int:
    """Two at least: the sign and one glyph below."""
    return min(max(cell_len(piece.label), 2), TOKEN_CELLS)


def saliency_lines(page: Page[Contributions], width: int) -> list[Text]:
    """The tokens up to the query, the last that fit, each with its score's glyphs below."""
    f, pieces = page.figure, page.source.pieces
    query = f.attribution.position
    scores = None if f.saliency is None else np.array(f.saliency)
    scale = 0.0 if scores is None else scale_of(scores)
    room = width - STRIP_LABEL
    shown: list[int] = []
    for i in range(query, -1, -1):
        cells = token_cells(pieces[i]) + 1
        if room < cells:
            break
        room -= cells
        shown.insert(0, i)
    cut = not shown or shown[0] > 0  # the earlier tokens did not fit: say so
    tokens = Text("tokens".ljust(STRIP_LABEL - 1) + ("…" if cut else " "), DIM)
    glyphs = Text("saliency".ljust(STRIP_LABEL), DIM)
    if scores is None:
        glyphs.append(COMPUTING, NOTE)
    for i in shown:
        style = SELECTED if i == query else None
        label = piece_text(pieces[i], token_cells(pieces[i]), pad=True, style=style)
        label.append(" ")
        tokens.append_text(label)
        if scores is None:
            continue
        text, style = cell(float(scores[i]), scale, 1)
        glyph = text[1] if len(text) > 1 else DENSITY[0]
        glyphs.append((text[0] + glyph * (label.cell_len - 2)).ljust(label.cell_len), style)
    return [tokens, glyphs]


def target_line(page: Page[Contributions], width: int) -> list[Text]:
    f, a = page.figure, page.figure.attribution
    rank = f.candidates.index(a.target) + 1 if a.target in f.candidates else None
    target = Text("target ", HEADING)
    target.append_text(piece_text(f.target, 14, style=Style(bold=True, color="yellow")))
    parts = [
        target,
        Text(f"logit {f.target_logit:+.2f} p {percent(f.target_prob).strip()}"),
        Text(f"x: {rank or '-'} of {len(f.candidates)}", DIM),
    ]
    if a.contrast is None:
        parts.append(Text("v: contrast off", DIM))
    else:
        contrast = Text("vs ", HEADING)
        contrast.append_text(piece_text(f.contrast, 14, style=Style(color="cyan")))
        contrast.append(f" logit {f.contrast_logit:+.2f} p {percent(f.contrast_prob).strip()}")
        parts.append(contrast)
    return packed(parts, width, " · ")


def sum_line(page: Page[Contributions], width: int, scale: float) -> list[Text]:
    f, a = page.figure, page.figure.attribution
    value = "logit difference" if a.contrast is not None else "logit"
    legend = signed_legend()
    legend.append(f" |max| {scale:.2f}", DIM)
    parts = [
        Text(f"sum of {len(a.components)} terms {a.total:+.3f} = model's {value} "),
        Text(f"{a.model_value:+.3f}", HEADING),
        Text(f"embed {f.embed:+.2f}"),
        Text(f"attn biases {f.biases:+.2f}"),
        Text(f"ln_f.bias {f.ln_f_bias:+.2f}"),
        legend,
    ]
    parts[0].append_text(parts.pop(1))
    return packed(parts, width, " · ")


def title(page: Page[Contributions], effects: HeadEffects | None, width: int) -> list[Text]:
    a, s, heads = page.figure.attribution, page.scope.settings, page.figure.heads
    text = Text(f"contributions · query {a.position} ", HEADING)
    text.append_text(piece_text(page.source.pieces[a.position], 10))
    text.append_text(page_note(page))
    parts = [text]
    L, H = heads.shape
    if s.layer < L and s.head < H:
        selected = Text(f"L{s.layer}H{s.head} direct {heads[s.layer, s.head]:+.3f}")
        row = effects.rows[s.layer] if effects is not None else None
        if row is not None:
            selected.append(f" total {row[s.head]:+.3f}")
        parts.append(selected)
        # On the first line when the rest of it has room for a token each way, else whole.
        room = width - text.cell_len - selected.cell_len - 6
        room = room if room >= WRITES_ROOM else width
        w = shown_writes(page, (s.layer, s.head))
        if w is None:
            parts.append(unread_writes(page.scope.writes_failed, room))
        else:
            parts.append(writes_line(w, page.figure.pieces, room, "writes", room >= 60))
    if effects is not None:
        parts.append(progress(effects))
    return packed(parts, width, " · ")


def shown_writes(page: Page[Contributions], head: tuple[int, int]) -> HeadWrites | None:
    """The figure's own for the head selected when it was computed; for another one, what
    the app has read for the selected head (tui/app.py), if the figure is of the scope's
    run and query."""
    f, scope = page.figure, page.scope
    if f.selected_writes is not None and f.selected_writes[0] == head:
        return f.selected_writes[1]
    if scope.view is f.view and scope.query == f.attribution.position:
        return scope.writes
    return None


def render_contributions(page: Page[Contributions], width: int, height: int) -> Drawn:
    if (drawn := not_ready(page, width)) is not None:
        return drawn
    f = page.figure
    s = page.scope.settings
    L, H = f.heads.shape
    effects = matching_effects(page)
    layout = layout_for(L, H, width, effects is not None)
    scale = max(scale_of(f.heads), scale_of(f.mlps))
    head = [*title(page, effects, width), *target_line(page, width), *sum_line(page, width, scale)]
    head += saliency_lines(page, width)
    rows = min(max(L, LIST_ROWS[0]), LIST_ROWS[1])
    list_header, entries = (
        list_lines(f, rows, layout.list_columns) if layout.list_columns else (Text(), [])
    )
    grid_header = Text(" " * layout.label + head_labels(H, layout.cell), DIM)
    # over the space before the MLP's cell too when the cell is too narrow for the word
    mlp = " mlp" if layout.cell >= 3 else "mlp"
    grid_header.append(mlp.ljust(layout.cell + 1)[: layout.cell + 1], DIM)
    effects_scale = 0.0
    if effects is not None:
        done = [row for row in effects.rows if row is not None]
        effects_scale = scale_of(np.array(done)) if done else 0.0
        grid_header.append(" │", DIM)
        grid_header.append("total"[: H * layout.cell], HEADING)
    grid_header.append(" " * (layout.grids - grid_header.cell_len))
    grid_header.append_text(list_header)
    head.append(grid_header)
    body = []
    for layer in range(max(L, len(entries))):
        line = Text()
        if layer < L:
            selected = s.head if layer == s.layer else None
            line.append(f"L{layer}".ljust(layout.label), HEADING if selected is not None else DIM)
            line.append_text(grid_cells(f.heads[layer], scale, layout.cell, selected))
            line.append(" ")
            line.append_text(grid_cells(f.mlps[layer : layer + 1], scale, layout.cell, None))
            if effects is not None:
                line.append_text(effects_cells(effects, layer, layout, effects_scale, selected))
        line.append(" " * (layout.grids - line.cell_len))
        if layer < len(entries):
            line.append_text(entries[layer])
        body.append(line)
    drawn = Drawn([*head, *body], focus=len(head) + s.layer, pinned=len(head))
    for line in drawn.lines:
        line.truncate(width)
    return drawn


def effects_cells(
    e: HeadEffects, layer: int, layout: Layout, scale: float, selected: int | None
) -> Text:
    line = Text(" │", DIM)
    row = e.rows[layer]
    if row is None:
        line.append("·".ljust(layout.cell) * e.view.config.n_head, DIM)
    else:
        line.append_text(grid_cells(np.array(row), scale, layout.cell, selected))
    return line


def token_of(token_id: int, pieces: Pieces) -> dict[str, Any]:
    return {"id": token_id, "text": token_json(pieces(token_id))["text"]}


def attribution_json(attribution: Attribution, pieces: Pieces) -> dict[str, Any]:
    """The `attribution` key: the DLA of the target at the query, term by term (also what
    `inspect --target` writes, in tui/report.py)."""
    a = attribution
    return {
        "position": a.position,
        "target": token_of(a.target, pieces),
        "contrast": None if a.contrast is None else token_of(a.contrast, pieces),
        "total": a.total,
        "components": [
            {"name": c.name, "layer": c.layer, "head": c.head, "value": c.value}
            for c in a.components
        ],
    }


def contributions_json(figure: Contributions, scope: Scope, pieces: Pieces) -> dict[str, Any]:
    return attribution_json(figure.attribution, pieces)


SPEC = ScreenSpec(
    id="attribution",
    title="Contributions",
    key="c",
    label="why",
    summary="contributions: which heads and MLPs pushed the target token",
    render=render_contributions,
    about="direct logit attribution of a target token at the query: with ln_f's scale frozen, "
    "the final residual stream's parts (embed, each head, each attention bias, each MLP, "
    "ln_f.bias) add up to the target's logit (minus the contrast's); the grid holds each "
    "head's term and each layer's MLP (+ orange pushes toward the target, − blue away, "
    "denser is larger), the list the largest pushers and pullers; saliency: gradient x "
    "input of log p(target) per earlier token; E: each head's total effect, knocked out "
    "alone (what its removal changes, also through later layers); L·H· writes: the tokens "
    "the selected head's output at the query promotes (+) and suppresses (−) most, read "
    "through ln_f (scale frozen) and the unembedding, with their logit terms",
    depends=lambda s: (view_identity(s), s.query, s.settings.target, s.settings.contrast),
    compute=compute_contributions,
    finish=with_saliency,
    json=contributions_json,
    keys=(
        *HEAD_CURSOR,
        # x and v are off the footer, which 80 columns fill (with a lesson's space too):
        # the target line says what they do
        Key("x", "x", "app.target(1)", "target", "next target: the top predictions"),
        Key("X", "X", "app.target(-1)", "target-", "previous target"),
        Key("v", "v", "app.contrast", "vs", "contrast with the runner-up, or not"),
        Key("E", "E", "app.head_effects", "effects", "compute every head's total effect", True),
        Key("escape", "esc", "app.cancel_effects", "cancel", "cancel the head effects"),
    ),
)
