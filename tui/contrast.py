"""Colours made readable on the theme's background.

The views pick colours for meaning (the weight ramp, kept and cut, the probability bands),
not for a background they cannot know. Here each colour is checked against the background
the pane is drawn on, from the theme, and blended towards white or black (whichever stands
out from it) until it is readable: the dark end of the weight ramp on a dark theme, yellow
or light grey on a light one. Luminance is what stays of a colour with NO_COLOR (Textual
draws it in greys), so the same check keeps those readable too.
"""

from __future__ import annotations

from functools import lru_cache

from rich.color import Color
from rich.color_triplet import ColorTriplet
from rich.style import Style
from rich.terminal_theme import TerminalTheme

from gpt2scope.tui.views.style import DENSITY, MASKED, PARTIAL_BLOCKS

TEXT_CONTRAST = 4.5  # WCAG's for normal text
CELL_CONTRAST = 3.0  # WCAG's for graphics: a map's cells keep more of their colour
CELL_GLYPHS = frozenset(DENSITY + MASKED + PARTIAL_BLOCKS + "┊")


def luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG 2 relative luminance."""

    def channel(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = map(channel, rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    la, lb = luminance(a), luminance(b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def lifted(
    colour: tuple[int, int, int], background: tuple[int, int, int], towards: tuple, wanted: float
) -> tuple[int, int, int]:
    """`colour` blended towards `towards` (white or black) in tenths until it has
    `wanted` contrast with `background`: the least change that makes it readable."""
    if contrast(colour, background) >= wanted:
        return colour
    for tenth in range(1, 11):
        t = tenth / 10
        moved = tuple(round(c + (e - c) * t) for c, e in zip(colour, towards, strict=True))
        if contrast(moved, background) >= wanted:
            return moved
    return tuple(towards)


@lru_cache(maxsize=4096)
def readable(style: Style, theme: TerminalTheme, cell: bool) -> Style:
    """`style` with its foreground readable on its background (both set, as a pane's base
    style sets them); `cell` for a map's glyphs, which need less contrast than text."""
    if style.reverse or style.color is None or style.bgcolor is None:
        return style
    colour = style.color.get_truecolor(theme)
    background = style.bgcolor.get_truecolor(theme, foreground=False)
    text = white_or_black(background)
    wanted = CELL_CONTRAST if cell else TEXT_CONTRAST
    if style.dim:  # the terminal halves a dim colour towards the background: ask for more
        wanted *= 1.5
    moved = lifted(tuple(colour), tuple(background), text, wanted)
    if moved == tuple(colour):
        return style
    return style + Style(color=Color.from_triplet(ColorTriplet(*moved)))


def white_or_black(background: tuple[int, int, int]) -> tuple[int, int, int]:
    white, black = (255, 255, 255), (0, 0, 0)
    return white if contrast(white, background) >= contrast(black, background) else black


def is_cells(text: str) -> bool:
    return bool(text) and all(c in CELL_GLYPHS for c in text)
