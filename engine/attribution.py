"""Why the model wrote a token: direct logit attribution, knock-outs and saliency.

Direct logit attribution (DLA): the final residual stream at a position is a sum of writes,
the embedding (wte[x_p] + wpe[p]), each head's z_h @ W_O[h] (its rows of c_proj), each
layer's c_proj bias and each MLP's output. With the scale of ln_f frozen at the run's own
sigma_p = sqrt(var(x_p) + eps), ln_f is linear, and write c adds
((c - mean(c)) / sigma_p) * ln_f.weight . u to the logit of the target, u = wte[target]
(minus wte[contrast]); ln_f.bias . u is one more term. The terms add up to the logit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from gpt2scope.engine import ablation as knock
from gpt2scope.engine import gpt2, kernels
from gpt2scope.engine.ablation import Ablation, AblationMode
from gpt2scope.engine.run import Run, RunView

__all__ = [
    "Ablation",
    "AblationMode",
    "Attribution",
    "Component",
    "ablated",
    "attribution",
    "default_target",
    "head_effects",
    "saliency",
]


@dataclass(frozen=True)
class Component:
    name: str  # "embed", "L0H0", "L0.attn_bias", "L0.mlp", ..., "ln_f.bias"
    layer: int | None
    head: int | None
    value: float


@dataclass(frozen=True)
class Attribution:
    position: int
    target: int
    contrast: int | None
    total: float  # the sum of the components
    model_value: float  # the model's own logit (or logit difference)
    components: tuple[Component, ...]


def attribution(
    view: RunView, position: int, target: int, contrast: int | None = None
) -> Attribution:
    """The DLA of `target`'s logit (minus `contrast`'s) at `position`, of the model that made
    the view: a knocked-out head's write is what replaced it, a knocked-out MLP's is 0."""
    _check(view, position, target, contrast)
    params, L = view.params, view.config.n_layer
    u = _direction(view, target, contrast)
    names, writes = _writes(view, position)
    x = view.get("resid_post", L - 1, position).double()
    sigma = torch.sqrt(x.var(unbiased=False) + gpt2.LN_EPS)
    g = params.ln_f.weight.double() * u
    # In float64: a logit difference can be a small sum of large terms.
    writes = writes.double()
    values = ((writes - writes.mean(-1, keepdim=True)) @ g / sigma).tolist()
    values.append(float(params.ln_f.bias.double() @ u))
    names.append(("ln_f.bias", None, None))
    components = tuple(
        Component(n, layer, head, v) for (n, layer, head), v in zip(names, values, strict=True)
    )
    model_value = float(
        _metric(_logits(view, position, [target] if contrast is None else [target, contrast]))
    )
    return Attribution(position, target, contrast, sum(values), model_value, components)


def default_target(view: RunView, position: int) -> int:
    """The next token of the text, or after the last token the model's top prediction."""
    if position + 1 < view.n_tokens:
        return view.tokens[position + 1]
    return int(view.logits.argmax())


def saliency(view: RunView, position: int, target: int) -> list[float]:
    """Gradient x input for log p(target) at `position`: (d log p / d e_i) . e_i with
    e_i = wte[x_i] + wpe[i], for i = 0..position. The graph lives only inside the call."""
    _check(view, position, target, None)
    params = view.params
    ids = list(view.tokens[: position + 1])
    with torch.enable_grad():
        e = (params.wte[ids] + params.wpe[: position + 1]).detach().requires_grad_()
        resid = knock.transformer(params, view.config.n_head, e, view.ablation, kernels.CPU)
        log_p = torch.log_softmax(gpt2.unembed(params, resid[-1], kernels.CPU), -1)[target]
        (grad,) = torch.autograd.grad(log_p, e)
    return (grad * e.detach()).sum(-1).tolist()


def ablated(view: RunView, ablation: Ablation) -> RunView:
    """The same tokens through the model knocked out as `ablation` says (instead of the
    view's own knock-outs), re-run from the first layer where the two differ; the layers
    before it are reused from the view."""
    return Run.rerun(view, ablation).view()


