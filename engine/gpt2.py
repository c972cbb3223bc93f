"""GPT-2's forward pass as plain tensor math, one short function per stage.

Parameter names follow the published checkpoint (`wte`, `c_attn`, `n_head`); activation
names follow TransformerLens (`resid_pre`, `resid_mid`, `q`, `k`, `v`, `pattern`), and the
views, the JSON and the help text use the same names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

LN_EPS = 1e-5


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
    (see `matmul`); the checkpoint's [in, out] streams slower."""

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
    wte: torch.Tensor
    wpe: torch.Tensor
    blocks: tuple[Block, ...]
    ln_f: LayerNorm


class Cache(Protocol):
    """Where a forward pass keeps what the views read, and the keys/values it attends over."""

    def write_qkv(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def write_resid(self, layer: int, resid_post: torch.Tensor) -> None: ...


def layer_norm(x: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), ln.weight, ln.bias, LN_EPS)


def matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [..., in] @ weight.T, for a weight stored [out, in].

    A decode step is nothing but one-row products, and MKL runs each on a single thread at
    about half the memory bandwidth. Cut into one block of rows per thread, the batched
    kernel gives every thread its own contiguous part of the weights to stream. Rows that
    do not split evenly (wte has 50257) take one small product after.
    """
    one_row = x.numel() == x.shape[-1]
    # bfloat16 goes another way than MKL's sgemv, and unsplit it is faster (16.6 against
    # 26.2 ms for GPT-2 small's products).
    split = x.device.type == "cpu" and weight.dtype == torch.float32 and weight.is_contiguous()
    if not (one_row and split):
        return x @ weight.T
    n_out, n_in = weight.shape
    n = torch.get_num_threads()
    even = n_out // n * n
    # The column as a transposed row (strides 1, n_in) takes MKL's matrix-vector kernel; as
    # an [n_in, 1] matrix of stride 1 the general product runs about 4x slower.
    column = x.reshape(1, n_in).T.expand(n, -1, -1)
    y = torch.bmm(weight[:even].view(n, -1, n_in), column).view(even)
    if even < n_out:
        y = torch.cat([y, weight[even:] @ x.reshape(n_in)])
    return y.view(*x.shape[:-1], n_out)


def linear(x: torch.Tensor, lin: Linear) -> torch.Tensor:
    if x.numel() == x.shape[-1]:
        return matmul(x, lin.weight) + lin.bias
    # addmm adds the bias inside the matrix product: one kernel and one pass over the
    # output instead of two.
    rows = torch.addmm(lin.bias, x.reshape(-1, x.shape[-1]), lin.weight.T)
    return rows.view(*x.shape[:-1], rows.shape[-1])


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """[..., T, C] -> [..., n_head, T, d_head]"""
    return x.unflatten(-1, (n_head, -1)).transpose(-3, -2)


def merge_heads(z: torch.Tensor) -> torch.Tensor:
    """[..., n_head, T, d_head] -> [..., T, C]"""
    return z.transpose(-3, -2).flatten(-2)


def project_qkv(x_ln: torch.Tensor, block: Block, n_head: int) -> tuple[torch.Tensor, ...]:
    qkv = linear(x_ln, block.c_attn)
    return tuple(split_heads(t, n_head) for t in qkv.chunk(3, dim=-1))


def causal_mask(n_query: int, n_key: int, device: torch.device) -> torch.Tensor:
    """True where a query may see a key; the queries are the last n_query positions."""
    query_pos = torch.arange(n_key - n_query, n_key, device=device)
    return torch.arange(n_key, device=device) <= query_pos[:, None]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_head), causal) v, for queries at the last positions of k."""
    n_query, n_key = q.shape[-2], k.shape[-2]
    if n_query == 1:
        # Decoding: one query sees every key, and two small matmuls are faster than the
        # general kernel of scaled_dot_product_attention.
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        return torch.softmax(scores, -1) @ v
    if n_query == n_key:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    mask = causal_mask(n_query, n_key, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def attention_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q.k / sqrt(d_head) for every query and key, -inf where the causal mask hides the key."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    mask = causal_mask(q.shape[-2], k.shape[-2], q.device)
    return scores.masked_fill(~mask, float("-inf"))


def attention_pattern(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.softmax(attention_scores(q, k), dim=-1)


def mlp_post(x_ln: torch.Tensor, block: Block) -> torch.Tensor:
    """The MLP's hidden activations after GELU (tanh approximation), 4 x n_embd wide."""
    return F.gelu(linear(x_ln, block.c_fc), approximate="tanh")


def attn_out(
    x: torch.Tensor, block: Block, n_head: int, cache: Cache | None, layer: int
) -> torch.Tensor:
    q, k, v = project_qkv(layer_norm(x, block.ln_1), block, n_head)
    if cache is not None:
        k, v = cache.write_qkv(layer, q, k, v)
    z = attend(q, k, v)
    return linear(merge_heads(z), block.c_proj)


def mlp_out(x: torch.Tensor, block: Block) -> torch.Tensor:
    return linear(mlp_post(layer_norm(x, block.ln_2), block), block.mlp_proj)


def embed(params: Params, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return params.wte[ids] + params.wpe[positions]


def transformer(
    params: Params, n_head: int, resid: torch.Tensor, cache: Cache | None = None
) -> torch.Tensor:
    """Run every block over the embedded tokens; returns the final residual stream."""
    for layer, block in enumerate(params.blocks):
        resid_mid = resid + attn_out(resid, block, n_head, cache, layer)
        resid = resid_mid + mlp_out(resid_mid, block)
        if cache is not None:
            cache.write_resid(layer, resid)
    return resid


def unembed(params: Params, resid: torch.Tensor) -> torch.Tensor:
    """Final LayerNorm, then the LM head tied to the token embedding."""
    return matmul(layer_norm(resid, params.ln_f), params.wte)


def final_resid(params: Params, n_head: int, ids: torch.Tensor) -> torch.Tensor:
    """The residual stream after the last block for a batch of token ids [..., T], no cache."""
    positions = torch.arange(ids.shape[-1], device=ids.device)
    return transformer(params, n_head, embed(params, ids, positions))


def forward(params: Params, n_head: int, ids: torch.Tensor) -> torch.Tensor:
    """Logits for every position of a batch of token ids [..., T], with no cache."""
    return unembed(params, final_resid(params, n_head, ids))
