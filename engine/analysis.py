"""Figures derived from a run's view for the views and the deeper screens: one attention
row, the attention computation stage by stage, statistics of every head, the logit lens and
one block's internals."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
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


def softmax(scores: np.ndarray) -> np.ndarray:
    weights = np.exp(scores - scores.max())
    return weights / weights.sum()


def scaled_and_unscaled(raw: np.ndarray, d_head: int) -> tuple[np.ndarray, np.ndarray]:
    """The softmax of a row's raw q.k [visible keys] divided by sqrt(d_head), as attention
    does, and without the division: why the scale is there."""
    raw = raw.astype(np.float64)
    return softmax(raw / math.sqrt(d_head)), softmax(raw)


def attention_row(q: np.ndarray, k: np.ndarray, v: np.ndarray, query: int) -> AttentionRow:
    """The row of query position `query`, whose q [d_head] looks at k, v [T, d_head]."""
    n = query + 1
    raw = k @ q
    scores = np.full(len(k), -np.inf, np.float32)
    scores[:n] = raw[:n] / np.float32(math.sqrt(len(q)))
    pattern = np.zeros(len(k), np.float32)
    pattern[:n] = softmax(scores[:n])
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
    INDUCTION = "induction"  # to the token after an earlier occurrence of the query's
    DUPLICATE_TOKEN = "duplicate-token"  # to an earlier occurrence of the query's token
    BROAD = "broad"  # spread thin: high entropy
    # Not "broad": a head can look sharply at something else (low entropy).
    OTHER = "other"


# The kinds named by where the weight goes once position 0 is set aside.
SINK_FREE_KINDS = (
    HeadKind.PREVIOUS_TOKEN,
    HeadKind.SELF,
    HeadKind.INDUCTION,
    HeadKind.DUPLICATE_TOKEN,
)
BROAD_THRESHOLD = 0.6  # mean entropy over the most each row could have (uniform)
MIN_REPEATS = 3  # queries with an earlier occurrence before induction/duplicate are scored
SINK_FLOOR = 1e-6  # a row with all its weight on position 0 has no rest to renormalise


@dataclass(frozen=True)
class HeadStats:
    layer: int
    head: int
    entropy: float  # bits, mean over query rows
    first_token: float  # mean attention on position 0 (the attention sink)
    previous_token: float  # mean attention on the token just before the query
    self_token: float  # mean attention of a query on itself
    # The same two with position 0 set aside: each row renormalised by 1 - a[q, 0], over
    # queries 2.. (for query 1, position 0 is the previous token).
    sink_free_previous: float
    sink_free_self: float
    # Sink-free mass on the token after an earlier occurrence of the query's token, and on
    # that occurrence, over the queries that have one; None below MIN_REPEATS of them.
    induction: float | None
    duplicate: float | None
    spread: float  # mean entropy of a row over log2 of its number of keys: 1 is uniform
    kind: HeadKind

    @property
    def mass(self) -> float | None:
        """The score that gave the head its kind (for broad, its spread); None for other."""
        return kind_scores(self).get(self.kind)


def kind_scores(h: HeadStats) -> dict[HeadKind, float]:
    scores = {
        HeadKind.PREVIOUS_TOKEN: h.sink_free_previous,
        HeadKind.SELF: h.sink_free_self,
        HeadKind.INDUCTION: h.induction,
        HeadKind.DUPLICATE_TOKEN: h.duplicate,
        HeadKind.FIRST_TOKEN_SINK: h.first_token,
        HeadKind.BROAD: h.spread,
    }
    return {kind: score for kind, score in scores.items() if score is not None}


def head_kind(h: HeadStats) -> HeadKind:
    """What the weight left after position 0 does, when half of it does one thing; else a
    sink when position 0 holds half the weight; else broad when the rows are spread thin.
    GPT-2 parks weight on position 0 in nearly every head, so naming the sink first would
    hide what most heads do with the rest."""
    scores = kind_scores(h)
    named = [(scores[k], k) for k in SINK_FREE_KINDS if k in scores]
    best, kind = max(named, key=lambda item: item[0])
    if best >= PATTERN_THRESHOLD:
        return kind
    if h.first_token >= PATTERN_THRESHOLD:
        return HeadKind.FIRST_TOKEN_SINK
    return HeadKind.BROAD if h.spread >= BROAD_THRESHOLD else HeadKind.OTHER


def repeat_masks(tokens: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, T] where query q finds an earlier occurrence j of its token (duplicate) and the
    token after one, j + 1 (induction). Keys 0, q - 1 and q are left out: they are what the
    sink, previous-token and self scores already measure."""
    ids = torch.tensor(tokens)
    same = ids[None, :] == ids[:, None]  # [q, j]
    T = len(tokens)
    q, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = (j >= 1) & (j <= q - 2)
    after = torch.zeros_like(same)
    after[:, 1:] = same[:, :-1]  # key j + 1 follows an occurrence at j
    return same & allowed, after & allowed


