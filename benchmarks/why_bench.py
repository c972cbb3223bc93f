"""Why this token: DLA, one knock-out, every head's effect and saliency, against what a
researcher would otherwise run, TransformerLens's documented paths (benchmarks/lens.py), on
the same weights and tokens. Without transformer_lens installed only our side is timed."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks import lens
from benchmarks.engine_bench import random_ids
from benchmarks.timing import alternate, timed
from gpt2scope.engine import Ablation, AblationMode, Model, ablated, attribution, head_effects
from gpt2scope.engine import saliency as gradient_x_input


def against_lens(
    ours: Callable[[int], object],
    theirs: Callable[[int], object] | None,
    pairs: int,
    device: str,
    warm_up: Callable[[], object] | None = None,
) -> dict:
    """Ours and TransformerLens's timed in alternating pairs after one untimed call of each
    (the first call of either pays for allocations and, on the bridge, its hook set-up).
    With no TransformerLens (theirs None), ours alone: its figures are None."""
    if theirs is None:
        ours(0)
        times = [timed(lambda i=i: ours(i), device) for i in range(pairs)]
        return {"ours_ms": statistics.median(times) * 1e3, "lens_ms": None, "ratio": None}
    ours(0)
    (warm_up or (lambda: theirs(0)))()
    return alternate(ours, theirs, pairs, device).as_json("lens")


def first_row_seconds(view: Any, position: int, target: int, repeats: int) -> list[float]:
    """Seconds from calling head_effects until its first on_row callback (the app draws
    each row as it arrives), cancelled right after that row; one figure per repeat."""
    seconds = []
    for _ in range(repeats):
        rows: list[float] = []
        start = time.perf_counter()

        def on_row(layer: int, row: list[float], start: float = start, rows=rows) -> None:
            rows.append(time.perf_counter() - start)

        head_effects(
            view, position, target, None, AblationMode.ZERO, on_row, lambda r=rows: bool(r)
        )
        seconds.append(rows[0])
    return seconds


def measure(
    model: Model,
    bridge: Any | None,
    dla_tokens: int,
    effect_tokens: int,
    pairs: int,
    effect_pairs: int = 1,
    device: str = "cpu",
) -> dict:
    """`bridge` is lens.boot's TransformerBridge over the same checkpoint, or None. Each
    figure is timed in `pairs` alternating pairs, every head's effect in `effect_pairs`."""
    L, H = model.config.n_layer, model.config.n_head
    layer = L // 2
    ids = random_ids(dla_tokens, model.config.vocab_size, seed=24)
    view = model.start(ids).view()
    target = int(view.logits.argmax())
    last = dla_tokens - 1
    version = None if bridge is None else lens.version()

    def theirs(fn: Callable[[], object]) -> Callable[[int], object] | None:
        return None if bridge is None else lambda i: fn()

    dla = against_lens(
        lambda i: attribution(view, last, target),
        theirs(lambda: lens.dla(bridge, ids, target)),
        pairs,
        device,
    )

    one = Ablation(AblationMode.ZERO, frozenset({(layer, 0)}))
    with torch.no_grad():
        ablated(view, one)
        model.start(ids)
        knock = alternate(lambda i: ablated(view, one), lambda i: model.start(ids), pairs, device)
        knock_vs_lens = against_lens(
            lambda i: ablated(view, one),
            theirs(lambda: lens.knocked_out(bridge, ids, layer, 0)),
            pairs,
            device,
        )

    short = random_ids(effect_tokens, model.config.vocab_size, seed=25)
    short_view = model.start(short).view()
    first_row = first_row_seconds(short_view, effect_tokens - 1, target, pairs)
    effects = against_lens(
        lambda i: head_effects(short_view, effect_tokens - 1, target, None, AblationMode.ZERO),
        theirs(lambda: lens.every_head_knocked_out(bridge, short, L, H)),
        effect_pairs,
        device,
        # One hooked forward warms TransformerLens's loop up (all 144 take tens of seconds).
        warm_up=lambda: lens.knocked_out(bridge, short, 0, 0),
    )

    sal = against_lens(
        lambda i: gradient_x_input(view, last, target),
        theirs(lambda: lens.saliency(bridge, ids, target)),
        pairs,
        device,
    )
    return {
        "peer": None if version is None else f"TransformerLens {version}",
        "dla": {"tokens": dla_tokens, **dla, "pairs": pairs},
        "knock_out_vs_prefill": {"tokens": dla_tokens, "layer": layer, **knock.as_json("prefill")},
        "knock_out_vs_lens": {
            "tokens": dla_tokens,
            "layer": layer,
            **knock_vs_lens,
            "pairs": pairs,
        },
        "head_effects": {
            "tokens": effect_tokens,
            "heads": L * H,
            **effects,
            "pairs": effect_pairs,
            "first_row_s": statistics.median(first_row),
            "first_rows_s": first_row,
        },
        "saliency": {"tokens": dla_tokens, **sal, "pairs": pairs},
    }
