"""Figures derived from a run's view for the views and the deeper screens: one attention
row, the attention computation stage by stage, statistics of every head, the logit lens and
one block's internals."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch

from gpt2scope.engine import gpt2
from gpt2scope.engine.run import RunView

PATTERN_THRESHOLD = 0.5


@dataclass(frozen=True)
class AttentionRow:
    """What one head does for one query: the reference maths of gpt2.attention_scores,
    attention_pattern and attend for a single row, in numpy, because the UI thread reads
    rows and small torch ops there wait behind the runner's thread pool."""

    raw_scores: np.ndarray  # [T] q.k for every key, also those after the query
    scores: np.ndarray  # [T] q.k / sqrt(d_head), -inf for keys after the query
    pattern: np.ndarray  # [T] softmax of the scores, exactly 0 after the query
    z: np.ndarray  # [d_head] the pattern-weighted sum of values: the head's output


def attention_row(q: np.ndarray, k: np.ndarray, v: np.ndarray, query: int) -> AttentionRow:
    """The row of query position `query`, whose q [d_head] looks at k, v [T, d_head]."""
    n = query + 1
    raw = k @ q
    scores = np.full(len(k), -np.inf, np.float32)
    scores[:n] = raw[:n] / np.float32(math.sqrt(len(q)))
    weights = np.exp(scores[:n] - scores[:n].max())
    pattern = np.zeros(len(k), np.float32)
    pattern[:n] = weights / weights.sum()
    return AttentionRow(raw, scores, pattern, pattern[:n] @ v[:n])


@dataclass(frozen=True)
class AttentionStages:
    """One attention row of one head, computed stage by stage for query `query`."""

    layer: int
    head: int
    query: int
    resid_pre: np.ndarray  # [n_embd] the row entering the block
    ln_mean: float  # LayerNorm ln_1's statistics of that row
    ln_std: float
    normalized: np.ndarray  # [n_embd] after ln_1
    q: np.ndarray  # [d_head] this query's q
    k: np.ndarray  # [T, d_head] every key
    v: np.ndarray  # [T, d_head] every value
    row: AttentionRow  # q.k, scaled and masked, softmax, z


def numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def layer_norm_stats(x: torch.Tensor) -> tuple[float, float]:
    """The mean and standard deviation LayerNorm divides by (biased variance, eps 1e-5)."""
    var = x.var(unbiased=False)
    return float(x.mean()), math.sqrt(float(var) + gpt2.LN_EPS)


def attention_stages(view: RunView, layer: int, head: int, query: int) -> AttentionStages:
    block = view.params.blocks[layer]
    x = view.get("resid_pre", layer, query)
    normalized = gpt2.layer_norm(x, block.ln_1)
    q = numpy(gpt2.project_qkv(normalized[None], block, view.config.n_head)[0][head, 0])
    k, v = (numpy(view.get(name, layer)[:, head]) for name in ("k", "v"))
    mean, std = layer_norm_stats(x)
    return AttentionStages(
        layer=layer,
        head=head,
        query=query,
        resid_pre=numpy(x),
        ln_mean=mean,
        ln_std=std,
        normalized=numpy(normalized),
        q=q,
        k=k,
        v=v,
        row=attention_row(q, k, v, query),
    )


class HeadKind(StrEnum):
    """What a head's attention mostly does; the values are what the JSON writes."""

    PREVIOUS_TOKEN = "previous-token"
    FIRST_TOKEN_SINK = "first-token sink"
    SELF = "self"
    # Not "broad": a head can look sharply at something else (low entropy).
    OTHER = "other"


@dataclass(frozen=True)
class HeadStats:
    layer: int
    head: int
    entropy: float  # bits, mean over query rows
    first_token: float  # mean attention on position 0 (the attention sink)
    previous_token: float  # mean attention on the token just before the query
    self_token: float  # mean attention of a query on itself
    kind: HeadKind

    @property
    def mass(self) -> float | None:
        """The mean attention that gave the head its kind; None for other."""
        return kind_masses(self.first_token, self.previous_token, self.self_token).get(self.kind)


def kind_masses(
    first_token: float, previous_token: float, self_token: float
) -> dict[HeadKind, float]:
    return {
        HeadKind.PREVIOUS_TOKEN: previous_token,
        HeadKind.FIRST_TOKEN_SINK: first_token,
        HeadKind.SELF: self_token,
    }


