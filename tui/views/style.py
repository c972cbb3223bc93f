"""Glyphs and colours shared by the views.

Every number drawn as a cell is drawn twice: as a glyph from a density ramp (readable in
16 colours, with NO_COLOR, or printed as plain text) and as a colour on top of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import cache

import numpy as np
from rich.color import Color
from rich.style import Style
from rich.text import Span, Text

DENSITY = "·░▒▓█"  # light to heavy
MASKED = "╱"  # above the diagonal: the query may not see that key
PARTIAL_BLOCKS = " ▏▎▍▌▋▊▉"
LEVELS = 32
MAX_BAR = 40  # cells: longer bars only push the numbers away from their labels

# Weights 0 -> 1: dark violet through teal to yellow (viridis' end points).
SEQUENTIAL = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
NEGATIVE = (80, 140, 235)
POSITIVE = (235, 120, 70)
NEUTRAL = (90, 90, 90)

DIM = Style(dim=True)
BOLD = Style(bold=True)
SELECTED = Style(reverse=True, bold=True)
MASK_STYLE = Style(color="grey37")
HEADING = Style(bold=True)
NOTE = Style(italic=True, color="grey62")
CAPTION = Style(italic=True, bold=True)  # what a pane shows, on top of it (key i)
BYTES = Style(italic=True, color="magenta")
KEPT = Style(color="green")
CUT = Style(color="grey50")
CHOSEN = Style(bold=True, color="yellow")
WARNING = Style(bold=True, italic=True)  # a caveat on the numbers shown; no colour: every theme


def blend(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))


@cache
def sequential_style(level: int) -> Style:
    t = level / (LEVELS - 1) * (len(SEQUENTIAL) - 1)
    i = min(int(t), len(SEQUENTIAL) - 2)
    return Style(color=Color.from_rgb(*blend(SEQUENTIAL[i], SEQUENTIAL[i + 1], t - i)))


@cache
def diverging_style(level: int, negative: bool) -> Style:
    end = NEGATIVE if negative else POSITIVE
    return Style(color=Color.from_rgb(*blend(NEUTRAL, end, level / (LEVELS - 1))))


def weight_level(weight: float) -> int:
    """0..4 on a square-root scale, so a weight of 4% is already visible."""
    return min(int(math.sqrt(max(weight, 0.0)) * len(DENSITY)), len(DENSITY) - 1)


def weight_cell(weight: float, width: int = 1) -> tuple[str, Style]:
    level = round(min(max(weight, 0.0), 1.0) * (LEVELS - 1))
    return DENSITY[weight_level(weight)] * width, sequential_style(level)


def signed_cell(value: float, scale: float) -> tuple[str, Style]:
    """A glyph for |value| / scale and a colour for its sign (orange +, blue -)."""
    t = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    glyph = DENSITY[min(int(t * len(DENSITY)), len(DENSITY) - 1)]
    return glyph, diverging_style(round(t * (LEVELS - 1)), value < 0)


def signed_strip(values: np.ndarray | list[float], scale: float) -> Text:
    """signed_cell for every value, vectorised: an embedding row is 768 cells."""
    values = np.asarray(values, dtype=np.float64)
    t = np.minimum(np.abs(values) / scale, 1.0) if scale > 0 else np.zeros_like(values)
    glyphs = np.minimum((t * len(DENSITY)).astype(int), len(DENSITY) - 1).tolist()
    levels = np.rint(t * (LEVELS - 1)).astype(int).tolist()
    negative = (values < 0).tolist()
    return cells(
        (DENSITY[g], diverging_style(level, n))
        for g, level, n in zip(glyphs, levels, negative, strict=True)
    )


def bar(fraction: float, width: int) -> str:
    """A horizontal bar `fraction` of `width` cells long, in eighths of a cell."""
    eighths = round(min(max(fraction, 0.0), 1.0) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (PARTIAL_BLOCKS[part] if part else "")).ljust(width)


def percent(p: float) -> str:
    """Always 5 cells: '43.1%', ' 0.4%', '100%'."""
    if p >= 0.9995:
        return " 100%"
    return f"{p * 100:4.1f}%"


def signed(x: float, width: int = 6) -> str:
    """x with a sign in `width` cells: two decimals, fewer where it is large, so that columns
    of numbers stay aligned."""
    for decimals in (2, 1, 0):
        text = f"{x:+.{decimals}f}"
        if len(text) <= width:
            break
    return text.rjust(width)


def signed_numbers(values: Iterable[float], width: int = 6) -> str:
    """`signed` numbers in columns of `width` cells, a space always before each."""
    return "".join(" " + signed(float(x), width - 1) for x in values)


def weight_legend() -> Text:
    """The attention colour scale: glyph and colour per band, then the masked glyph."""
    text = Text("0 ")
    for i, glyph in enumerate(DENSITY):
        text.append(glyph, sequential_style(round((i + 0.5) / len(DENSITY) * (LEVELS - 1))))
    text.append(" 1  ")
    text.append(MASKED, MASK_STYLE)
    text.append(" masked")
    return text


def signed_legend() -> Text:
    text = Text("−")
    for glyph in reversed(DENSITY):
        text.append(glyph, diverging_style(LEVELS - 1, True))
    text.append("0")
    for glyph in DENSITY:
        text.append(glyph, diverging_style(LEVELS - 1, False))
    text.append("+")
    return text


def pooled(values: np.ndarray, n_cells: int) -> np.ndarray:
    """`values` squeezed into `n_cells`, each cell the value of largest |x| in its group, so
    a single large dimension still shows."""
    if n_cells >= len(values):
        return values
    groups = np.array_split(values, n_cells)
    return np.array([g[np.argmax(np.abs(g))] for g in groups])


def cells(runs: Iterable[tuple[str, Style]]) -> Text:
    """Glyphs with styles as one Text, neighbours of equal style sharing a span: built from
    spans directly, as appending cell by cell is the slow part of drawing a map."""
    plain: list[str] = []
    spans: list[Span] = []
    start = end = 0
    last: Style | None = None
    for glyph, style in runs:
        if style is not last and end > start:
            spans.append(Span(start, end, last))
            start = end
        last = style
        plain.append(glyph)
        end += len(glyph)
    if end > start:
        spans.append(Span(start, end, last))
    return Text("".join(plain), spans=spans)
