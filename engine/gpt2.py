"""GPT-2's forward pass as plain tensor math, one short function per stage: the reference
the engine is checked against. The run computes the same maths through the faster CPU
kernels of `kernels.py`, passed in as `Ops`.

Parameter names follow the published checkpoint (`wte`, `c_attn`, `n_head`); activation
names follow TransformerLens (`resid_pre`, `resid_mid`, `q`, `k`, `v`, `pattern`), and the
views, the JSON and the help text use the same names.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

LN_EPS = 1e-5
HALF = (torch.float16, torch.bfloat16)
# The products upcast a weight held in half precision this many elements at a time (4 MB as
# float32): never a float32 copy of a whole matrix, and the block is still in the L3 cache
# when the product reads it. Smaller blocks cost more in dispatch than they gain in cache:
# a GPT-2 medium decode step took 130, 76 and 63 ms with blocks of 1/8, 1/2 and 1 M.
BLOCK_ELEMENTS = 1 << 20
# Each thread's block buffer: a fresh tensor per block costs page faults, 10x the copy.
_staging = threading.local()


@dataclass(frozen=True)
class GPT2Config:
    n_layer: int
    n_head: int
    n_embd: int
    n_ctx: int
    vocab_size: int

    @property
    def d_head(self) -> int:
        return self.n_embd // self.n_head


@dataclass(frozen=True)
class LayerNorm:
    weight: torch.Tensor
    bias: torch.Tensor


@dataclass(frozen=True)
class Linear:
    """A Conv1D of the checkpoint, its weight held transposed: [out, in] as in torch's
    nn.Linear, so y = x @ weight.T + bias. A decode step streams each weight row by row
    (see `kernels.matmul`); the checkpoint's [in, out] streams slower."""

    weight: torch.Tensor
    bias: torch.Tensor


@dataclass(frozen=True)
class Block:
    ln_1: LayerNorm
    c_attn: Linear
    c_proj: Linear
    ln_2: LayerNorm
    c_fc: Linear
    mlp_proj: Linear


@dataclass(frozen=True)
class Params:
    """wte and the Linear weights may be held in half precision (see `compute_dtype`); the
    rest, small, is always held in the dtype the maths runs in."""

    wte: torch.Tensor
    wpe: torch.Tensor
    blocks: tuple[Block, ...]
    ln_f: LayerNorm

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the forward pass, its activations and the KV cache are in."""
        return self.ln_f.weight.dtype


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """What a model whose weights are held in `dtype` computes in: float32 for half
    precision, whose sums lose too much (CPUs have no float16 matrix product to speak of)."""
    return torch.float32 if dtype in HALF else dtype


def blockwise(
    x: torch.Tensor,
    weight: torch.Tensor,
    product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """`product(x, w)` (x @ w.T) for a weight held in lower precision than x: the weight
    upcast to x's dtype a block of rows at a time, each block's product computed in x's
    precision."""
    rows = max(BLOCK_ELEMENTS // weight.shape[-1], 1)
    parts = weight.split(rows)
    if torch.is_grad_enabled() and x.requires_grad:
        # A graph keeps each block for its backward pass: one buffer cannot serve them all.
        return torch.cat([product(x, part.to(x.dtype)) for part in parts], dim=-1)
    buffer = staging(rows * weight.shape[-1], x.dtype, x.device)
    outs = []
    for part in parts:
        block = buffer[: part.numel()].view(part.shape)
        block.copy_(part)
        outs.append(product(x, block))
    return torch.cat(outs, dim=-1)


def staging(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """This thread's buffer of at least `n` elements of `dtype` on `device`."""
    buffer = getattr(_staging, "buffer", None)
    if buffer is None or buffer.numel() < n or buffer.dtype != dtype or buffer.device != device:
        buffer = _staging.buffer = torch.empty(n, dtype=dtype, device=device)
    return buffer


@dataclass(frozen=True)
class Ops:
    """The three products a forward pass is made of; `REFERENCE` is the plain maths below,
    `kernels.CPU` the same numbers faster."""

    matmul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    linear: Callable[[torch.Tensor, Linear], torch.Tensor]
    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Cache(Protocol):
    """What a run keeps of a forward pass: the residual stream entering each block, and the
    queries, keys and values of the new positions, which it returns with the earlier
    positions' keys and values for the new queries to attend over."""

    def keep_resid_pre(self, layer: int, resid: torch.Tensor) -> None: ...

    def keep_qkv(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def layer_norm(x: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), ln.weight, ln.bias, LN_EPS)


def matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [..., in] @ weight.T, for a weight stored [out, in]."""
    if weight.dtype != x.dtype:
        return blockwise(x, weight, matmul)
    return x @ weight.T


def linear(x: torch.Tensor, lin: Linear) -> torch.Tensor:
    return matmul(x, lin.weight) + lin.bias


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """[..., T, C] -> [..., n_head, T, d_head]"""
    return x.unflatten(-1, (n_head, -1)).transpose(-3, -2)


def merge_heads(z: torch.Tensor) -> torch.Tensor:
    """[..., n_head, T, d_head] -> [..., T, C]"""
    return z.transpose(-3, -2).flatten(-2)


def causal_mask(n_query: int, n_key: int, device: torch.device) -> torch.Tensor:
    """True where a query may see a key; the queries are the last n_query positions."""
    query_pos = torch.arange(n_key - n_query, n_key, device=device)
    return torch.arange(n_key, device=device) <= query_pos[:, None]


def attention_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q.k / sqrt(d_head) for every query and key, -inf where the causal mask hides the key
    (TransformerLens's attn_scores)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    mask = causal_mask(q.shape[-2], k.shape[-2], q.device)
    return scores.masked_fill(~mask, float("-inf"))


def attention_pattern(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.softmax(attention_scores(q, k), dim=-1)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """z = softmax(q k^T / sqrt(d_head), causal) v, for queries at the last positions of k."""
    return attention_pattern(q, k) @ v


REFERENCE = Ops(matmul, linear, attend)


def project_qkv(
    x_ln: torch.Tensor, block: Block, n_head: int, ops: Ops = REFERENCE
) -> tuple[torch.Tensor, ...]:
    """q, k, v [..., n_head, T, d_head] of the normalised residual stream."""
    qkv = ops.linear(x_ln, block.c_attn)
    return tuple(split_heads(t, n_head) for t in qkv.chunk(3, dim=-1))


def mlp_post(x_ln: torch.Tensor, block: Block, ops: Ops = REFERENCE) -> torch.Tensor:
    """The MLP's hidden activations after GELU (tanh approximation), 4 x n_embd wide."""
    return F.gelu(ops.linear(x_ln, block.c_fc), approximate="tanh")


def attn(
    x: torch.Tensor, block: Block, n_head: int, ops: Ops, cache: Cache | None, layer: int
) -> torch.Tensor:
    """What attention adds to the residual stream."""
    q, k, v = project_qkv(layer_norm(x, block.ln_1), block, n_head, ops)
    if cache is not None:
        k, v = cache.keep_qkv(layer, q, k, v)
    return ops.linear(merge_heads(ops.attend(q, k, v)), block.c_proj)


def mlp(x: torch.Tensor, block: Block, ops: Ops) -> torch.Tensor:
    """What the MLP adds to the residual stream."""
    return ops.linear(mlp_post(layer_norm(x, block.ln_2), block, ops), block.mlp_proj)


def embed(params: Params, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return params.wte[ids] + params.wpe[positions]


def transformer(
    params: Params,
    n_head: int,
    resid: torch.Tensor,
    ops: Ops = REFERENCE,
    cache: Cache | None = None,
) -> torch.Tensor:
    """Run every block over the embedded tokens; returns the final residual stream."""
    for layer, block in enumerate(params.blocks):
        if cache is not None:
            cache.keep_resid_pre(layer, resid)
        resid = resid + attn(resid, block, n_head, ops, cache, layer)
        resid = resid + mlp(resid, block, ops)
    return resid


def unembed(params: Params, resid: torch.Tensor, ops: Ops = REFERENCE) -> torch.Tensor:
    """Final LayerNorm, then the LM head tied to the token embedding."""
    return ops.matmul(layer_norm(resid, params.ln_f), params.wte)


def final_resid(params: Params, n_head: int, ids: torch.Tensor) -> torch.Tensor:
    """The residual stream after the last block for a batch of token ids [..., T], no cache."""
    positions = torch.arange(ids.shape[-1], device=ids.device)
    return transformer(params, n_head, embed(params, ids, positions))


def forward(params: Params, n_head: int, ids: torch.Tensor) -> torch.Tensor:
    """Logits for every position of a batch of token ids [..., T], with no cache."""
    return unembed(params, final_resid(params, n_head, ids))
