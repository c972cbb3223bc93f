"""What a lesson step reveals, measured on the loaded model at the moment of the reveal: each
function reads the scope on screen (and the step's `args`) and returns named numbers for the
reveal's text, `value` among them (what the learner's answer is held against)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from gpt2scope.engine import AblationMode, SamplingParams, attribution, gpt2_tokenizer
from gpt2scope.engine.ablation import NO_ABLATION, Ablation
from gpt2scope.engine.analysis import attention_stages, head_stats
from gpt2scope.engine.attribution import ablated, default_target
from gpt2scope.engine.sampling import distributions, entropy_bits
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import Pieces

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
    raw = stages.row.raw_scores[: scope.query + 1]
    d = len(stages.q)
    scaled = _softmax(raw / math.sqrt(d))
    unscaled = _softmax(raw)
    h_scaled, h_unscaled = _entropy(scaled), _entropy(unscaled)
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
    }


def first_token_weight(scope: Scope, args: dict) -> Measured:
    """The selected head's weight of query 0 on key 0, and the row's entropy."""
    row = scope.attn.pattern_row(0)[:1]
    return {"value": float(row[0]), "weight": float(row[0]), "entropy": _entropy(row)}


def row_entropy(scope: Scope, args: dict) -> Measured:
    """The query's row entropy against the most it could be, log2(number of keys)."""
    q = scope.query
    row = scope.attn.pattern_row(q)[: q + 1]
    h, most = _entropy(row), math.log2(q + 1)
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
        "entropy_at_1": entropy_bits(at_1),
        "entropy_at_t": entropy_bits(at_t),
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
    return {
        "value": "down" if after < before else "up",
        "push": push,
        "before": before,
        "after": after,
        "token": Pieces(gpt2_tokenizer())(target).label,
        "head": f"L{s.layer}H{s.head}",
    }


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0


MEASURES: dict[str, Callable[[Scope, dict], Measured]] = {
    f.__name__: f
    for f in (
        token_count,
        embedding_sum,
        scaling,
        first_token_weight,
        row_entropy,
        strongest_head,
        temperature_effect,
        lens_layer,
        knock_out_effect,
    )
}
