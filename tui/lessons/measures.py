"""What a lesson step reveals, measured on the loaded model at the moment of the reveal: each
function reads the scope on screen (and the step's `args`) and returns named numbers for the
reveal's text, `value` among them (what the learner's answer is held against)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from gpt2scope.engine import AblationMode, RunView, SamplingParams, attribution, gpt2_tokenizer
from gpt2scope.engine.ablation import NO_ABLATION, Ablation
from gpt2scope.engine.analysis import attention_stages, head_stats, scaled_and_unscaled
from gpt2scope.engine.attribution import Component, ablated, default_target
from gpt2scope.engine.sampling import distributions
from gpt2scope.engine.sampling import entropy_bits as distribution_entropy
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import Pieces
from gpt2scope.tui.views.query import entropy_bits

Measured = dict[str, Any]


def token_count(scope: Scope, args: dict) -> Measured:
    """How many GPT-2 tokens `args.text` is, and its pieces."""
    tokenizer = gpt2_tokenizer()
    ids = tokenizer.encode(args["text"])
    pieces = Pieces(tokenizer)
    shown = "|".join(f"{pieces(t).label}({t})" for t in ids)
    return {"value": len(ids), "pieces": shown, "text": args["text"]}


def embedding_sum(scope: Scope, args: dict) -> Measured:
    """wte[x] + wpe[p] against what enters block 0 at the query."""
    view, q = scope.view, scope.query
    wte, wpe = view.get("embed", None, q), view.get("pos_embed", None, q)
    entering = view.get("resid_pre", 0, q)
    return {
        "value": float((entering - (wte + wpe)).abs().max()),
        "wte_norm": float(wte.norm()),
        "wpe_norm": float(wpe.norm()),
        "sum_norm": float(entering.norm()),
        "position": q,
    }


def scaling(scope: Scope, args: dict) -> Measured:
    """The query's row softmaxed with and without the / sqrt(d_head): which is more peaked."""
    s = scope.settings
    stages = attention_stages(scope.view, s.layer, s.head, scope.query)
    d = len(stages.q)
    scaled, unscaled = scaled_and_unscaled(stages.row.raw_scores[: scope.query + 1], d)
    h_scaled, h_unscaled = entropy_bits(scaled), entropy_bits(unscaled)
    value = (
        "same"
        if abs(h_scaled - h_unscaled) < 1e-3
        else ("unscaled" if h_unscaled < h_scaled else "scaled")
    )
    return {
        "value": value,
        "d_head": d,
        "sqrt_d": math.sqrt(d),
        "entropy_scaled": h_scaled,
        "entropy_unscaled": h_unscaled,
        "top_scaled": float(scaled.max()),
        "top_unscaled": float(unscaled.max()),
        "why": SCALING_WHY.get(value, ""),
    }


SCALING_WHY = {
    "unscaled": "Dividing the scores by a number above 1 always flattens a softmax: without it "
    "the dot products, which grow with d_head, push the softmax towards one key.",
    "same": "This row is saturated either way (or has one key): pick another head (, .) or "
    "query (← →) to see the difference.",
}  # a softmax of scores divided by more than 1 is never more peaked: no "scaled" sentence


def head_size(scope: Scope, args: dict) -> Measured:
    """d_head: how many numbers one head's q, k and v have."""
    config = scope.view.config
    return {"value": config.d_head, "n_embd": config.n_embd, "n_head": config.n_head}


def masked_keys(scope: Scope, args: dict) -> Measured:
    """The query's scores for the keys after it, once masked (stage 3 of the step-through)."""
    s, q = scope.settings, scope.query
    scores = attention_stages(scope.view, s.layer, s.head, q).row.scores
    after = scores[q + 1 :]
    value = "-inf" if len(after) and np.isneginf(after).all() else f"{float(after.max()):g}"
    return {"value": value, "masked": len(after), "visible": q + 1}


def z_length(scope: Scope, args: dict) -> Measured:
    """|z| against the longest value vector among the keys the query sees."""
    s, q = scope.settings, scope.query
    stages = attention_stages(scope.view, s.layer, s.head, q)
    norms = np.linalg.norm(stages.v[: q + 1], axis=-1)
    z = float(np.linalg.norm(stages.row.z))
    longest = int(norms.argmax())
    return {
        "value": "longer" if z > float(norms[longest]) * (1 + 1e-6) else "not longer",
        "z_norm": z,
        "v_max": float(norms[longest]),
        "longest": longest,
        "token": scope.pieces[longest].label,
    }


def first_token_weight(scope: Scope, args: dict) -> Measured:
    """The selected head's weight of query 0 on key 0, and the row's entropy."""
    row = scope.attn.pattern_row(0)[:1]
    return {"value": float(row[0]), "weight": float(row[0]), "entropy": entropy_bits(row)}


def row_entropy(scope: Scope, args: dict) -> Measured:
    """The query's row entropy against the most it could be, log2(number of keys)."""
    q = scope.query
    row = scope.attn.pattern_row(q)[: q + 1]
    h, most = entropy_bits(row), math.log2(q + 1)
    return {
        "value": h / most if most else 1.0,
        "entropy": h,
        "max_entropy": most,
        "keys": q + 1,
        "top_weight": float(row.max()),
    }


