"""Why this token: DLA, one knock-out, every head's effect and saliency, against what a
researcher would otherwise run, transformers' GPT-2 with forward hooks (TransformerLens
is not installed here: see the report), on the same weights and tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from benchmarks.engine_bench import random_ids
from benchmarks.timing import alternate, timed
from gpt2scope.engine import Ablation, AblationMode, Model, ablated, attribution, head_effects
from gpt2scope.engine import saliency as gradient_x_input

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel


def knocked_out_logits(hf: GPT2LMHeadModel, ids: list[int], layer: int, head: int):
    """transformers' forward with a pre-hook zeroing one head's slice of attn.c_proj's input."""
    d = hf.config.n_embd // hf.config.n_head

    def hook(module, args):
        z = args[0].clone()
        z[..., head * d : (head + 1) * d] = 0
        return (z,)

    handle = hf.transformer.h[layer].attn.c_proj.register_forward_pre_hook(hook)
    try:
        return hf(torch.tensor([ids])).logits
    finally:
        handle.remove()


def measure(
    model: Model, hf: GPT2LMHeadModel, dla_tokens: int, effect_tokens: int, pairs: int
) -> dict:
    L, H = model.config.n_layer, model.config.n_head
    ids = random_ids(dla_tokens, model.config.vocab_size, seed=24)
    view = model.start(ids).view()
    target = int(view.logits.argmax())
    last = dla_tokens - 1
    dla_ms = min(timed(lambda: attribution(view, last, target), "cpu") for _ in range(pairs)) * 1e3

    one = Ablation(AblationMode.ZERO, frozenset({(L // 2, 0)}))
    with torch.no_grad():
        knock = alternate(lambda i: ablated(view, one), lambda i: model.start(ids), pairs, "cpu")
        hooked = alternate(
            lambda i: ablated(view, one),
            lambda i: knocked_out_logits(hf, ids, L // 2, 0),
            pairs,
            "cpu",
        )

    short = random_ids(effect_tokens, model.config.vocab_size, seed=25)
    short_view = model.start(short).view()

    def their_effects() -> None:
        with torch.no_grad():
            for layer in range(L):
                for head in range(H):
                    knocked_out_logits(hf, short, layer, head)

    effects = alternate(
        lambda i: head_effects(short_view, effect_tokens - 1, target, None, AblationMode.ZERO),
        lambda i: their_effects(),
        1,
        "cpu",
    )

    def their_saliency() -> None:
        e = hf.transformer.wte.weight.detach()[ids].clone().requires_grad_()
        log_p = torch.log_softmax(hf(inputs_embeds=e[None]).logits[0, -1], -1)[target]
        torch.autograd.grad(log_p, e)

    sal = alternate(
        lambda i: gradient_x_input(view, last, target), lambda i: their_saliency(), pairs, "cpu"
    )
    return {
        "dla": {"tokens": dla_tokens, "ours_ms": dla_ms},
        "knock_out_vs_prefill": {"tokens": dla_tokens, "layer": L // 2, **knock.as_json()},
        "knock_out_vs_hooked": {"tokens": dla_tokens, **hooked.as_json()},
        "head_effects": {"tokens": effect_tokens, "heads": L * H, **effects.as_json()},
        "saliency": {"tokens": dla_tokens, **sal.as_json()},
    }
