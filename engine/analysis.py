"""Figures derived from a run's view for the deeper screens: the attention computation stage
by stage, statistics of every head, the logit lens and one block's internals."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gpt2scope.engine import gpt2
from gpt2scope.engine.run import RunView

PATTERN_THRESHOLD = 0.5


@dataclass(frozen=True)
class AttentionStages:
    """One attention row of one head, computed stage by stage for query `query`."""

    layer: int
    head: int
    query: int
    resid_pre: torch.Tensor  # [n_embd] the row entering the block
    ln_mean: float  # LayerNorm ln_1's statistics of that row
    ln_std: float
    normalized: torch.Tensor  # [n_embd] after ln_1
    q: torch.Tensor  # [d_head] this query's q
    k: torch.Tensor  # [T, d_head] every key
    v: torch.Tensor  # [T, d_head] every value
    raw_scores: torch.Tensor  # [T] q.k
    scaled_scores: torch.Tensor  # [T] q.k / sqrt(d_head), -inf for keys after the query
    pattern: torch.Tensor  # [T] softmax of the scaled scores
    z: torch.Tensor  # [d_head] the pattern-weighted sum of values: the head's output


def layer_norm_stats(x: torch.Tensor) -> tuple[float, float]:
    """The mean and standard deviation LayerNorm divides by (biased variance, eps 1e-5)."""
    var = x.var(unbiased=False)
    return float(x.mean()), math.sqrt(float(var) + gpt2.LN_EPS)


def attention_stages(view: RunView, layer: int, head: int, query: int) -> AttentionStages:
    block = view.params.blocks[layer]
    x = view.resid_pre[layer, query]
    normalized = gpt2.layer_norm(x, block.ln_1)
    q = gpt2.project_qkv(normalized[None], block, view.config.n_head)[0][head, 0]
    k, v = view.k[layer, head], view.v[layer, head]
    raw_scores = k @ q
    visible = torch.arange(view.n_tokens) <= query
    scaled = (raw_scores / math.sqrt(q.shape[-1])).masked_fill(~visible, float("-inf"))
    pattern = torch.softmax(scaled, -1)
    mean, std = layer_norm_stats(x)
    return AttentionStages(
        layer=layer,
        head=head,
        query=query,
        resid_pre=x,
        ln_mean=mean,
        ln_std=std,
        normalized=normalized,
        q=q,
        k=k,
        v=v,
        raw_scores=raw_scores,
        scaled_scores=scaled,
        pattern=pattern,
        z=pattern @ v,
    )


@dataclass(frozen=True)
class HeadStats:
    layer: int
    head: int
    entropy: float  # bits, mean over query rows
    first_token: float  # mean attention on position 0 (the attention sink)
    previous_token: float  # mean attention on the token just before the query
    self_token: float  # mean attention of a query on itself
    pattern_name: str  # previous-token, first-token sink, self or other


def pattern_name(first_token: float, previous_token: float, self_token: float) -> str:
    scores = {"previous-token": previous_token, "first-token sink": first_token, "self": self_token}
    name, best = max(scores.items(), key=lambda item: item[1])
    # "other" is not "broad": a head can look sharply at something else (low entropy).
    return name if best >= PATTERN_THRESHOLD else "other"


def head_stats(view: RunView) -> list[HeadStats]:
    """Every head's statistics, averaged over the queries that have a choice: all but the
    first, which can only attend to itself (with a single token, that one)."""
    first_query = 1 if view.n_tokens > 1 else 0
    stats = []
    for layer in range(view.config.n_layer):
        pattern = gpt2.attention_pattern(view.q[layer], view.k[layer])  # [H, T, T]
        rows = pattern[:, first_query:]
        entropy = -(rows * torch.log2(rows.clamp_min(1e-30))).sum(-1).mean(-1)
        first = rows[..., 0].mean(-1)
        own = pattern.diagonal(dim1=-2, dim2=-1)[:, first_query:].mean(-1)
        previous = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)
        previous = previous.mean(-1) if first_query else torch.zeros_like(first)
        for head in range(view.config.n_head):
            f, p, s = float(first[head]), float(previous[head]), float(own[head])
            name = pattern_name(f, p, s)
            stats.append(HeadStats(layer, head, float(entropy[head]), f, p, s, name))
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
    resid_pre = view.resid_pre[layer, position]
    resid_mid = view.resid_mid(layer, position)
    resid_post = view.resid_pre[layer + 1, position]
    mlp_post = view.mlp_post(layer, position)
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