def head_effects(
    view: RunView,
    position: int,
    target: int,
    contrast: int | None,
    mode: AblationMode,
    on_row: Callable[[int, list[float]], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> list[list[float]]:
    """[n_layer][n_head]: the logit of `target` (minus `contrast`'s) at `position` with each
    head knocked out alone, on top of the view's own knock-outs, minus its value in the view.

    Layers go last to first, the cheapest first; each layer's heads run as one batch from
    that layer on, over positions 0..position only, and only `position`'s logits are made.
    `on_row(layer, row)` follows each layer; once `cancelled()` is true the layers not done
    are left as empty rows.
    """
    _check(view, position, target, contrast)
    ids = [target] if contrast is None else [target, contrast]
    base = _metric(_logits(view, position, ids))
    rows: list[list[float]] = [[] for _ in range(view.config.n_layer)]
    for layer in reversed(range(view.config.n_layer)):
        if cancelled():
            break
        with torch.no_grad():
            logits = _knocked_out_heads_logits(view, layer, position, ids, mode)
        rows[layer] = (_metric(logits.T) - base).tolist()
        if on_row is not None:
            on_row(layer, rows[layer])
    return rows


def _metric(logits: torch.Tensor) -> torch.Tensor:
    """The target's logit, minus the contrast's when there is one (ids along dim 0)."""
    return logits[0] if len(logits) == 1 else logits[0] - logits[1]


def _knocked_out_heads_logits(
    view: RunView, layer: int, position: int, ids: list[int], mode: AblationMode
) -> torch.Tensor:
    """[n_head, len(ids)]: the logits of `ids` at `position` with head h of `layer` knocked
    out in batch element h. The block's queries, keys and values are the view's; only the
    heads' writes change, by what replacing each head's z takes away."""
    params, H, d = view.params, view.config.n_head, view.config.d_head
    block, rows = params.blocks[layer], position + 1
    z = view.get("z", layer)[:rows].transpose(0, 1)  # [n_head, rows, d_head]
    every_head = Ablation(mode, frozenset((layer, h) for h in range(H)))
    removed = z - every_head.knock_out(layer, z, 0, {})
    W_O = block.c_proj.weight.to(params.dtype).view(-1, H, d).permute(1, 2, 0)  # [H, d_head, C]
    resid = view.get("resid_mid", layer)[:rows] - torch.bmm(removed, W_O)
    if layer not in view.ablation.mlps:
        resid = resid + gpt2.mlp(resid, block, kernels.CPU)
    n_head = view.config.n_head
    resid = knock.transformer(params, n_head, resid, view.ablation, kernels.CPU, None, layer + 1)
    return gpt2.layer_norm(resid[:, -1], params.ln_f) @ params.wte[ids].to(params.dtype).T


def _check(view: RunView, position: int, target: int, contrast: int | None) -> None:
    if not 0 <= position < view.n_tokens:
        raise ValueError(f"position {position} is not in 0..{view.n_tokens - 1}")
    vocab = view.config.vocab_size
    for token in (target, contrast):
        if token is not None and not 0 <= token < vocab:
            raise ValueError(f"token id {token} is outside the vocabulary (0..{vocab - 1})")


def _direction(view: RunView, target: int, contrast: int | None) -> torch.Tensor:
    wte = view.params.wte
    if contrast is None:
        return wte[target].double()
    return wte[target].double() - wte[contrast].double()


def _logits(view: RunView, position: int, ids: list[int]) -> torch.Tensor:
    """The model's logits of `ids` at `position`: the run's own after the last token."""
    if position == view.n_tokens - 1:
        return view.logits[ids]
    x = view.get("resid_post", view.config.n_layer - 1, position)
    unembed = view.params.wte[ids].to(view.params.dtype)
    return gpt2.layer_norm(x, view.params.ln_f) @ unembed.T


def _writes(view: RunView, position: int) -> tuple[list[tuple], torch.Tensor]:
    """What each component wrote to the residual stream at `position`: their names
    (name, layer, head) and [n_components, n_embd]."""
    H, d = view.config.n_head, view.config.d_head
    names: list[tuple] = [("embed", None, None)]
    writes = [view.get("embed", None, position) + view.get("pos_embed", None, position)]
    for layer, block in enumerate(view.params.blocks):
        z = view.get("z", layer, position)  # [n_head, d_head]
        # Head h writes z_h through its own d_head columns of c_proj: [n_head, n_embd].
        W_O = block.c_proj.weight.to(z.dtype).view(-1, H, d)
        heads = torch.einsum("hd,chd->hc", z, W_O)
        resid_mid = view.get("resid_pre", layer, position) + heads.sum(0) + block.c_proj.bias
        if layer in view.ablation.mlps:
            mlp = torch.zeros_like(resid_mid)
        else:
            mlp = view.get("resid_post", layer, position) - resid_mid
        names += [(f"L{layer}H{h}", layer, h) for h in range(H)]
        names += [(f"L{layer}.attn_bias", layer, None), (f"L{layer}.mlp", layer, None)]
        writes += [*heads, block.c_proj.bias, mlp]
    return names, torch.stack(writes)