def value_norms(view: RunView, layer: int, head: int | None = None) -> torch.Tensor:
    """[n_head, T] (or [1, T] for one `head`): ||v_j @ W_O[h]||, the size of what key j's
    value writes through head h, as sqrt(v G_h v) with G_h = W_O[h]^T W_O[h]: d_head x
    d_head, so the values are never multiplied out to n_embd."""
    H, d = view.config.n_head, view.config.d_head
    heads = slice(None) if head is None else slice(head, head + 1)
    W_O = view.params.blocks[layer].c_proj.weight.view(-1, H, d)[:, heads]  # [n_embd, h, d]
    W_O = W_O.to(view.params.dtype)
    gram = torch.einsum("chd,che->hde", W_O, W_O)
    v = view.get("v", layer)[:, heads].transpose(0, 1)  # [h, T, d_head]
    return torch.einsum("htd,hde,hte->ht", v, gram, v).clamp_min(0).sqrt()


def value_weighted(pattern: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """||a_ij v_j W_O[h]|| = a_ij ||v_j W_O[h]||, each row renormalised to sum to 1
    (Kobayashi et al., 2020): pattern [..., T_q, T_k], norms [..., T_k]."""
    weighted = pattern * norms[..., None, :]
    return weighted / weighted.sum(-1, keepdim=True).clamp_min(1e-30)


def head_stats(
    view: RunView,
    weighted: bool = False,
    on_layer: Callable[[int, int], None] | None = None,
) -> list[HeadStats]:
    """Every head's statistics, averaged over the queries that have a choice: all but the
    first, which can only attend to itself (with a single token, that one). `weighted`:
    over the value-weighted patterns instead of the attention weights. `on_layer(done,
    n_layer)` follows each layer (a 48-layer map at 1024 tokens takes seconds)."""
    masks = repeat_masks(view.tokens)
    repeats = {name: mask.any(-1) for name, mask in zip(REPEATS, masks, strict=True)}
    stats = []
    with torch.no_grad():
        for layer in range(view.config.n_layer):
            norms = value_norms(view, layer) if weighted else None
            stats += layer_stats(layer, row_figures(view, layer, norms, masks), repeats)
            if on_layer is not None:
                on_layer(layer + 1, view.config.n_layer)
    return stats


ROW_CHUNK = 128  # query rows at a time: the pattern of a chunk stays in the CPU's cache
REPEATS = ("duplicate", "induction")  # the order repeat_masks returns them in


def row_figures(
    view: RunView,
    layer: int,
    norms: torch.Tensor | None,
    masks: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """[n_head, T] per query row: its entropy (bits), its weight on position 0, on itself,
    on the token before it, on its duplicates and induction targets (`masks`). The rows
    are made a chunk at a time, each over the keys it can see, never as one T x T pattern:
    for a 1024-token run of GPT-2 small that would stream 50 MB per layer and statistic."""
    q, k = (view.get(name, layer).transpose(0, 1) for name in ("q", "k"))
    T = view.n_tokens
    names = ("entropy", "first", "own", "previous", *REPEATS)
    figures: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for r0 in range(0, T, ROW_CHUNK):
        r1 = min(r0 + ROW_CHUNK, T)
        scores = gpt2.attention_scores(q[:, r0:r1], k[:, :r1])
        pattern = torch.softmax(scores, -1)
        if norms is not None:
            pattern = value_weighted(pattern, norms[:, :r1])
        rows, keys = torch.arange(r1 - r0), torch.arange(r0, r1)
        figures["entropy"].append(-torch.special.xlogy(pattern, pattern).sum(-1) / math.log(2))
        figures["first"].append(pattern[..., 0])
        figures["own"].append(pattern[:, rows, keys])
        figures["previous"].append(pattern[:, rows, (keys - 1).clamp_min(0)])
        for name, mask in zip(REPEATS, masks, strict=True):
            part = mask[r0:r1, :r1]
            # Most chunks of most texts repeat nothing: skip their two passes over the pattern.
            mass = (pattern * part).sum(-1) if part.any() else pattern.new_zeros(pattern.shape[:2])
            figures[name].append(mass)
    return {name: torch.cat(parts, -1) for name, parts in figures.items()}


def layer_stats(
    layer: int, rows: dict[str, torch.Tensor], repeats: dict[str, torch.Tensor]
) -> list[HeadStats]:
    """The heads' statistics from their rows' figures (row_figures); `repeats` [T] says
    which queries have a duplicate, an induction target."""
    T = rows["first"].shape[-1]
    first_query = 1 if T > 1 else 0
    zero = torch.zeros(rows["first"].shape[0])
    r = {name: figure[:, first_query:] for name, figure in rows.items()}
    rest = (1 - r["first"]).clamp_min(SINK_FLOOR)
    keys = torch.arange(first_query, T) + 1.0
    spread = (r["entropy"] / torch.log2(keys).clamp_min(1.0)).mean(-1)
    # Sink-free from query 2 on: for query 1 position 0 is the previous token itself.
    sink_free_previous, sink_free_self = (
        (r[name][:, 1:] / rest[:, 1:]).mean(-1) if T > 2 else zero for name in ("previous", "own")
    )
    induction, duplicate = (
        repeat_score(r[name], repeats[name][first_query:], rest) for name in REPEATS[::-1]
    )
    values = zip(
        r["entropy"].mean(-1).tolist(),
        r["first"].mean(-1).tolist(),
        r["previous"].mean(-1).tolist() if first_query else zero.tolist(),
        r["own"].mean(-1).tolist(),
        sink_free_previous.tolist(),
        sink_free_self.tolist(),
        induction,
        duplicate,
        spread.tolist(),
        strict=True,
    )
    stats = []
    for head, numbers in enumerate(values):
        h = HeadStats(layer, head, *numbers, kind=HeadKind.OTHER)
        stats.append(replace(h, kind=head_kind(h)))
    return stats


def repeat_score(mass: torch.Tensor, has: torch.Tensor, rest: torch.Tensor) -> list[float | None]:
    """Per head: the sink-free `mass` [n_head, Q], mean over the queries `has` [Q] marks;
    None when fewer than MIN_REPEATS of them have any."""
    if int(has.sum()) < MIN_REPEATS:
        return [None] * mass.shape[0]
    return (mass[:, has] / rest[:, has]).mean(-1).tolist()


@dataclass(frozen=True)
class HeadWrites:
    """What one head writes at one position, read as logits: z_h @ W_O[h] through ln_f with
    its scale frozen at the run's own (without ln_f's bias, which is no head's) and the
    unembedding. The tokens it promotes most and suppresses most, with their logit terms."""

    layer: int
    head: int
    position: int
    promoted: tuple[tuple[int, float], ...]  # (token id, logit term), largest first
    suppressed: tuple[tuple[int, float], ...]  # most negative first


def head_writes(
    view: RunView, position: int, heads: list[tuple[int, int]], k: int = 5
) -> list[HeadWrites]:
    """`heads`' writes at `position`, in one product with the unembedding."""
    H, d = view.config.n_head, view.config.d_head
    params = view.params
    with torch.no_grad():
        z = {layer: view.get("z", layer, position) for layer in {layer for layer, _ in heads}}
        outputs = [
            params.blocks[layer].c_proj.weight[:, head * d : (head + 1) * d].to(params.dtype)
            @ z[layer][head]
            for layer, head in heads
        ]
        writes = torch.stack(outputs) if outputs else params.ln_f.weight.new_zeros(0, H * d)
        x = view.get("resid_post", view.config.n_layer - 1, position)
        sigma = torch.sqrt(x.var(unbiased=False) + gpt2.LN_EPS)
        centred = writes - writes.mean(-1, keepdim=True)
        # gpt2.matmul: a wte held in half precision is upcast a block at a time.
        logits = gpt2.matmul(centred / sigma * params.ln_f.weight, params.wte)  # [heads, vocab]
        top, bottom = logits.topk(k, -1), logits.topk(k, -1, largest=False)
    return [
        HeadWrites(layer, head, position, pairs(top, i), pairs(bottom, i))
        for i, (layer, head) in enumerate(heads)
    ]


def pairs(top: torch.return_types.topk, i: int) -> tuple[tuple[int, float], ...]:
    return tuple(zip(top.indices[i].tolist(), top.values[i].tolist(), strict=True))


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
