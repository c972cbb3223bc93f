"""The model map: every head of every layer at once, labelled by what its attention does over
the current text (gpt2scope.engine.analysis.head_stats): the mean entropy of its rows, the mass on
position 0 (the attention sink), on the previous token and on the query itself, and the
pattern those name. The selected head is the cursor; the arrows move it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.style import Style
from rich.text import Text

from gpt2scope.engine.analysis import HeadKind, HeadStats, head_stats
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import Pieces
from gpt2scope.tui.views.common import Drawn, packed
from gpt2scope.tui.views.page import Page, not_ready, page_note
from gpt2scope.tui.views.spec import HEAD_CURSOR, ScreenSpec, view_identity
from gpt2scope.tui.views.style import DIM, HEADING, SELECTED

LEVELS = " ▁▂▃▄▅▆▇█"
WIDE = 16  # "prev   92%  1.2b"
NAMED = 10  # "prev   92%"
LABELLED = 20  # "0▁ 12% p█ 81% s▁  3%"


@dataclass(frozen=True)
class Kind:
    word: str  # in the details and the legend
    code: str  # one cell
    short: str  # up to five
    style: Style


# The one place that words a head kind.
KINDS = {
    HeadKind.PREVIOUS_TOKEN: Kind("previous-token", "P", "prev", Style(color="green")),
    HeadKind.FIRST_TOKEN_SINK: Kind("first-token sink", "S", "sink", Style(color="cyan")),
    HeadKind.SELF: Kind("self", "=", "self", Style(color="magenta")),
    HeadKind.OTHER: Kind("other", "?", "other", Style(color="grey62")),
}


def level(mass: float) -> str:
    return LEVELS[min(round(mass * (len(LEVELS) - 1)), len(LEVELS) - 1)]


def cell_lines(h: HeadStats, width: int, tall: bool) -> tuple[str, str]:
    """A head's cell: the pattern and the mass that named it, and the entropy; in tall rows
    a second line with the masses on position 0, the previous token and the query itself."""
    kind, mass = KINDS[h.kind], h.mass
    entropy_below = tall and WIDE > width >= 8
    pct = "" if mass is None else f"{round(mass * 100)}%"
    entropy = f"{h.entropy:.1f}b"
    if width >= WIDE:
        top = f"{kind.short:<6}{pct:>4} {entropy:>5}"
    elif width >= NAMED:
        top = f"{kind.short:<6}{pct or ('' if entropy_below else entropy):>4}"
    elif width >= 3:
        digits = min(width - 1, 3)
        if mass is not None:
            number = str(min(round(mass * 100), 10**digits - 1))
        else:
            number = "" if entropy_below else f"{h.entropy:.{1 if digits == 3 else 0}f}"
        top = f"{kind.code}{number[:digits]:>{digits}}"
    else:
        top = kind.code
    # "=" for self as in the kinds' codes: a lowercase s would read as the sink's S
    masses = (("0", h.first_token), ("p", h.previous_token), ("=", h.self_token))
    if width >= LABELLED:
        bottom = " ".join(f"{name}{level(m)}{round(m * 100):>3}%" for name, m in masses)
    else:
        bars = "".join(level(m) for _, m in masses)
        bottom = f"{bars} {entropy}" if entropy_below else bars
    return top, bottom


def selected_of(page: Page, stats: tuple[HeadStats, ...]) -> HeadStats:
    s = page.scope.settings
    return next(h for h in stats if (h.layer, h.head) == (s.layer, s.head))


def details(h: HeadStats, width: int) -> list[Text]:
    parts = [
        Text(f"L{h.layer} H{h.head} {KINDS[h.kind].word}", HEADING + KINDS[h.kind].style),
        Text(f"entropy {h.entropy:.2f} bits"),
        Text(f"position 0 {h.first_token:.0%}"),
        Text(f"previous {h.previous_token:.0%}"),
        Text(f"self {h.self_token:.0%}"),
    ]
    return packed(parts, width, " · ")


@dataclass(frozen=True)
class Grid:
    label_width: int  # "L11 "
    cell: int  # per head, with its space
    tall: bool  # two lines per layer

    @classmethod
    def fit(cls, n_layer: int, n_head: int, width: int, room: int) -> Grid:
        label_width = len(f"L{n_layer - 1}") + 1
        cell = max(1, (width - label_width) // n_head)
        return cls(label_width, cell, cell >= 4 and room >= 1 + 2 * n_layer)


def legend(stats: tuple[HeadStats, ...], grid: Grid, width: int) -> list[Text]:
    parts = []
    for head_kind, kind in KINDS.items():
        count = sum(h.kind == head_kind for h in stats)
        parts.append(Text.assemble((kind.code, kind.style + HEADING), f" {kind.word} {count}"))
    parts.append(Text("%: the mass that named it · b: entropy in bits", DIM))
    if grid.tall:
        parts.append(Text("0 p =: mass on position 0, the previous token, itself", DIM))
    return packed(parts, width, " · ")


def grid_lines(page: Page, stats: tuple[HeadStats, ...], grid: Grid) -> list[Text]:
    """The column header, then a row (or two) per layer; the cursor cell reversed."""
    s = page.scope.settings
    n_layer, n_head = stats[-1].layer + 1, stats[-1].head + 1
    cell, inner = grid.cell, max(grid.cell - 1, 1)
    header = Text(" " * grid.label_width)
    for head in range(n_head):
        header.append(f"H{head}"[:inner].ljust(cell), HEADING if head == s.head else DIM)
    lines = [header]
    for layer in range(n_layer):
        top = Text(f"L{layer}".ljust(grid.label_width), HEADING if layer == s.layer else DIM)
        bottom = Text(" " * grid.label_width)
        for h in stats[layer * n_head : (layer + 1) * n_head]:
            style = KINDS[h.kind].style
            if (h.layer, h.head) == (s.layer, s.head):
                style = style + SELECTED
            first, second = cell_lines(h, inner, grid.tall)
            top.append(first[:inner].ljust(inner), style)
            bottom.append(second[:inner].ljust(inner), style)
            if cell > 1:
                top.append(" ")
                bottom.append(" ")
        lines += [top, bottom] if grid.tall else [top]
    return lines


def render_model_map(page: Page[tuple[HeadStats, ...]], width: int, height: int) -> Drawn:
    empty = not_ready(page, width)
    if empty is not None:
        return empty
    stats, s = page.figure, page.scope.settings
    n_layer, n_head = stats[-1].layer + 1, stats[-1].head + 1
    title = Text(f"model map · {n_layer} layers × {n_head} heads", HEADING)
    title.append(f" · over {page.source.n_tokens} tokens", DIM)
    title.append_text(page_note(page))
    head = [title, *details(selected_of(page, stats), width)]
    grid = Grid.fit(n_layer, n_head, width, height - len(head) - 3)
    head += legend(stats, grid, width)
    lines = grid_lines(page, stats, grid)
    drawn = Drawn(
        [*head, *lines],
        focus=len(head) + 1 + s.layer * (2 if grid.tall else 1),
        pinned=len(head) + 1,
    )
    for line in drawn.lines:
        line.truncate(width)
    return drawn


def compute_map(scope: Scope, pieces: Pieces) -> tuple[HeadStats, ...]:
    return tuple(head_stats(scope.view))


def head_stats_json(
    stats: tuple[HeadStats, ...], scope: Scope, pieces: Pieces
) -> list[dict[str, Any]]:
    return [
        {
            "layer": h.layer,
            "head": h.head,
            "entropy_bits": h.entropy,
            "first_token": h.first_token,
            "previous_token": h.previous_token,
            "self_token": h.self_token,
            "kind": h.kind,
        }
        for h in stats
    ]


SPEC = ScreenSpec(
    id="head_stats",
    title="Model map",
    key="m",
    label="map",
    summary="model map: every head's statistics; pick one",
    render=render_model_map,
    about="every layer × head over the current text, named prev (P), sink (S), self (=) by the "
    "pattern with ≥50% of its weight, with that mass (%), or other (?), and the entropy "
    "(bits: low is focused, high is broad); tall cells add bars for the mass on position "
    "0, the previous token and the query itself",
    depends=lambda s: (view_identity(s),),
    compute=compute_map,
    json=head_stats_json,
    keys=HEAD_CURSOR,
    while_generating=False,
)
