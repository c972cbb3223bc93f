"""Wall-clock timing that waits for the device, and A/B alternation so that both sides see
the same machine state (other processes, clock speed, cache) within each pair."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str) -> float:
    """Seconds one call takes, including the device work it queued."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


@dataclass(frozen=True)
class Comparison:
    """Paired timings of our engine (a) and a peer (b; transformers unless said), in seconds."""

    a: list[float]
    b: list[float]

    @property
    def a_ms(self) -> float:
        return statistics.median(self.a) * 1e3

    @property
    def b_ms(self) -> float:
        return statistics.median(self.b) * 1e3

    @property
    def ratio(self) -> float:
        """The median of the per-pair ratios a / b: robust to drifts in machine load."""
        return statistics.median(x / y for x, y in zip(self.a, self.b, strict=True))

    def as_json(self, peer: str = "transformers") -> dict:
        """The medians, the ratio and the count; b's median is keyed `{peer}_ms`."""
        return {
            "ours_ms": self.a_ms,
            f"{peer}_ms": self.b_ms,
            "ratio": self.ratio,
            "pairs": len(self.a),
        }


def alternate(
    a: Callable[[int], object], b: Callable[[int], object], pairs: int, device: str
) -> Comparison:
    """Time a(i) and b(i) for i in range(pairs), in the order ab, ba, ab, ... so that neither
    side always runs first."""
    times_a, times_b = [], []
    for i in range(pairs):
        order = [(a, times_a), (b, times_b)]
        for fn, times in order if i % 2 == 0 else reversed(order):
            times.append(timed(lambda fn=fn, i=i: fn(i), device))
    return Comparison(times_a, times_b)
