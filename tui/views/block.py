"""Block internals: what one transformer block does to the selected token's row. The
residual stream's norm before and after attention and the MLP, the norms of what each adds
(attn_out, mlp_out), the LayerNorm statistics each sublayer normalised by, and the MLP's
4·n_embd activations after GELU (mlp_post) as a strip, with the strongest neurons listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.text import Text

from gpt2scope.engine.analysis import BlockInternals, block_internals, numpy
from gpt2scope.engine.run import RunView
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import Pieces
from gpt2scope.tui.views.common import Drawn, append_if_fits, packed, piece_text
from gpt2scope.tui.views.page import Page, not_ready, page_note
from gpt2scope.tui.views.spec import ScreenSpec, view_identity
from gpt2scope.tui.views.style import DIM, HEADING, NOTE, bar, sequential_style, signed_strip

NAME_WIDTH = 13
INDEX_WIDTH = 5
MAX_NORM_BAR = 40
MIN_STRIP_ROWS = 2


@dataclass(frozen=True, eq=False)
class BlockFigure:
    internals: BlockInternals  # norms, LayerNorm statistics, top neurons
    mlp_post: np.ndarray  # [4 n_embd] after GELU


def block_figure(view: RunView, layer: int, position: int) -> BlockFigure:
    internals = block_internals(view, layer, position)
    return BlockFigure(internals, numpy(internals.mlp_post))


def title(page: Page[BlockFigure]) -> Text:
    b = page.figure.internals
    text = Text(f"block L{b.layer} · token {b.position} ", HEADING)
    text.append_text(piece_text(page.source.pieces[b.position], 12))
    text.append_text(page_note(page))
    return text


def norm_line(name: str, norm: float, largest: float, width: int) -> Text:
    line = Text(f"{name:<{NAME_WIDTH}}", "" if name.startswith("+") else HEADING)
    line.append(f"|x| {norm:8.2f} ")
    bar_width = min(MAX_NORM_BAR, width - line.cell_len)
    if bar_width > 0:
        line.append(bar(norm / largest if largest else 0.0, bar_width), sequential_style(24))
    return line


def ln_line(name: str, stats: tuple[float, float], normalises: str) -> Text:
    mean, std = stats
    text = Text(f"  {name} mean {mean:+.4f} std {std:.4f}", DIM)
    text.append(
        f"  normalises {normalises} for the {'attention' if name == 'ln_1' else 'MLP'}", NOTE
    )
    return text


def flow_lines(block: BlockFigure, width: int) -> list[Text]:
    """resid_pre + attn_out = resid_mid; resid_mid + mlp_out = resid_post, with norms."""
    b = block.internals
    norms = [b.resid_pre_norm, b.attn_out_norm, b.resid_mid_norm, b.mlp_out_norm]
    largest = max(*norms, b.resid_post_norm)
    return [
        norm_line("resid_pre", b.resid_pre_norm, largest, width),
        ln_line("ln_1", b.ln_1, "resid_pre"),
        norm_line("+ attn_out", b.attn_out_norm, largest, width),
        norm_line("= resid_mid", b.resid_mid_norm, largest, width),
        ln_line("ln_2", b.ln_2, "resid_mid"),
        norm_line("+ mlp_out", b.mlp_out_norm, largest, width),
        norm_line("= resid_post", b.resid_post_norm, largest, width),
    ]


def strip_lines(values: np.ndarray, width: int, rows: int) -> tuple[Text, list[Text]]:
    """The activations in rows, each cell the value of largest |x| among the same number of
    neurons, so that each row's label, its first neuron, holds for every cell after it; at
    most `rows` rows."""
    per_row = max(1, width - INDEX_WIDTH - 1)
    per_cell = math.ceil(len(values) / (per_row * max(1, rows)))
    cells = largest_in_groups(values, per_cell)
    scale = float(np.abs(values).max()) or 1.0
    lines = []
    for start in range(0, len(cells), per_row):
        line = Text(f"{start * per_cell:>{INDEX_WIDTH}} ", DIM)
        line.append_text(signed_strip(cells[start : start + per_row], scale))
        lines.append(line)
    group = "neuron" if per_cell == 1 else f"{per_cell} neurons (largest |x|)"
    about = Text(f"mlp_post: {len(values)} activations after GELU, a cell per {group}", HEADING)
    append_if_fits(about, Text(f" · max |x| {scale:.2f}", DIM), width)
    return about, lines


def largest_in_groups(values: np.ndarray, size: int) -> np.ndarray:
    """Each run of `size` values (the last one maybe shorter) as its value of largest |x|."""
    groups = np.pad(values, (0, -len(values) % size)).reshape(-1, size)
    return groups[np.arange(len(groups)), np.abs(groups).argmax(1)]


def top_neurons(block: BlockFigure, width: int) -> list[Text]:
    parts = [Text("top neurons", HEADING)]
    parts += [Text(f"#{i} {a:+.2f}") for i, a in block.internals.top_neurons]
    return packed(parts, width, " · ")


def render_block(page: Page[BlockFigure], width: int, height: int) -> Drawn:
    empty = not_ready(page, width)
    if empty is not None:
        return empty
    block = page.figure
    flow = flow_lines(block, width)
    neurons = top_neurons(block, width)
    room = height - 1 - len(flow) - len(neurons) - 1
    about, strip = strip_lines(block.mlp_post, width, max(room, MIN_STRIP_ROWS))
    drawn = Drawn([title(page), *flow, *neurons, about, *strip], pinned=1)
    for line in drawn.lines:
        line.truncate(width)
    return drawn


def compute_block(scope: Scope, pieces: Pieces) -> BlockFigure:
    return block_figure(scope.view, scope.settings.layer, scope.query)


def block_json(block: BlockFigure, scope: Scope, pieces: Pieces) -> dict[str, Any]:
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


SPEC = ScreenSpec(
    id="block",
    title="Block internals",
    key="b",
    label="block",
    summary="block internals: residual norms, LayerNorm, MLP",
    render=render_block,
    about="layer L at the query token: |x| of resid_pre, attn_out, resid_mid, mlp_out and the "
    "block's output, the mean and std ln_1 and ln_2 normalise by, and the 4·n_embd "
    "mlp_post activations after GELU (orange +, blue −) with the top neurons",
    depends=lambda s: (view_identity(s), s.settings.layer, s.query),
    compute=compute_block,
    json=block_json,
)
