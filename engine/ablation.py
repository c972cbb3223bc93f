"""Knock-outs: GPT-2 with some heads' outputs and some MLPs removed, and its forward pass.

A knocked-out head's z (its pattern-weighted values, [n_head, T, d_head]) is replaced before
`c_proj`, so its write to the residual stream is gone while `c_proj`'s bias stays:
- zero: by 0;
- mean: at each position t by the mean of the head's own z over positions 0..t. At the last
  position that is the mean over the whole run; at earlier ones it is the mean over the
  positions so far, so the knocked-out model stays causal and a prefill, a generation and a
  re-run of the same tokens give the same numbers.
A knocked-out MLP adds nothing: its whole output, `mlp.c_proj`'s bias included, as a forward
hook on transformers' `h[l].mlp` returning zeros would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import torch

from gpt2scope.engine import gpt2
from gpt2scope.engine.gpt2 import GPT2Config, Ops, Params

SPEC = re.compile(r"^L(\d+)(?:H(\d+)|(mlp))$", re.IGNORECASE)


class AblationMode(StrEnum):
    ZERO = "zero"
    MEAN = "mean"


@dataclass(frozen=True)
class Ablation:
    mode: AblationMode = AblationMode.ZERO
    heads: frozenset[tuple[int, int]] = frozenset()  # (layer, head)
    mlps: frozenset[int] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.heads and not self.mlps

    def first_layer(self) -> int | None:
        """The first layer whose computation the knock-outs change."""
        layers = [layer for layer, _ in self.heads] + list(self.mlps)
        return min(layers, default=None)

    def label(self) -> str:
        """'L3H2 L5mlp': by layer, a layer's heads before its MLP."""
        items = [(layer, head) for layer, head in self.heads]
        items += [(layer, None) for layer in self.mlps]
        items.sort(key=lambda item: (item[0], item[1] is None, item[1] or 0))
        return " ".join(f"L{layer}mlp" if h is None else f"L{layer}H{h}" for layer, h in items)

    @classmethod
    def parse(cls, specs: list[str], mode: str, config: GPT2Config) -> Ablation:
        """From 'L3H2' (a head) and 'L5mlp' (an MLP); raises ValueError in one line."""
        try:
            parsed_mode = AblationMode(mode)
        except ValueError:
            raise ValueError(f"ablation mode {mode!r}: must be zero or mean") from None
        L, H = config.n_layer, config.n_head
        heads, mlps = set(), set()
        for spec in specs:
            match = SPEC.match(spec.strip())
            layer = int(match[1]) if match else -1
            head = int(match[2]) if match and match[2] is not None else None
            if not 0 <= layer < L or (head is not None and not 0 <= head < H):
                raise ValueError(
                    f"{spec!r}: knock out a head as L<layer>H<head> or an MLP as L<layer>mlp, "
                    f"layer 0..{L - 1}, head 0..{H - 1}"
                )
            if head is None:
                mlps.add(layer)
            else:
                heads.add((layer, head))
        return cls(parsed_mode, frozenset(heads), frozenset(mlps))

    def missing(self, config: GPT2Config) -> str:
        """The label of the heads and MLPs `config`'s model does not have ('' if none)."""
        L, H = config.n_layer, config.n_head
        outside = Ablation(
            self.mode,
            frozenset((layer, h) for layer, h in self.heads if not (layer < L and h < H)),
            frozenset(layer for layer in self.mlps if layer >= L),
        )
        return outside.label()

    def json(self) -> dict:
        return {
            "mode": str(self.mode),
            "heads": [list(h) for h in sorted(self.heads)],
            "mlps": sorted(self.mlps),
        }

    def heads_at(self, layer: int) -> list[int]:
        return sorted(head for at, head in self.heads if at == layer)

    def first_difference(self, other: Ablation) -> int | None:
        """The first layer `self` and `other` compute differently, or that holds a mean-mode
        head of `self` (whose running sums a re-run must rebuild from position 0)."""
        changed = _items(self) ^ _items(other)
        layers = [item[0] for item in changed]
        if self.mode == AblationMode.MEAN:
            layers += [layer for layer, _ in self.heads]
        return min(layers, default=None)

    def knock_out(
        self, layer: int, z: torch.Tensor, start: int, sums: dict[int, torch.Tensor]
    ) -> torch.Tensor:
        """z [..., n_head, T, d_head] of positions start.. with this layer's heads knocked
        out. In mean mode `sums[layer]` holds each head's sum of z over the positions before
        `start` (absent when start is 0) and is brought up to date."""
        heads = self.heads_at(layer)
        if not heads:
            return z
        knocked = torch.zeros(z.shape[-3], dtype=torch.bool, device=z.device)
        knocked[heads] = True
        knocked = knocked[:, None, None]
        if self.mode == AblationMode.ZERO:
            return z.masked_fill(knocked, 0.0)
        before = sums.get(layer)
        running = z.cumsum(-2) if before is None else z.cumsum(-2) + before[..., None, :]
        sums[layer] = running[..., -1, :]
        counts = torch.arange(start + 1, start + z.shape[-2] + 1, device=z.device)
        return torch.where(knocked, running / counts[:, None].to(z.dtype), z)


NO_ABLATION = Ablation()


def _items(ablation: Ablation) -> set[tuple]:
    heads = {(layer, head, ablation.mode) for layer, head in ablation.heads}
    return heads | {(layer, "mlp") for layer in ablation.mlps}


def transformer(
    params: Params,
    n_head: int,
    resid: torch.Tensor,
    ablation: Ablation,
    ops: Ops = gpt2.REFERENCE,
    cache: gpt2.Cache | None = None,
    first: int = 0,
    sums: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """`gpt2.transformer` with the knock-outs, from block `first` on (`resid` enters it).
    Without a cache the rows of `resid` are positions 0..; `sums` as in `knock_out`."""
    sums = {} if sums is None else sums
    for layer in range(first, len(params.blocks)):
        block = params.blocks[layer]
        if cache is not None:
            cache.keep_resid_pre(layer, resid)
        q, k, v = gpt2.project_qkv(gpt2.layer_norm(resid, block.ln_1), block, n_head, ops)
        if cache is not None:
            k, v = cache.keep_qkv(layer, q, k, v)
        start = k.shape[-2] - q.shape[-2]  # the queries are the last positions of k
        z = ablation.knock_out(layer, ops.attend(q, k, v), start, sums)
        resid = resid + ops.linear(gpt2.merge_heads(z), block.c_proj)
        if layer not in ablation.mlps:
            resid = resid + gpt2.mlp(resid, block, ops)
    return resid
