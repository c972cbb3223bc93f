"""A KV-cached run of GPT-2 over a growing token sequence, and read-only views of it.

Per position the run keeps q, k and v of every head (the KV cache, plus q so attention
patterns can be derived on demand) and the residual stream entering each block and leaving
the last: O(n_layer x T x n_embd) memory. Attention scores and patterns, the heads' outputs,
the residual stream between attention and MLP, MLP activations and the logit lens are
recomputed from those when a view asks, never stored per head as T x T.

`RunView.get` reads every activation under TransformerLens's hook names, in its shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gpt2scope.engine import ablation as knock
from gpt2scope.engine import gpt2, kernels
from gpt2scope.engine.ablation import NO_ABLATION, Ablation, AblationMode
from gpt2scope.engine.errors import EngineError
from gpt2scope.engine.gpt2 import GPT2Config, Params

MIN_CAPACITY = 64
# TransformerLens's hook names without the `blocks.L.hook_` prefix, and the shapes `get`
# returns them in.
PER_MODEL = ("embed", "pos_embed")  # [T, n_embd], no layer
PER_LAYER = (
    "resid_pre",  # [T, n_embd] entering the block
    "q",  # [T, n_head, d_head]
    "k",
    "v",
    "attn_scores",  # [n_head, T_query, T_key] q.k / sqrt(d_head), -inf for later keys
    "pattern",  # [n_head, T_query, T_key] their softmax
    "z",  # [T, n_head, d_head] the pattern-weighted sum of values
    "resid_mid",  # [T, n_embd] after attention, before the MLP
    "mlp_post",  # [T, 4 n_embd] after GELU
    "resid_post",  # [T, n_embd] leaving the block
)


def grown(buffer: torch.Tensor, capacity: int) -> torch.Tensor:
    """A copy of `buffer` with room for `capacity` positions along dim -2; views of the old
    buffer stay valid because it is left untouched."""
    shape = (*buffer.shape[:-2], capacity, buffer.shape[-1])
    bigger = buffer.new_zeros(shape)
    bigger[..., : buffer.shape[-2], :] = buffer
    return bigger


class _Cache:
    """What a forward pass keeps for the views, in buffers with room for `capacity`
    positions: q, k, v [n_layer, n_head, capacity, d_head], the residual stream entering
    each block [n_layer, capacity, n_embd] and leaving the last [capacity, n_embd]. A pass
    writes positions start..end; growing copies into new buffers, so views of the old ones
    stay valid."""

    def __init__(self, config: GPT2Config, params: Params) -> None:
        L, H, d, C = config.n_layer, config.n_head, config.d_head, config.n_embd
        new = params.ln_f.weight.new_zeros  # in the compute dtype, whatever wte is held in
        self.q = new(L, H, MIN_CAPACITY, d)
        self.k = new(L, H, MIN_CAPACITY, d)
        self.v = new(L, H, MIN_CAPACITY, d)
        self.resid_pre = new(L, MIN_CAPACITY, C)
        self.resid_post = new(MIN_CAPACITY, C)
        self.start = self.end = 0

    def write(self, start: int, end: int, n_ctx: int) -> None:
        """Make room for, and aim the next pass at, positions start..end."""
        capacity = self.q.shape[-2]
        if end > capacity:
            capacity = min(max(end, 2 * capacity), n_ctx)
            # One at a time, so that at most one old buffer is alive beside the new ones.
            self.q = grown(self.q, capacity)
            self.k = grown(self.k, capacity)
            self.v = grown(self.v, capacity)
            self.resid_pre = grown(self.resid_pre, capacity)
            self.resid_post = grown(self.resid_post, capacity)
        self.start, self.end = start, end

    def keep_resid_pre(self, layer: int, resid: torch.Tensor) -> None:
        self.resid_pre[layer, self.start : self.end] = resid

    def keep_qkv(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s, e = self.start, self.end
        self.q[layer, :, s:e] = q
        self.k[layer, :, s:e] = k
        self.v[layer, :, s:e] = v
        return self.k[layer, :, :e], self.v[layer, :, :e]

    def keep_resid_post(self, resid: torch.Tensor) -> None:
        self.resid_post[self.start : self.end] = resid


class Run:
    """Tokens so far, their cached activations, and the logits for the next token, of the
    model with `ablation`'s knock-outs (none by default)."""

    def __init__(
        self, config: GPT2Config, params: Params, ablation: Ablation = NO_ABLATION
    ) -> None:
        self.config = config
        self.params = params
        self.ablation = ablation
        self.patch = ""  # what was copied into the run from another (see engine/patching.py)
        self.tokens: list[int] = []
        self.logits: torch.Tensor | None = None
        self._cache = _Cache(config, params)
        self._z_sums: dict[int, torch.Tensor] = {}  # mean-mode knock-outs' running sums

    @classmethod
    def rerun(cls, view: RunView, ablation: Ablation) -> Run:
        """The tokens of `view` through the model with `ablation`: the layers before the first
        one the two models compute differently are copied from `view`, not recomputed. A
        patched view is run again from its tokens, unpatched."""
        if view.patch:
            return cls.from_layer(view, 0, view.get("embed") + view.get("pos_embed"), ablation)
        first = ablation.first_difference(view.ablation)
        if first is None or first == view.config.n_layer:
            return cls.from_layer(view, view.config.n_layer, view._resid_post, ablation)
        return cls.from_layer(view, first, view._resid_pre[first], ablation)

    @classmethod
    def from_layer(
        cls,
        view: RunView,
        first: int,
        resid: torch.Tensor,
        ablation: Ablation = NO_ABLATION,
        patch: str = "",
    ) -> Run:
        """The tokens of `view` with `resid` [T, n_embd] as the residual stream entering block
        `first` (leaving the last block when `first` is n_layer), through the blocks from
        `first` on with `ablation`; the layers before `first` are copied from `view`. `patch`
        labels a run whose `resid` was patched: tokens added later see the patched past."""
        run = cls(view.config, view.params, ablation)
        run.patch = patch
        T, c = view.n_tokens, run._cache
        c.write(0, T, view.config.n_ctx)
        c.q[:first, :, :T] = view._q[:first]
        c.k[:first, :, :T] = view._k[:first]
        c.v[:first, :, :T] = view._v[:first]
        c.resid_pre[:first, :T] = view._resid_pre[:first]
        sums: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            if first < view.config.n_layer:
                n_head = view.config.n_head
                resid = knock.transformer(
                    view.params, n_head, resid, ablation, kernels.CPU, c, first, sums
                )
            c.keep_resid_post(resid)
            logits = gpt2.unembed(view.params, resid[-1], kernels.CPU)
        run._finish(list(view.tokens), logits, sums)
        return run

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def extend(self, token_ids: list[int]) -> None:
        """Append tokens through the KV cache; earlier positions are not recomputed."""
        self._check(token_ids)
        device = self.params.wte.device
        ids = torch.tensor(token_ids, device=device)
        start, end = self.n_tokens, self.n_tokens + len(token_ids)
        self._cache.write(start, end, self.config.n_ctx)
        positions = torch.arange(start, end, device=device)
        # The sums are the run's only state that is not per position: copied, so that a
        # refused pass leaves them as they were.
        sums = dict(self._z_sums)
        with torch.no_grad():
            resid = gpt2.embed(self.params, ids, positions)
            n_head = self.config.n_head
            if self.ablation.empty:
                resid = gpt2.transformer(self.params, n_head, resid, kernels.CPU, self._cache)
            else:
                resid = knock.transformer(
                    self.params, n_head, resid, self.ablation, kernels.CPU, self._cache, 0, sums
                )
            self._cache.keep_resid_post(resid)
            logits = gpt2.unembed(self.params, resid[-1], kernels.CPU)
        self._finish(self.tokens + token_ids, logits, sums)

    def _finish(self, tokens: list[int], logits: torch.Tensor, sums: dict) -> None:
        if not torch.isfinite(logits).all():
            # Refused before anything changes, so the run stays as it was before the call.
            raise EngineError(
                "the model's numbers overflowed: its next-token logits are not finite "
                "(are the weights scaled wrong?)"
            )
        self.logits = logits
        self.tokens = tokens
        self._z_sums = sums

    def step(self, token_id: int) -> None:
        self.extend([token_id])

    def view(self) -> RunView:
        T, c = self.n_tokens, self._cache
        return RunView(
            config=self.config,
            params=self.params,
            tokens=tuple(self.tokens),
            logits=self.logits,
            _q=c.q[:, :, :T],
            _k=c.k[:, :, :T],
            _v=c.v[:, :, :T],
            _resid_pre=c.resid_pre[:, :T],
            _resid_post=c.resid_post[:T],
            ablation=self.ablation,
            patch=self.patch,
        )

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


