"""The model map: every head of every layer at once, named by what its attention does over
the current text (gpt2scope.engine.analysis.head_stats), or over the induction probe
(gpt2scope.engine.probe): the mean entropy of its rows, the mass on position 0 (the
attention sink), on the previous token and on the query itself, and the kind those and
the sink-free scores name. A summary per layer, a count per kind. The selected head is the
cursor; the arrows move it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.style import Style
from rich.text import Text

from gpt2scope.engine.analysis import HeadKind, HeadStats, head_stats
from gpt2scope.engine.probe import DEFAULT_N, InductionProbe, induction_probe
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import Pieces
from gpt2scope.tui.views.common import Drawn, count, packed
from gpt2scope.tui.views.page import Page, not_ready, page_note
from gpt2scope.tui.views.spec import HEAD_CURSOR, Key, ScreenSpec, view_identity
from gpt2scope.tui.views.style import DIM, HEADING, NOTE, SELECTED

LEVELS = " ▁▂▃▄▅▆▇█"
WIDE = 16  # "prev   92%  1.2b"
NAMED = 10  # "prev   92%"
LABELLED = 20  # "0▁ 12% p█ 81% s▁  3%"
NUMBERED = 14  # "0 12 p 81 s  3"
MIN_CELL = 4  # "I85" and a gap: below this the per-layer summary gives way to the cells
MIN_ROWS = 8  # layer rows a short terminal keeps in sight before the legend
SINK_COUNTED = 0.3  # the summary counts the heads with at least this on position 0
SUMMARY_HEADER = "│  ≥30% on 0     b"
SUMMARY = len(SUMMARY_HEADER)


@dataclass(frozen=True)
class Kind:
    word: str  # in the details and the footer
    code: str  # one cell
    short: str  # up to five
    style: Style


# The one place that words a head kind.
KINDS = {
    HeadKind.PREVIOUS_TOKEN: Kind("previous-token", "P", "prev", Style(color="green")),
    HeadKind.FIRST_TOKEN_SINK: Kind("first-token sink", "S", "sink", Style(color="cyan")),
    HeadKind.SELF: Kind("self", "=", "self", Style(color="magenta")),
    HeadKind.INDUCTION: Kind("induction", "I", "ind", Style(color="yellow", bold=True)),
    HeadKind.DUPLICATE_TOKEN: Kind("duplicate-token", "D", "dup", Style(color="red")),
    HeadKind.BROAD: Kind("broad", "B", "broad", Style(color="blue")),
    HeadKind.OTHER: Kind("other", "?", "other", Style(color="grey62")),
}


@dataclass(frozen=True, eq=False)
class MapFigure:
    stats: tuple[HeadStats, ...]  # by layer, then head
    n_tokens: int  # of the run they are over
    weighted: bool  # over value-weighted norms, not attention weights
    probe: InductionProbe | None = None  # over the probe's run, not the text

    @property
    def shape(self) -> tuple[int, int]:
        return self.stats[-1].layer + 1, self.stats[-1].head + 1

    def layer(self, layer: int) -> tuple[HeadStats, ...]:
        n_head = self.shape[1]
        return self.stats[layer * n_head : (layer + 1) * n_head]


def level(mass: float) -> str:
    return LEVELS[min(round(mass * (len(LEVELS) - 1)), len(LEVELS) - 1)]


def pct(mass: float) -> str:
    return f"{round(mass * 100)}%"


def cell_lines(h: HeadStats, width: int, tall: bool) -> tuple[str, str]:
    """A head's cell: its kind and the score that named it, and the entropy; in tall rows
    a second line with the masses on position 0, the previous token and the query itself."""
    kind, mass = KINDS[h.kind], h.mass
    entropy_below = tall and WIDE > width >= 8
    named = "" if mass is None else pct(mass)
    entropy = f"{h.entropy:.1f}b"
    if width >= WIDE:
        top = f"{kind.short:<6}{named:>4} {entropy:>5}"
    elif width >= NAMED:
        top = f"{kind.short:<6}{named or ('' if entropy_below else entropy):>4}"
    elif width >= 3:
        digits = min(width - 1, 3)
        if mass is not None:
            number = str(min(round(mass * 100), 10**digits - 1))
        else:
            number = "" if entropy_below else f"{h.entropy:.{1 if digits == 3 else 0}f}"
        top = f"{kind.code}{number[:digits]:>{digits}}"
    else:
        top = kind.code
    return top, mass_line(h, width, entropy if entropy_below else "")


def mass_line(h: HeadStats, width: int, entropy: str) -> str:
    """The masses on position 0, the previous token and the query: as numbers where they
    fit, else as three levels."""
    # "=" for self as in the kinds' codes: a lowercase s would read as the sink's S
    masses = (("0", h.first_token), ("p", h.previous_token), ("=", h.self_token))
    if width >= LABELLED:
        return " ".join(f"{name}{level(m)}{round(m * 100):>3}%" for name, m in masses)
    if width >= NUMBERED:
        return " ".join(f"{name}{round(m * 100):>3}" for name, m in masses)
    bars = "".join(level(m) for _, m in masses)
    return f"{bars} {entropy}" if entropy else bars


def selected_of(page: Page, stats: tuple[HeadStats, ...]) -> HeadStats:
    s = page.scope.settings
    return next(h for h in stats if (h.layer, h.head) == (s.layer, s.head))


def repeat(score: float | None) -> str:
    return "–" if score is None else pct(score)


def details(h: HeadStats, figure: MapFigure, width: int) -> list[Text]:
    """The selected head's numbers: raw masses with their sink-free versions beside them."""
    parts = [
        Text(f"L{h.layer} H{h.head} {KINDS[h.kind].word}", HEADING + KINDS[h.kind].style),
        Text(f"{h.entropy:.2f} bits (spread {pct(h.spread)})"),
        Text(f"on 0 {pct(h.first_token)}"),
        Text(f"previous {pct(h.previous_token)} (sink-free {pct(h.sink_free_previous)})"),
        Text(f"self {pct(h.self_token)} ({pct(h.sink_free_self)})"),
        Text(f"induction {repeat(h.induction)}"),
        Text(f"duplicate {repeat(h.duplicate)}"),
    ]
    if figure.probe is not None:
        p = figure.probe.heads[h.layer * figure.shape[1] + h.head]
        parts.append(
            Text(
                f"probe: induction {pct(p.induction)} duplicate {pct(p.duplicate)} "
                f"previous {pct(p.previous)}",
                HEADING,
            )
        )
    return packed(parts, width, " · ")


