"""What the deeper screens show, worked out from a run's view: one attention row stage by
stage, every head's statistics, the logit lens and one block's internals, as numpy arrays
and plain numbers. The screens compute these in a worker thread and `inspect` in line;
nothing here imports Textual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch

from gpt2scope.engine.analysis import (
    BlockInternals,
    HeadStats,
    attention_stages,
    block_internals,
    head_stats,
    logit_lens_top,
)
from gpt2scope.engine.run import RunView
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import Piece, Pieces

LENS_TOP = 5

F = TypeVar("F")


@dataclass(frozen=True, eq=False)
class Page(Generic[F]):
    """What a deeper screen draws. `scope` is the latest (the selection, the step shown);
    `figure` was computed from `source`, an older scope when `note` says why (a newer one is
    being computed, or waits for the generation to stop); `cursor` is the screen's own (a
    stage, a candidate)."""

    scope: Scope
    figure: F | None = None
    source: Scope | None = None
    cursor: int = 0
    note: str = ""


def numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


@dataclass(frozen=True, eq=False)
class Stages:
    """One attention row, stage by stage (gpt2scope.engine.analysis.attention_stages), with the head
    output the engine computes for the whole head, which the last stage must equal."""

    layer: int
    head: int
    query: int
    resid_pre: np.ndarray  # [n_embd] the query's row entering the block
    ln_mean: float  # what ln_1 subtracts and divides by
    ln_std: float
    normalized: np.ndarray  # [n_embd] after ln_1
    q: np.ndarray  # [d_head] the query's
    k: np.ndarray  # [T, d_head] every key's
    v: np.ndarray  # [T, d_head]
    raw_scores: np.ndarray  # [T] q·k
    scaled_scores: np.ndarray  # [T] q·k / √d_head, -inf for keys after the query
    pattern: np.ndarray  # [T] softmax of the scaled scores
    z: np.ndarray  # [d_head] Σ pattern·v
    engine_z: np.ndarray  # [d_head] RunView.get('z') at the query


def stages_figure(view: RunView, layer: int, head: int, query: int) -> Stages:
    s = attention_stages(view, layer, head, query)
    return Stages(
        layer=layer,
        head=head,
        query=query,
        resid_pre=s.resid_pre,
        ln_mean=s.ln_mean,
        ln_std=s.ln_std,
        normalized=s.normalized,
        q=s.q,
        k=s.k,
        v=s.v,
        raw_scores=s.row.raw_scores,
        scaled_scores=s.row.scores,
        pattern=s.row.pattern,
        z=s.row.z,
        engine_z=numpy(view.get("z", layer, query)[head]),
    )


def map_figure(view: RunView) -> tuple[HeadStats, ...]:
    return tuple(head_stats(view))


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


@dataclass(frozen=True, eq=False)
class Block:
    internals: BlockInternals  # norms, LayerNorm statistics, top neurons
    mlp_post: np.ndarray  # [4 n_embd] after GELU


def block_figure(view: RunView, layer: int, position: int) -> Block:
    internals = block_internals(view, layer, position)
    return Block(internals, numpy(internals.mlp_post))
