"""A KV-cached run of GPT-2 over a growing token sequence, and read-only views of it.

Per position the run keeps q, k and v of every head (the KV cache, plus q so attention
patterns can be derived on demand) and the residual stream entering each block and leaving
the last: O(n_layer x T x n_embd) memory. Attention patterns, the residual stream between
attention and MLP, MLP activations and the logit lens are recomputed from those when a view
asks, never stored per head as T x T.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gpt2scope.engine import gpt2
from gpt2scope.engine.errors import EngineError
from gpt2scope.engine.gpt2 import GPT2Config, Params

MIN_CAPACITY = 64


def grown(buffer: torch.Tensor, capacity: int) -> torch.Tensor:
    """A copy of `buffer` with room for `capacity` positions along dim -2; views of the old
    buffer stay valid because it is left untouched."""
    shape = (*buffer.shape[:-2], capacity, buffer.shape[-1])
    bigger = buffer.new_zeros(shape)
    bigger[..., : buffer.shape[-2], :] = buffer
    return bigger


class Run:
    """Tokens so far, their cached activations, and the logits for the next token."""

    def __init__(self, config: GPT2Config, params: Params) -> None:
        self.config = config
        self.params = params
        self.tokens: list[int] = []
        self.logits: torch.Tensor | None = None
        L, H, d, C = config.n_layer, config.n_head, config.d_head, config.n_embd
        new = params.wte.new_zeros
        self._q = new(L, H, MIN_CAPACITY, d)
        self._k = new(L, H, MIN_CAPACITY, d)
        self._v = new(L, H, MIN_CAPACITY, d)
        self._resid_pre = new(L + 1, MIN_CAPACITY, C)
        self._start = self._end = 0

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def extend(self, token_ids: list[int]) -> None:
        """Append tokens through the KV cache; earlier positions are not recomputed."""
        self._check(token_ids)
        device = self.params.wte.device
        ids = torch.tensor(token_ids, device=device)
        self._start, self._end = self.n_tokens, self.n_tokens + len(token_ids)
        self._reserve(self._end)
        positions = torch.arange(self._start, self._end, device=device)
        with torch.no_grad():
            resid = gpt2.embed(self.params, ids, positions)
            self._resid_pre[0, self._start : self._end] = resid
            resid = gpt2.transformer(self.params, self.config.n_head, resid, cache=self)
            logits = gpt2.unembed(self.params, resid[-1])
        if not torch.isfinite(logits).all():
            # Refused before anything changes, so the run stays as it was before the call.
            raise EngineError(
                "the model's numbers overflowed: its next-token logits are not finite "
                "(are the weights scaled wrong?)"
            )
        self.logits = logits
        self.tokens.extend(token_ids)

    def step(self, token_id: int) -> None:
        self.extend([token_id])

    def view(self) -> RunView:
        T = self.n_tokens
        return RunView(
            config=self.config,
            params=self.params,
            tokens=tuple(self.tokens),
            logits=self.logits,
            q=self._q[:, :, :T],
            k=self._k[:, :, :T],
            v=self._v[:, :, :T],
            resid_pre=self._resid_pre[:, :T],
        )

    def attention(self, layer: int, head: int) -> torch.Tensor:
        return self.view().attention(layer, head)

    def qkv(self, layer: int, head: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.view().qkv(layer, head)

    def write_qkv(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s, e = self._start, self._end
        self._q[layer, :, s:e] = q
        self._k[layer, :, s:e] = k
        self._v[layer, :, s:e] = v
        return self._k[layer, :, :e], self._v[layer, :, :e]

    def write_resid(self, layer: int, resid_post: torch.Tensor) -> None:
        self._resid_pre[layer + 1, self._start : self._end] = resid_post

    def _check(self, token_ids: list[int]) -> None:
        n_ctx, vocab = self.config.n_ctx, self.config.vocab_size
        if not token_ids:
            raise EngineError("no tokens to run")
        if self.n_tokens + len(token_ids) > n_ctx:
            raise EngineError(
                f"{self.n_tokens + len(token_ids)} tokens exceed the model's context of {n_ctx}"
            )
        bad = [t for t in token_ids if not 0 <= t < vocab]
        if bad:
            raise EngineError(f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})")

    def _reserve(self, n: int) -> None:
        capacity = self._q.shape[-2]
        if n <= capacity:
            return
        capacity = min(max(n, 2 * capacity), self.config.n_ctx)
        # One at a time, so that at most one old buffer is alive beside the new ones.
        self._q = grown(self._q, capacity)
        self._k = grown(self._k, capacity)
        self._v = grown(self._v, capacity)
        self._resid_pre = grown(self._resid_pre, capacity)


@dataclass(frozen=True)
class RunView:
    """A run as it stood at `n_tokens`, safe to read from any thread while the run grows:
    positions below n_tokens are never written again, and growth copies into new buffers."""

    config: GPT2Config
    params: Params
    tokens: tuple[int, ...]
    logits: torch.Tensor
    q: torch.Tensor  # [n_layer, n_head, T, d_head]
    k: torch.Tensor
    v: torch.Tensor
    resid_pre: torch.Tensor  # [n_layer + 1, T, n_embd]; the last is the final residual stream

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def qkv(self, layer: int, head: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.q[layer, head], self.k[layer, head], self.v[layer, head]

    def attention_scores(self, layer: int, head: int) -> torch.Tensor:
        """[T, T] q.k / sqrt(d_head), -inf above the diagonal."""
        return gpt2.attention_scores(self.q[layer, head], self.k[layer, head])

    def attention(self, layer: int, head: int) -> torch.Tensor:
        """[T, T] pattern: row = query, column = key; rows sum to 1, upper triangle exactly 0."""
        return gpt2.attention_pattern(self.q[layer, head], self.k[layer, head])

    def head_output(self, layer: int, head: int) -> torch.Tensor:
        """[T, d_head] the pattern-weighted sum of value vectors (z in TransformerLens)."""
        return self.attention(layer, head) @ self.v[layer, head]

    def embeddings(self, position: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(token embedding row, positional embedding row, their sum) for one position."""
        token_row = self.params.wte[self.tokens[position]]
        return token_row, self.params.wpe[position], self.resid_pre[0, position]

    def resid_mid(self, layer: int, position: int) -> torch.Tensor:
        """[n_embd] the residual stream inside block `layer` (after attention, before the
        MLP) at one position: resid_pre plus the attention output, worked out again from
        the cached q, k and v rather than stored, which would cost another n_layer x T x
        n_embd."""
        q = self.q[layer, :, position : position + 1]
        k, v = self.k[layer, :, : position + 1], self.v[layer, :, : position + 1]
        z = gpt2.attend(q, k, v)  # [n_head, 1, d_head]
        attn_out = gpt2.linear(gpt2.merge_heads(z), self.params.blocks[layer].c_proj)
        return self.resid_pre[layer, position] + attn_out[0]

    def mlp_post(self, layer: int, position: int) -> torch.Tensor:
        """[4 n_embd] the MLP's activations after GELU for one position."""
        block = self.params.blocks[layer]
        x_ln = gpt2.layer_norm(self.resid_mid(layer, position), block.ln_2)
        return gpt2.mlp_post(x_ln, block)

    def logit_lens(self, position: int) -> torch.Tensor:
        """[n_layer, vocab] logits read off the residual stream after each block."""
        return gpt2.unembed(self.params, self.resid_pre[1:, position])
