"""The induction probe: the model reads `<|endoftext|> r1..rN r1..rN`, N random tokens twice,
and each head is scored on what induction, duplicate-token and previous-token heads do over
the second copy. A model that copies predicts the second copy far better than the first; the
top induction heads knocked out (the engine's Ablation) show how much of that they carry.

Positions: 0 is <|endoftext|>, the first copy is 1..N, the second N+1..2N, and the token at
q in the second copy first occurred at q - N. Scores are mean attention weights over the
second copy's queries: induction q -> q - N + 1 (the token that followed the first
occurrence), duplicate q -> q - N (the occurrence itself), previous q -> q - 1.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from gpt2scope.engine import gpt2
from gpt2scope.engine.ablation import Ablation
from gpt2scope.engine.run import Run, RunView

DEFAULT_N = 32
EOT = 50256
# Drawn from ids below this: GPT-2's BPE numbers its merges in the order it learned them,
# so these are the common ones, which even a small model trained on a narrow text has seen
# (the demo model never trained on 40% of the vocabulary; its rows there are all 0).
COMMON_IDS = 5000
KNOCKED_MAX = 8  # the induction heads knocked out: within half the top score, at most this


@dataclass(frozen=True)
class ProbeHead:
    layer: int
    head: int
    induction: float
    duplicate: float
    previous: float


@dataclass(frozen=True, eq=False)
class InductionProbe:
    seed: int
    n: int
    view: RunView  # the model's run over the probe's tokens
    heads: tuple[ProbeHead, ...]  # by layer, then head
    loss_first: float  # mean cross-entropy (nats) predicting r2..rN in the first copy
    loss_second: float  # the same tokens predicted in the second copy
    knocked_out: Ablation  # the view's knock-outs and the top induction heads
    knocked_loss_first: float
    knocked_loss_second: float

    @property
    def top_heads(self) -> list[tuple[int, int]]:
        """The top induction heads, the ones knocked out, strongest first."""
        added = self.knocked_out.heads - self.view.ablation.heads
        ranked = sorted(self.heads, key=lambda h: -h.induction)
        return [(h.layer, h.head) for h in ranked if (h.layer, h.head) in added]


def probe_length(n: int, n_ctx: int) -> int:
    """N as asked, at most what fits the context twice after <|endoftext|>."""
    return max(2, min(n, (n_ctx - 1) // 2))


def probe_tokens(params: gpt2.Params, n: int, seed: int) -> list[int]:
    """<|endoftext|>, then n distinct common tokens the model has trained rows for, twice."""
    ids = torch.arange(min(COMMON_IDS, len(params.wte)))
    ids = ids[(params.wte[ids].norm(dim=-1) > 0).cpu() & (ids != EOT)]
    chosen = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))[:n]]
    r = chosen.tolist()
    return [EOT, *r, *r]


def probe_scores(pattern: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    """(induction, duplicate, previous) [n_head] from pattern [n_head, 2n + 1, 2n + 1]."""
    q = torch.arange(n + 1, 2 * n + 1)
    return tuple(pattern[:, q, q - shift].mean(-1) for shift in (n - 1, n, 1))


def copy_losses(view: RunView, n: int) -> tuple[float, float]:
    """Cross-entropy of r2..rN after r1..r(N-1), in the first copy and in the second."""
    with torch.no_grad():
        resid = view.get("resid_post", view.config.n_layer - 1)
        log_p = torch.log_softmax(gpt2.unembed(view.params, resid), -1)
        tokens = torch.tensor(view.tokens, device=log_p.device)
        loss = -log_p[:-1].gather(-1, tokens[1:, None])[:, 0]  # loss[p]: predicting p + 1
    return float(loss[1:n].mean()), float(loss[n + 1 : 2 * n].mean())


def knocked(heads: list[ProbeHead], ablation: Ablation) -> Ablation:
    """`ablation` and the induction heads within half of the top score, at most KNOCKED_MAX."""
    ranked = sorted(heads, key=lambda h: -h.induction)[:KNOCKED_MAX]
    top = [(h.layer, h.head) for h in ranked if h.induction >= ranked[0].induction / 2]
    return replace(ablation, heads=ablation.heads | frozenset(top))


def induction_probe(
    config: gpt2.GPT2Config,
    params: gpt2.Params,
    ablation: Ablation,
    n: int = DEFAULT_N,
    seed: int = 0,
) -> InductionProbe:
    """Run the probe through the model with `ablation`'s knock-outs, score every head, and
    run it again with the top induction heads knocked out as well."""
    n = probe_length(n, config.n_ctx)
    run = Run(config, params, ablation)
    run.extend(probe_tokens(params, n, seed))
    view = run.view()
    heads = []
    with torch.no_grad():
        for layer in range(config.n_layer):
            scores = probe_scores(view.get("pattern", layer), n)
            for head, values in enumerate(zip(*(s.tolist() for s in scores), strict=True)):
                heads.append(ProbeHead(layer, head, *values))
    without = knocked(heads, ablation)
    knocked_view = Run.rerun(view, without).view()
    return InductionProbe(
        seed, n, view, tuple(heads), *copy_losses(view, n), without, *copy_losses(knocked_view, n)
    )
