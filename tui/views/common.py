"""What every view returns, and small pieces of text they share."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import overload

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text

from gpt2scope.tui.text import Piece, clip, fit
from gpt2scope.tui.views.style import BYTES, NOTE

NO_RUN = (
    "no run yet: type a prompt (p) and press enter",
    "no run yet: p, then a prompt",
    "no run yet",
)


class Lines(Sequence[Text]):
    """Lines drawn only when read, `draw(i)` making line i: a view with a line per key of a
    1024-token run then pays for the twenty a pane shows, not for all of them."""

    def __init__(self, draw: Callable[[int], Text], indices: range) -> None:
        self.draw = draw
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    @overload
    def __getitem__(self, i: int) -> Text: ...
    @overload
    def __getitem__(self, i: slice) -> Lines: ...
    def __getitem__(self, i: int | slice) -> Text | Lines:
        if isinstance(i, slice):
            return Lines(self.draw, self.indices[i])
        return self.draw(self.indices[i])


@dataclass
class Drawn:
    """A view's lines, each at most the width it was drawn for. When they outgrow the pane,
    the first `pinned` lines (a heading) and the last `footer` lines stay and the rest
    scroll, keeping line `focus` (the selected token's, say) in sight."""

    lines: list[Text] | Lines = field(default_factory=list)
    focus: int = 0
    pinned: int = 0
    footer: int = 0

    def add(self, line: Text | str = "") -> None:
        self.lines.append(line if isinstance(line, Text) else Text(line))


def count(n: int, noun: str) -> str:
    """'1 key', '2 keys'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def no_run(width: int) -> Drawn:
    return Drawn([Text(longest_fitting(NO_RUN, width), NOTE)])


def piece_text(
    piece: Piece, width: int | None = None, pad: bool = False, style: Style | None = None
) -> Text:
    """A token's label, clipped (and padded) to `width`; raw bytes shown in their own style."""
    label = piece.label
    if width is not None:
        label = fit(label, width) if pad else clip(label, width)
    text = Text(label, style=BYTES if piece.is_bytes else "")
    if style is not None:
        text.stylize(style)
    return text


def append_if_fits(text: Text, part: Text | str, width: int) -> bool:
    """Add `part` to a one-line `text` only if the line stays within `width`; say if it did."""
    part = part if isinstance(part, Text) else Text(part)
    fits = text.cell_len + part.cell_len <= width
    if fits:
        text.append_text(part)
    return fits


def joined(parts: Iterable[Text | str], separator: str = " · ") -> Text:
    return Text(separator).join(p if isinstance(p, Text) else Text(p) for p in parts)


def packed(
    parts: list[Text], width: int, separator: str = " │ ", room: Sequence[int] | None = None
) -> list[Text]:
    """Parts laid out left to right, wrapping to a new line instead of splitting a part.
    `room` is the width to lay each part out as, when it is wider than the part: the widest
    the part can grow to, so that a part that changes with every token keeps the breaks put."""
    lines: list[Text] = []
    line = Text()
    used = 0
    for part, size in zip(parts, room or [p.cell_len for p in parts], strict=True):
        size = max(size, part.cell_len)
        extra = len(separator) if line.plain else 0
        if line.plain and used + extra + size > width:
            lines.append(line)
            line = Text()
            used = extra = 0
        if extra:
            line.append(separator, style="grey50")
        line.append_text(part)
        used += extra + size
    if line.plain or not lines:
        lines.append(line)
    for text in lines:
        text.truncate(width)
    return lines


def longest_fitting(versions: Sequence[str], width: int) -> str:
    """The first of `versions` (longest first) that fits `width`: an explanation shortened
    by whole phrases, not cut mid-word; the last one clipped if none fits."""
    return next((v for v in versions if cell_len(v) <= width), clip(versions[-1], width))
