"""Activation patching: the exact sweeps and the estimate against TransformerLens's notebook
loop of hooked forwards (benchmarks/lens.py), on the same weights and prompts. Without
transformer_lens installed only our side is timed."""

from __future__ import annotations

import asyncio
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


def measure(
    model: Model, bridge: Any | None, tokens: int, pairs: int, device: str, presses: int
) -> dict:
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
    repaint = asyncio.run(screen_repaint_ms(model, presses))
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
        "key_repaint_during_sweep": repaint,
    }


async def screen_repaint_ms(model: Model, presses: int) -> dict:
    """The patching screen on the indirect-object example: ↓ and ↑ (the cell cursor's layer)
    pressed while the exact sweep runs (started again, as r does, when it is done), each
    timed until the screen shows the new layer."""
    from benchmarks.ui_bench import HEIGHT, WIDTH, until
    from gpt2scope.tui.patching_screen import PatchingScreen
    from gpt2scope.tui.views.patching import EXAMPLES, Patching
    from tests.driver import make_app, settle

    app = make_app(model, "bench", "path", prompt=EXAMPLES[1].clean, length=0)  # indirect object
    painted: list[tuple[float, int]] = []
    latencies: list[float] = []
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        await settle(pilot, 300.0)
        display = app._display  # as ui_bench.spy_on_repaints: no public hook at that moment

        def recording(screen, renderable) -> None:
            display(screen, renderable)
            state = getattr(app.screen, "state", None)
            if isinstance(state, Patching):
                painted.append((time.perf_counter(), state.layer))

        app._display = recording
        await pilot.press("P")
        await until(pilot, lambda: isinstance(getattr(app.screen, "state", None), Patching))
        screen: PatchingScreen = app.screen
        for i in range(presses):
            if not screen.computing:  # the sweep is done: start it again, as r does
                screen.action_rerun()
            key, layer = ("down", 1) if i % 2 == 0 else ("up", 0)
            start = time.perf_counter()
            await pilot.press(key)
            await until(
                pilot, lambda s=start, la=layer: any(t > s and shown == la for t, shown in painted)
            )
            latencies.append(
                next(t for t, shown in painted if t > start and shown == layer) - start
            )
            await pilot.pause(0.1)
    if not latencies:
        return {"presses": 0, "median_ms": None, "max_ms": None}
    return {
        "presses": len(latencies),
        "median_ms": statistics.median(latencies) * 1e3,
        "max_ms": max(latencies) * 1e3,
    }