@dataclass(frozen=True)
class RunView:
    """A run as it stood at `n_tokens`, safe to read from any thread while the run grows:
    positions below n_tokens are never written again, and growth copies into new buffers.
    Nothing is cached on a view: a session keeps one per step, and what a view derived
    would stay alive with it."""

    config: GPT2Config
    params: Params
    tokens: tuple[int, ...]
    logits: torch.Tensor
    _q: torch.Tensor  # [n_layer, n_head, T, d_head]
    _k: torch.Tensor
    _v: torch.Tensor
    _resid_pre: torch.Tensor  # [n_layer, T, n_embd]
    _resid_post: torch.Tensor  # [T, n_embd] leaving the last block
    ablation: Ablation = NO_ABLATION  # the knock-outs of the model that made the run
    patch: str = ""  # what was patched into the run from another, if anything

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def altered(self) -> bool:
        """Not the intact model's run of its tokens: knocked out or patched."""
        return not self.ablation.empty or bool(self.patch)

    def get(self, name: str, layer: int | None = None, position: int | None = None) -> torch.Tensor:
        """The activation TransformerLens names `name` (`blocks.{layer}.hook_{name}`, or
        `hook_{name}` for embed and pos_embed), in its shape (see PER_LAYER). The stored ones
        are views of the run's buffers; the others are worked out on each call.

        With `position`, only that query's part is worked out: get(name, layer)[position],
        or for attn_scores and pattern get(name, layer)[:, position], the query's rows.
        """
        self._check(name, layer, position)
        rows = slice(0, self.n_tokens) if position is None else slice(position, position + 1)
        activation = self._rows(name, layer, rows)
        if position is None:
            return activation
        return activation[:, 0] if name in ("attn_scores", "pattern") else activation[0]

    def logit_lens(self, position: int) -> torch.Tensor:
        """[n_layer, vocab] logits read off the residual stream after each block."""
        resid = [self.get("resid_post", layer, position) for layer in range(self.config.n_layer)]
        return gpt2.unembed(self.params, torch.stack(resid))

    def _check(self, name: str, layer: int | None, position: int | None) -> None:
        if position is not None and not 0 <= position < self.n_tokens:
            raise ValueError(f"position {position} is not in 0..{self.n_tokens - 1}")
        if name in PER_MODEL:
            if layer is not None:
                raise ValueError(f"{name} belongs to no layer")
        elif name not in PER_LAYER:
            raise ValueError(f"no activation named {name!r}: {', '.join(PER_MODEL + PER_LAYER)}")
        elif layer is None or not 0 <= layer < self.config.n_layer:
            raise ValueError(f"{name}: layer {layer} is not in 0..{self.config.n_layer - 1}")

    def _rows(self, name: str, layer: int | None, rows: slice) -> torch.Tensor:
        match name:
            case "embed" if rows.stop - rows.start == 1:
                # A view, not a gather: the UI thread reads the query's row at every key.
                row = self.params.wte[self.tokens[rows.start]][None]
                return row.to(self.params.dtype)  # still a view unless wte is half precision
            case "embed":
                return self.params.wte[list(self.tokens[rows])].to(self.params.dtype)
            case "pos_embed":
                return self.params.wpe[rows]
            case "resid_pre":
                return self._resid_pre[layer, rows]
            case "q":
                return self._q[layer, :, rows].transpose(0, 1)
            case "k":
                return self._k[layer, :, rows].transpose(0, 1)
            case "v":
                return self._v[layer, :, rows].transpose(0, 1)
            case "attn_scores":
                return self._scores(layer, rows)
            case "pattern":
                return torch.softmax(self._scores(layer, rows), dim=-1)
            case "z":
                return self._z(layer, rows)
            case "resid_mid":
                return self._resid_mid(layer, rows)
            case "mlp_post":
                block = self.params.blocks[layer]
                x_ln = gpt2.layer_norm(self._resid_mid(layer, rows), block.ln_2)
                return gpt2.mlp_post(x_ln, block)
            case "resid_post" if layer + 1 < self.config.n_layer:
                return self._resid_pre[layer + 1, rows]
            case "resid_post":
                return self._resid_post[rows]

    def _scores(self, layer: int, rows: slice) -> torch.Tensor:
        """[n_head, rows, T]: the rows' queries see the keys up to their own position."""
        q, k = self._q[layer, :, rows], self._k[layer, :, : rows.stop]
        scores = gpt2.attention_scores(q, k)
        return F.pad(scores, (0, self.n_tokens - rows.stop), value=float("-inf"))

    def _z(self, layer: int, rows: slice) -> torch.Tensor:
        """z as it enters c_proj: of a knocked-out head, what replaced it."""
        if self.ablation.mode == AblationMode.MEAN and self.ablation.heads_at(layer):
            # A mean over the positions so far needs every earlier row.
            z = self.ablation.knock_out(layer, self._real_z(layer, slice(0, rows.stop)), 0, {})
            z = z[:, rows]
        else:
            z = self.ablation.knock_out(layer, self._real_z(layer, rows), rows.start, {})
        return z.transpose(0, 1)

    def _real_z(self, layer: int, rows: slice) -> torch.Tensor:
        """[n_head, rows, d_head], the pattern-weighted values."""
        pattern = torch.softmax(self._scores(layer, rows), dim=-1)
        return pattern @ self._v[layer]

    def _resid_mid(self, layer: int, rows: slice) -> torch.Tensor:
        attn_out = gpt2.linear(self._z(layer, rows).flatten(-2), self.params.blocks[layer].c_proj)
        return self._resid_pre[layer, rows] + attn_out
