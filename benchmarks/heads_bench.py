"""Issue 27's two timings: every head's statistics over a full context of GPT-2 small's
shapes, and the induction probe (N = 32, its knock-out rerun included)."""

from __future__ import annotations

import time

from benchmarks import plan as targets
from benchmarks.engine_bench import random_ids
from gpt2scope.engine import Model
from gpt2scope.engine.analysis import head_stats
from gpt2scope.engine.probe import DEFAULT_N, induction_probe


def best_ms(fn, repeats: int) -> float:
    """The fastest of `repeats` runs after one warm-up: the machine is shared."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def measure(model: Model, tokens: int, repeats: int) -> dict:
    view = model.start(random_ids(tokens, model.config.vocab_size, seed=27)).view()
    c = model.config
    heads = c.n_layer * c.n_head
    return {
        "head_stats": {
            "tokens": tokens,
            "heads": heads,
            "ms": best_ms(lambda: head_stats(view), repeats),
        },
        "head_stats_value_weighted": {
            "tokens": tokens,
            "ms": best_ms(lambda: head_stats(view, weighted=True), repeats),
        },
        "induction_probe": {
            "n": DEFAULT_N,
            "ms": best_ms(
                lambda: induction_probe(c, model.params, view.ablation, DEFAULT_N), repeats
            ),
        },
    }


def rows(h: dict) -> list:
    """The table's rows (benchmarks.report.Row), each against issue 27's target."""
    from benchmarks.report import Row

    stats, weighted, probe = h["head_stats"], h["head_stats_value_weighted"], h["induction_probe"]
    limit = targets.HEADS_MS
    return [
        Row(
            f"head_stats, {stats['heads']} heads over {stats['tokens']} tokens",
            f"{stats['ms']:.0f} ms",
            target=f"<= {limit:.0f} ms",
            met=stats["ms"] <= limit,
        ),
        Row(f"head_stats value-weighted, {weighted['tokens']} tokens", f"{weighted['ms']:.0f} ms"),
        Row(
            f"induction probe, N = {probe['n']}, with its knock-out rerun",
            f"{probe['ms']:.0f} ms",
            target=f"<= {targets.PROBE_MS:.0f} ms",
            met=probe["ms"] <= targets.PROBE_MS,
        ),
    ]
