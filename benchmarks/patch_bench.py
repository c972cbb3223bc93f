"""Activation patching: the exact sweeps and the estimate against TransformerLens's notebook
loop of hooked forwards (benchmarks/lens.py), on the same weights and prompts. Without
transformer_lens installed only our side is timed."""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks import lens
from benchmarks.engine_bench import random_ids
from benchmarks.why_bench import against_lens
from gpt2scope.engine import Model
from gpt2scope.engine.patching import Pair, default_tokens, estimate, sweep


def prompts(model: Model, tokens: int) -> tuple[list[int], list[int]]:
    """Random clean tokens, and the corrupted prompt: one token changed a quarter of the way
    in, so that three quarters of the positions are ones a patch can reach."""
    clean = random_ids(tokens, model.config.vocab_size, seed=26)
    corrupt = list(clean)
    corrupt[tokens // 4] = (clean[tokens // 4] + 1) % model.config.vocab_size
    return clean, corrupt


def first_row_seconds(pair: Pair, repeats: int) -> list[float]:
    """From starting the resid_pre sweep to its first row (the screen draws it then)."""
    seconds = []
    for _ in range(repeats):
        rows: list[float] = []
        start = time.perf_counter()
        sweep(
            pair,
            "resid_pre",
            lambda layer, row, start=start, rows=rows: rows.append(time.perf_counter() - start),
            lambda rows=rows: bool(rows),
        )
        seconds.append(rows[0])
    return seconds


def measure(model: Model, bridge: Any | None, tokens: int, pairs: int, device: str) -> dict:
    clean, corrupt = prompts(model, tokens)
    pair = Pair(model.start(clean).view(), model.start(corrupt).view(), 0, 1)
    answer, contrast = default_tokens(pair.clean, pair.corrupt)
    pair = Pair(pair.clean, pair.corrupt, answer, contrast)

    def theirs(fn):
        return None if bridge is None else lambda i: fn()

    resid = against_lens(
        lambda i: sweep(pair, "resid_pre"),
        theirs(
            lambda: lens.patch_sweep(bridge, clean, corrupt, "hook_resid_pre", answer, contrast)
        ),
        pairs,
        device,
        warm_up=None if bridge is None else lambda: lens.knocked_out(bridge, corrupt, 0, 0),
    )
    heads = against_lens(
        lambda i: sweep(pair, "z"),
        theirs(lambda: lens.head_patch_sweep(bridge, clean, corrupt, answer, contrast)),
        pairs,
        device,
        warm_up=None if bridge is None else lambda: lens.knocked_out(bridge, corrupt, 0, 0),
    )
    guess = against_lens(
        lambda i: estimate(pair),
        theirs(lambda: lens.forward_backward(bridge, corrupt, answer, contrast)),
        max(pairs, 5),
        device,
    )
    first = first_row_seconds(pair, 5)
    L, H = model.config.n_layer, model.config.n_head
    return {
        "peer": None if bridge is None else f"TransformerLens {lens.version()}",
        "tokens": tokens,
        "differs_at": tokens // 4,
        "resid_pre": {"cells": L * tokens, **resid, "pairs": pairs},
        "heads": {"cells": L * H, **heads, "pairs": pairs},
        "estimate": {"maps": 4, **guess},
        "first_row_s": statistics.median(first),
        "first_rows_s": first,
    }