def strongest_head(scope: Scope, args: dict) -> Measured:
    """The head with the largest mean mass of one kind: previous, first or self."""
    field = {"previous": "previous_token", "first": "first_token", "self": "self_token"}
    name = field[args["kind"]]
    best = max(head_stats(scope.view), key=lambda h: getattr(h, name))
    return {
        "value": best.layer,
        "layer": best.layer,
        "head": best.head,
        "mass": getattr(best, name),
        "kind": args["kind"],
    }


def temperature_effect(scope: Scope, args: dict) -> Measured:
    """The top token's probability at temperature 1 and at args.temperature."""
    logits = scope.view.logits
    t = float(args["temperature"])
    at_1 = distributions(logits, SamplingParams(1.0, 0, 1.0)).probs_temperature
    at_t = distributions(logits, SamplingParams(t, 0, 1.0)).probs_temperature
    top = int(torch.argmax(logits))
    p1, pt = float(at_1[top]), float(at_t[top])
    value = "same" if abs(pt - p1) < 1e-6 else ("higher" if pt > p1 else "lower")
    return {
        "value": value,
        "temperature": t,
        "p_at_1": p1,
        "p_at_t": pt,
        "entropy_at_1": distribution_entropy(at_1),
        "entropy_at_t": distribution_entropy(at_t),
    }


def lens_layer(scope: Scope, args: dict) -> Measured:
    """The first block after which the logit lens already has the model's final top token."""
    view, q = scope.view, scope.query
    with torch.no_grad():
        lens = view.logit_lens(q)
    final = int(lens[-1].argmax())
    first = next(layer for layer in range(len(lens)) if int(lens[layer].argmax()) == final)
    return {
        "value": first,
        "layer": first,
        "layers": len(lens),
        "token": Pieces(gpt2_tokenizer())(final).label,
    }


def top_component(scope: Scope, args: dict) -> Measured:
    """Which kind of component pushes the intact model's predicted token most directly (its
    direct logit attribution): a head, an MLP, or another term (embeddings, a bias)."""
    intact = ablated(scope.view, NO_ABLATION)
    target = default_target(intact, scope.query)
    best = _top_push(intact, scope.query, target)
    kind = "head" if best.head is not None else "mlp" if best.name.endswith(".mlp") else "other"
    return {
        "value": kind,
        "name": best.name,
        "push": best.value,
        "token": Pieces(gpt2_tokenizer())(target).label,
    }


def scaling_head(scope: Scope) -> tuple[int, int]:
    """The head whose row at the query the ÷√d_head flattens most (entropy gained, bits):
    where the point of the scale shows best."""
    config, q = scope.view.config, scope.query
    heads = [(layer, head) for layer in range(config.n_layer) for head in range(config.n_head)]

    def gain(at: tuple[int, int]) -> float:
        raw = attention_stages(scope.view, *at, q).row.raw_scores[: q + 1]
        scaled, unscaled = scaled_and_unscaled(raw, config.d_head)
        return entropy_bits(scaled) - entropy_bits(unscaled)

    return max(heads, key=gain)


def top_head(scope: Scope) -> tuple[int, int]:
    """The head that pushes the intact model's predicted token most directly."""
    intact = ablated(scope.view, NO_ABLATION)
    target = default_target(intact, scope.query)
    best = _top_push(intact, scope.query, target, heads_only=True)
    return best.layer, best.head


def _top_push(view: RunView, position: int, target: int, heads_only: bool = False) -> Component:
    dla = attribution(view, position, target)
    parts = [c for c in dla.components if c.head is not None or not heads_only]
    return max(parts, key=lambda c: c.value)


def knock_out_effect(scope: Scope, args: dict) -> Measured:
    """The selected head's direct push on the intact model's predicted token, and that
    token's probability with the head knocked out (whatever the panes knock out now)."""
    s, q = scope.settings, scope.query
    intact = ablated(scope.view, NO_ABLATION)
    target = default_target(intact, q)
    dla = attribution(intact, q, target)
    push = next(c.value for c in dla.components if c.name == f"L{s.layer}H{s.head}")
    off = ablated(intact, Ablation(AblationMode.ZERO, frozenset({(s.layer, s.head)})))
    before = float(torch.softmax(intact.logits.float(), -1)[target])
    after = float(torch.softmax(off.logits.float(), -1)[target])
    moved = float(off.logits[target] - intact.logits[target])
    return {
        "value": "down" if after < before else "up",
        "push": push,
        "before": before,
        "after": after,
        "moved": moved,
        "compensation": _compensation(push, moved),
        "token": Pieces(gpt2_tokenizer())(target).label,
        "head": f"L{s.layer}H{s.head}",
    }


def _compensation(push: float, moved: float) -> str:
    """The knock-out's logit change against the head's direct push, in a sentence."""
    said = f"Its logit moves {moved:+.2f}, where the direct push alone would be {-push:+.2f}"
    if abs(moved) < abs(push):
        return f"{said}: what the model computes after it makes up for part of it."
    return f"{said}: what the model computes after it adds to it."


MEASURES: dict[str, Callable[[Scope, dict], Measured]] = {
    f.__name__: f
    for f in (
        token_count,
        embedding_sum,
        scaling,
        head_size,
        masked_keys,
        z_length,
        first_token_weight,
        row_entropy,
        strongest_head,
        temperature_effect,
        lens_layer,
        top_component,
        knock_out_effect,
    )
}
# What a step's `pick` can select (layer and head), on the model and prompt on screen.
PICKS: dict[str, Callable[[Scope], tuple[int, int]]] = {
    f.__name__: f for f in (scaling_head, top_head)
}