def head_kind(first_token: float, previous_token: float, self_token: float) -> HeadKind:
    masses = kind_masses(first_token, previous_token, self_token)
    kind, best = max(masses.items(), key=lambda item: item[1])
    return kind if best >= PATTERN_THRESHOLD else HeadKind.OTHER


def head_stats(view: RunView) -> list[HeadStats]:
    """Every head's statistics, averaged over the queries that have a choice: all but the
    first, which can only attend to itself (with a single token, that one)."""
    first_query = 1 if view.n_tokens > 1 else 0
    stats = []
    for layer in range(view.config.n_layer):
        pattern = view.get("pattern", layer)  # [H, T, T]
        rows = pattern[:, first_query:]
        entropy = -(rows * torch.log2(rows.clamp_min(1e-30))).sum(-1).mean(-1)
        first = rows[..., 0].mean(-1)
        own = pattern.diagonal(dim1=-2, dim2=-1)[:, first_query:].mean(-1)
        previous = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)
        previous = previous.mean(-1) if first_query else torch.zeros_like(first)
        for head in range(view.config.n_head):
            f, p, s = float(first[head]), float(previous[head]), float(own[head])
            stats.append(HeadStats(layer, head, float(entropy[head]), f, p, s, head_kind(f, p, s)))
    return stats


@dataclass(frozen=True)
class LensRow:
    layer: int  # the block after which the residual stream is read
    top_ids: tuple[int, ...]
    top_probs: tuple[float, ...]
    target_prob: float  # the probability of the lens's target token


@dataclass(frozen=True)
class LogitLens:
    """The next-token prediction at one position read off the residual stream after every
    block; the last row is the model's own output. The target is the token that follows in
    the text, or, at the last position, the output's top choice."""

    position: int
    target: int
    target_is_next: bool
    rows: tuple[LensRow, ...]


def logit_lens_top(view: RunView, position: int, k: int = 5) -> LogitLens:
    """The top-k next tokens after every block, through the final LayerNorm and the tied
    unembedding, and the probability of the target token at each."""
    probs = torch.softmax(view.logit_lens(position), -1)
    top = probs.topk(k, dim=-1)
    target_is_next = position + 1 < view.n_tokens
    target = view.tokens[position + 1] if target_is_next else int(top.indices[-1, 0])
    rows = zip(top.indices.tolist(), top.values.tolist(), probs[:, target].tolist(), strict=True)
    return LogitLens(
        position,
        target,
        target_is_next,
        tuple(LensRow(layer, tuple(i), tuple(p), t) for layer, (i, p, t) in enumerate(rows)),
    )


@dataclass(frozen=True)
class BlockInternals:
    layer: int
    position: int
    resid_pre_norm: float  # the residual stream entering the block
    attn_out_norm: float  # what attention adds to it
    resid_mid_norm: float  # after attention, before the MLP
    mlp_out_norm: float  # what the MLP adds
    resid_post_norm: float  # leaving the block
    ln_1: tuple[float, float]  # (mean, std) ln_1 normalises the row by
    ln_2: tuple[float, float]
    mlp_post: torch.Tensor  # [4 n_embd] activations after GELU
    top_neurons: tuple[tuple[int, float], ...]  # (index, activation), largest first


def block_internals(view: RunView, layer: int, position: int, n_top: int = 8) -> BlockInternals:
    resid_pre, resid_mid, mlp_post, resid_post = (
        view.get(name, layer, position)
        for name in ("resid_pre", "resid_mid", "mlp_post", "resid_post")
    )
    top = mlp_post.topk(n_top)
    return BlockInternals(
        layer=layer,
        position=position,
        resid_pre_norm=float(resid_pre.norm()),
        attn_out_norm=float((resid_mid - resid_pre).norm()),
        resid_mid_norm=float(resid_mid.norm()),
        mlp_out_norm=float((resid_post - resid_mid).norm()),
        resid_post_norm=float(resid_post.norm()),
        ln_1=layer_norm_stats(resid_pre),
        ln_2=layer_norm_stats(resid_mid),
        mlp_post=mlp_post,
        top_neurons=tuple(zip(top.indices.tolist(), top.values.tolist(), strict=True)),
    )
