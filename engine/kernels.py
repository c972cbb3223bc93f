"""The CPU fast paths of the products in `gpt2.py`: the same numbers (tests/test_kernels.py
checks them against the reference), laid out so that MKL streams the weights faster. The
run computes through these; the views and the checks read the reference maths.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gpt2scope.engine.gpt2 import Linear, Ops, blockwise, causal_mask


def matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [..., in] @ weight.T, for a weight stored [out, in].

    A decode step is nothing but one-row products, and MKL runs each on a single thread at
    about half the memory bandwidth. Cut into one block of rows per thread, the batched
    kernel gives every thread its own contiguous part of the weights to stream. Rows that
    do not split evenly (wte has 50257) take one small product after.
    """
    if weight.dtype != x.dtype:  # held in half precision: computed in x's, block by block
        return blockwise(x, weight, matmul)
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
    if x.numel() == x.shape[-1] or lin.weight.dtype != x.dtype:
        return matmul(x, lin.weight) + lin.bias
    # addmm adds the bias inside the matrix product: one kernel and one pass over the
    # output instead of two.
    rows = torch.addmm(lin.bias, x.reshape(-1, x.shape[-1]), lin.weight.T)
    return rows.view(*x.shape[:-1], rows.shape[-1])


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


CPU = Ops(matmul, linear, attend)