def probe_lines(probe: InductionProbe, width: int) -> list[Text]:
    """The losses the copying buys, and what the top induction heads' knock-out costs."""
    top = " ".join(f"L{layer}H{head}" for layer, head in probe.top_heads)
    parts = [
        Text(f"loss r2..r{probe.n}: first copy {probe.loss_first:.2f}", HEADING),
        Text(f"second {probe.loss_second:.2f} nats", HEADING),
        Text(f"{top or 'nothing more'} knocked out: first {probe.knocked_loss_first:.2f}"),
        Text(f"second {probe.knocked_loss_second:.2f}"),
    ]
    return packed(parts, width, " · ")


@dataclass(frozen=True)
class Grid:
    label_width: int  # "L11 "
    cell: int  # per head, with its space
    tall: bool  # two lines per layer
    summary: bool  # the per-layer summary column fits

    @classmethod
    def fit(cls, n_layer: int, n_head: int, width: int, room: int) -> Grid:
        label_width = len(f"L{n_layer - 1}") + 1
        cell = max(1, (width - label_width) // n_head)
        with_summary = (width - label_width - SUMMARY) // n_head
        summary = with_summary >= min(cell, MIN_CELL)
        if summary:
            cell = max(1, with_summary)
        return cls(label_width, cell, cell >= 4 and room >= 2 + 2 * n_layer, summary)


def legend(grid: Grid, width: int) -> list[Text]:
    """What the numbers are; the kinds' letters are named in the footer."""
    parts = [Text("%: the score that named it · b: entropy in bits", DIM)]
    if grid.tall:
        parts.append(Text("0 p =: mass on position 0, the previous token, itself", DIM))
    if grid.summary:
        parts.append(Text("│ heads ≥30% on position 0, the mean there, mean entropy", DIM))
    else:
        parts.append(Text("per-layer summary: needs a wider terminal", NOTE))
    return packed(parts, width, " · ")


def footer(stats: tuple[HeadStats, ...], width: int, short: bool = False) -> list[Text]:
    """How many heads of each kind, every kind named (in a word of five at most if short)."""
    parts = []
    for head_kind, kind in KINDS.items():
        count = sum(h.kind == head_kind for h in stats)
        word = kind.short if short else kind.word
        parts.append(Text.assemble((kind.code, kind.style + HEADING), f" {word} {count}"))
    return packed(parts, width, " · ")


def summary_cells(heads: tuple[HeadStats, ...]) -> str:
    """How many heads put >= 30% on position 0, the layer's mean mass there, its entropy."""
    resting = sum(h.first_token >= SINK_COUNTED for h in heads)
    first = sum(h.first_token for h in heads) / len(heads)
    entropy = sum(h.entropy for h in heads) / len(heads)
    counted = f"{resting}/{len(heads)}"
    return f"│ {counted:>5} {round(first * 100):>3}% {entropy:>4.1f}b"


def head_label(head: int, width: int) -> str:
    """H12 where it fits, else 12, else its last digit: a column is never left unnamed."""
    for label in (f"H{head}", str(head)):
        if len(label) <= width:
            return label
    return str(head % 10)


def grid_lines(page: Page, figure: MapFigure, grid: Grid) -> list[Text]:
    """The column header, then a row (or two) per layer; the cursor cell reversed."""
    s = page.scope.settings
    n_layer, n_head = figure.shape
    cell, inner = grid.cell, max(grid.cell - 1, 1)
    header = Text(" " * grid.label_width)
    for head in range(n_head):
        header.append(head_label(head, inner).ljust(cell), HEADING if head == s.head else DIM)
    if grid.summary:
        header.append(SUMMARY_HEADER, DIM)
    lines = [header]
    for layer in range(n_layer):
        top = Text(f"L{layer}".ljust(grid.label_width), HEADING if layer == s.layer else DIM)
        bottom = Text(" " * grid.label_width)
        for h in figure.layer(layer):
            style = KINDS[h.kind].style
            if (h.layer, h.head) == (s.layer, s.head):
                style = style + SELECTED
            first, second = cell_lines(h, inner, grid.tall)
            top.append(first[:inner].ljust(inner), style)
            bottom.append(second[:inner].ljust(inner), style)
            if cell > 1:
                top.append(" ")
                bottom.append(" ")
        if grid.summary:
            top.append(summary_cells(figure.layer(layer)), DIM)
        lines += [top, bottom] if grid.tall else [top]
    return lines


def title(page: Page[MapFigure], width: int, short: bool = False) -> list[Text]:
    """What the map is over; `short` names the probe in a word, as the key bar does."""
    f = page.figure
    n_layer, n_head = f.shape
    text = Text(f"model map · {count(n_layer, 'layer')} × {count(n_head, 'head')}", HEADING)
    text.append_text(page_note(page))
    if f.probe is None:
        over = Text(f"over {count(f.n_tokens, 'token')}", DIM)
    elif short:
        over = Text(f"probe, seed {f.probe.seed}", HEADING)
    else:
        over = Text(
            f"induction probe: <|endoftext|> + {f.probe.n} random tokens twice, "
            f"seed {f.probe.seed}",
            HEADING,
        )
    # w is the app's one switch: the Attention and Query panes follow it too.
    shown = Text("value-weighted norms, as the panes" if f.weighted else "attention weights", DIM)
    return packed([text, over, shown], width, " · ")


def render_model_map(page: Page[MapFigure], width: int, height: int) -> Drawn:
    empty = not_ready(page, width)
    if empty is not None:
        return empty
    f, s = page.figure, page.scope.settings
    n_layer, n_head = f.shape
    probe = [] if f.probe is None else probe_lines(f.probe, width)
    selected = details(selected_of(page, f.stats), f, width)
    head = title(page, width) + probe + selected
    counts = footer(f.stats, width)
    grid = Grid.fit(n_layer, n_head, width, height - len(head) - len(counts) - 2)
    key = legend(grid, width)
    # the column header and the two scroll hints take three lines of what is left
    if height - len(head) - len(key) - len(counts) - 3 < min(n_layer, MIN_ROWS):
        # a short terminal keeps layers in sight: the legend and the probe's words are in
        # the help (?), and the kinds' short words are the ones the wide cells show
        head = title(page, width, short=True) + probe + selected
        key, counts = [], footer(f.stats, width, short=True)
    head += key
    lines = grid_lines(page, f, grid)
    drawn = Drawn(
        [*head, *lines, *counts],
        focus=len(head) + 1 + s.layer * (2 if grid.tall else 1),
        pinned=len(head) + 1,
        footer=len(counts),
    )
    for line in drawn.lines:
        line.truncate(width)
    return drawn


def compute_map(
    scope: Scope, pieces: Pieces, on_progress: Callable[[int, int], None] | None = None
) -> MapFigure:
    """Over the text, or with the probe on over the probe's tokens (the view's knock-outs
    apply to both); `on_progress(layers done, n_layer)`."""
    s, view = scope.settings, scope.view
    probe = None
    if s.induction_probe:
        probe = induction_probe(view.config, view.params, view.ablation, DEFAULT_N, s.seed)
        view = probe.view
    stats = tuple(head_stats(view, s.value_weighted, on_progress))
    return MapFigure(stats, view.n_tokens, s.value_weighted, probe)


def head_json(h: HeadStats) -> dict[str, Any]:
    return {
        "layer": h.layer,
        "head": h.head,
        "entropy_bits": h.entropy,
        "first_token": h.first_token,
        "previous_token": h.previous_token,
        "self_token": h.self_token,
        "sink_free_previous": h.sink_free_previous,
        "sink_free_self": h.sink_free_self,
        "induction": h.induction,
        "duplicate": h.duplicate,
        "spread": h.spread,
        "kind": h.kind.value,
    }


def head_stats_json(figure: MapFigure, scope: Scope, pieces: Pieces) -> list[dict[str, Any]]:
    """Always over the text's attention weights, whatever the screen shows (the probe has
    its own key, `induction_probe`)."""
    if figure.probe is not None or figure.weighted:
        figure = MapFigure(tuple(head_stats(scope.view)), scope.n_tokens, False)
    return [head_json(h) for h in figure.stats]


def probe_json(probe: InductionProbe) -> dict[str, Any]:
    """The `induction_probe` key of `inspect --induction-probe`."""
    return {
        "seed": probe.seed,
        "n": probe.n,
        "tokens": list(probe.view.tokens),
        "loss_first": probe.loss_first,
        "loss_second": probe.loss_second,
        "knocked_out": [list(h) for h in probe.top_heads],
        "knocked_loss_first": probe.knocked_loss_first,
        "knocked_loss_second": probe.knocked_loss_second,
        "heads": [
            {
                "layer": h.layer,
                "head": h.head,
                "induction": h.induction,
                "duplicate": h.duplicate,
                "previous": h.previous,
            }
            for h in probe.heads
        ],
    }


def map_depends(scope: Scope) -> tuple:
    s = scope.settings
    # the probe's tokens are drawn from the seed; the text's statistics do not read it
    return view_identity(scope), s.value_weighted, s.induction_probe, s.induction_probe and s.seed


SPEC = ScreenSpec(
    id="head_stats",
    title="Model map",
    key="m",
    label="map",
    summary="model map: every head's statistics; pick one",
    render=render_model_map,
    about="every layer × head over the current text, named by the weight left once position "
    "0 is set aside (each row renormalised by 1 − a[q,0]) when half of it goes to one "
    "place: prev (P) the previous token, self (=), ind (I) the token after an earlier "
    "occurrence of the query's, dup (D) that occurrence; else sink (S) when position 0 "
    "holds half the weight, broad (B) when the rows are spread thin, other (?); with the "
    "score that named it (%) and the entropy (bits). Tall cells add the masses on position "
    "0, the previous token and the query; the right column sums up each layer, the last "
    "line counts each kind. i runs the induction probe; w shows value-weighted norms",
    depends=map_depends,
    compute=compute_map,
    progress=True,
    json=head_stats_json,
    keys=(
        *HEAD_CURSOR,
        Key(
            "i",
            "i",
            "app.toggle('induction_probe')",
            "probe",
            "induction probe: the map over <|endoftext|> and random tokens twice, or the text",
            True,
        ),
    ),
    while_generating=False,
)
