"""Activation patching (gpt2scope.engine.patching): a clean and a corrupted prompt of as
many tokens, the logit difference LD = logit(answer) - logit(contrast) after the last
token, and maps of how much of the clean LD each patched activation brings back:
1 restores it, 0 does nothing. The estimate (attribution patching) fills every map at once;
the exact cells replace it as they are computed.

The patching screen (tui/patching_screen.py) draws `render_patching`; `inspect --corrupt`
writes `patching_json` and prints `patching_text`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from rich.cells import cell_len
from rich.style import Style
from rich.text import Text

from gpt2scope.engine.gpt2 import GPT2Config, Params
from gpt2scope.engine.patching import SITES, Pair, Patch, default_tokens, patched_run, sweep
from gpt2scope.engine.patching import estimate as estimate_maps
from gpt2scope.engine.run import Run
from gpt2scope.tui.text import Piece, Pieces, clip, token_json
from gpt2scope.tui.views.common import Drawn, count, longest_fitting, piece_text
from gpt2scope.tui.views.spec import Key
from gpt2scope.tui.views.style import (
    DENSITY,
    DIM,
    HEADING,
    NOTE,
    SELECTED,
    WARNING,
    bar,
    percent,
    signed,
    signed_cell,
    signed_legend,
)

MODES = ("estimate", "exact", "difference")
# The maps' names in JSON and on screen: `z` patches one head's z at every position.
MAP_NAMES = {"resid_pre": "resid_pre", "attn_out": "attn_out", "mlp_out": "mlp_out", "z": "heads"}
LABEL = 4  # "L11 "
PROGRESS = 10
N_CANDIDATES = 5  # next tokens listed for an applied patch


@dataclass(frozen=True)
class Example:
    name: str
    clean: str
    corrupt: str
    answer: str
    contrast: str


# The induction example first: the demo model separates only it (LD_clean - LD_corrupt
# +2.40; indirect object -0.46, factual recall +0.24), GPT-2 small all three.
EXAMPLES = (
    Example(
        "induction",
        "The cat sat on the mat. The cat sat on the",
        "The dog ran in the park. The cat sat on the",
        " mat",
        " park",
    ),
    Example(
        "indirect object",
        "When Mary and John went to the store, John gave a drink to",
        "When Mary and John went to the store, Mary gave a drink to",
        " Mary",
        " John",
    ),
    Example(
        "factual recall",
        "The Eiffel Tower is in the city of",
        "The Colosseum is in the city of",
        " Paris",
        " Rome",
    ),
)


@dataclass(frozen=True)
class Applied:
    """One patch applied to the corrupted run: its LD, and the patched run's most likely
    next tokens with their probabilities before and after."""

    patch: Patch
    metric: float
    candidates: tuple[tuple[Piece, float, float], ...]
    run: Run  # the patched run, for the panes


def applied(pair: Pair, patch: Patch, pieces: Pieces) -> Applied:
    run = patched_run(pair, patch)
    view = run.view()
    before = torch.softmax(pair.corrupt.logits.float(), -1)
    after = torch.softmax(view.logits.float(), -1)
    top = torch.topk(after, N_CANDIDATES).indices.tolist()
    metric = float(view.logits[pair.answer] - view.logits[pair.contrast])
    candidates = tuple((pieces(t), float(before[t]), float(after[t])) for t in top)
    return Applied(patch, metric, candidates, run)


@dataclass(frozen=True, eq=False)
class Patching:
    """What the patching screen shows: the pair, its maps as far as they are computed, and
    the screen's choices. Exact rows not computed yet are empty lists."""

    pair: Pair
    clean: tuple[Piece, ...]
    corrupt: tuple[Piece, ...]
    answer: Piece
    contrast: Piece
    estimate: dict[str, list[list[float]]]
    exact: dict[str, list[list[float]]] = field(default_factory=dict)
    site: str = "resid_pre"
    mode: str = "exact"
    layer: int = 0
    index: int = 0
    applied: Applied | None = None
    running: bool = False
    note: str = ""

    def rows_done(self) -> int:
        return sum(1 for rows in self.exact.values() for row in rows if row)

    def rows_total(self) -> int:
        return len(SITES) * self.pair.clean.config.n_layer

    def value(self, site: str, layer: int, index: int) -> float | None:
        """The cell as the mode shows it; None where the exact value is not in yet."""
        estimated = self.estimate[site][layer][index]
        row = self.exact.get(site, [[]] * (layer + 1))[layer]
        exact = row[index] if row else None
        if self.mode == "estimate":
            return estimated
        if exact is None:
            # Exact mode shows the estimate until the exact cell replaces it.
            return estimated if self.mode == "exact" else None
        return exact if self.mode == "exact" else estimated - exact


def pair_of(
    config: GPT2Config,
    params: Params,
    clean: list[int],
    corrupt: list[int],
    pieces: Pieces,
    answer: int | None = None,
    contrast: int | None = None,
) -> Pair:
    """Both prompts run through the intact model; the answer and contrast default to the
    runs' top predictions. Raises ValueError, in one line with both token lists, when the
    prompts have different numbers of tokens."""
    if len(clean) != len(corrupt):
        raise ValueError(
            f"the clean prompt is {count(len(clean), 'token')} ({token_list(clean, pieces)}), the "
            f"corrupted {len(corrupt)} ({token_list(corrupt, pieces)}): patching needs as many"
        )
    views = []
    for ids in (clean, corrupt):
        run = Run(config, params)
        run.extend(ids)
        views.append(run.view())
    default_answer, default_contrast = default_tokens(*views)
    answer = default_answer if answer is None else answer
    contrast = default_contrast if contrast is None else contrast
    return Pair(views[0], views[1], answer, contrast)


def token_list(ids: list[int], pieces: Pieces) -> str:
    return "|".join(piece_text(pieces(t)).plain for t in ids)


def length_refusal(n_clean: int, n_corrupt: int) -> str:
    """The screen's one line for a pair of another length: both lengths and what to do."""
    return (
        f"clean {count(n_clean, 'token')}, corrupted {n_corrupt}: patching needs as many; "
        "edit one (esc undoes)"
    )


def patching(
    pair: Pair, pieces: Pieces, estimate: dict[str, list[list[float]]], **choices: Any
) -> Patching:
    return Patching(
        pair=pair,
        clean=tuple(pieces(t) for t in pair.clean.tokens),
        corrupt=tuple(pieces(t) for t in pair.corrupt.tokens),
        answer=pieces(pair.answer),
        contrast=pieces(pair.contrast),
        estimate=estimate,
        **choices,
    )


ABOUT = (
    "activation patching: the clean and the corrupted prompt (as many tokens; the tokens that "
    "differ reversed), LD = logit(answer) − logit(contrast) after the last token in each, and "
    "a map per site (resid_pre, attn_out, mlp_out at each layer and position; heads: one "
    "head's z at every position) of (LD_patched − LD_corrupt) / (LD_clean − LD_corrupt) with "
    "that clean activation copied into the corrupted run: 1 restores the clean answer, 0 does "
    "nothing. The estimate (attribution patching: (a_clean − a_corrupt) · dLD/da) fills the "
    "maps at once, the exact cells replace it as they are computed; the intact model"
)

KEYS = (
    Key("escape", "esc", "back", "back", "cancel the exact cells, or back to the panes", True),
    Key("P", "P", "back", "back", "back to the panes"),
    Key("up", "↑", "move(-1, 0)", "layer-", "previous layer", True, "layer"),
    Key("down", "↓", "move(1, 0)", "layer+", "next layer", True, "layer"),
    Key("left", "←", "move(0, -1)", "cell-", "previous position (or head)", True, "cell"),
    Key("right", "→", "move(0, 1)", "cell+", "next position (or head)", True, "cell"),
    Key("1", "1", "site(0)", "resid", "map: resid_pre at each layer and position"),
    Key("2", "2", "site(1)", "attn", "map: attn_out at each layer and position"),
    Key("3", "3", "site(2)", "mlp", "map: mlp_out at each layer and position"),
    Key("4", "4", "site(3)", "heads", "map: each head's z at every position"),
    Key("m", "m", "mode", "mode", "show the estimate, the exact cells or their difference", True),
    Key("enter", "enter", "apply", "apply", "apply the cell's patch to the corrupted run", True),
    Key("backspace", "backspace", "clear", "clear", "clear the applied patch"),
    Key("x", "x", "example", "example", "next built-in example", True),
    Key("v", "v", "swap", "swap", "swap the answer and the contrast"),
    Key("d", "d", "defaults", "defaults", "answer and contrast: the two runs' top predictions"),
    Key("e", "e", "edit('corrupt')", "corrupt", "edit the corrupted prompt (enter runs both)"),
    Key("E", "E", "edit('clean')", "clean", "edit the clean prompt (enter runs both)"),
    Key("r", "r", "rerun", "rerun", "compute the exact cells again"),
)
OPENER = Key(
    "P", "P", "patching", "patching", "activation patching: this prompt vs a corrupted one"
)


# Drawing.


def render_patching(p: Patching, width: int, height: int) -> Drawn:
    lines = [*prompt_lines(p, width), metric_line(p, width), *separation_note(p, width)]
    lines.append(map_heading(p, width))
    if not p.pair.meaningful:
        lines.append(
            Text(
                clip(
                    f"LD clean and LD corrupt differ by {abs(p.pair.spread):.1e}: too little "
                    "for a ratio to mean anything; pick prompts the model tells apart",
                    width,
                ),
                NOTE,
            )
        )
        return Drawn(lines)
    grid = map_lines(p, width)
    lines += grid
    lines += cell_lines(p, width)
    return Drawn(lines, focus=len(lines) - len(grid) + p.layer, pinned=0)


def prompt_lines(p: Patching, width: int) -> list[Text]:
    """The two prompts token by token, aligned, the tokens that differ reversed; wrapped
    in pairs of lines when they are wider than the screen."""
    names = ("clean   ", "corrupt ")
    lines: list[Text] = []
    rows = [Text(name, HEADING) for name in names]
    for piece, twin in zip(p.clean, p.corrupt, strict=True):
        texts = [piece_text(piece).plain, piece_text(twin).plain]
        room = max(cell_len(t) for t in texts) + 1
        if rows[0].cell_len + room > width and rows[0].cell_len > len(names[0]):
            lines += rows
            rows = [Text(" " * len(name)) for name in names]
        style = SELECTED if piece.token_id != twin.token_id else None
        for row, text in zip(rows, texts, strict=True):
            row.append(text, style)
            row.append("│".rjust(room - cell_len(text)), DIM)
    lines += rows
    for line in lines:
        line.truncate(width)
    if p.pair.first_difference == p.pair.n_tokens:
        lines.append(
            Text(
                clip(
                    "the prompts are the same: e edits the corrupted one, x loads an example", width
                ),
                NOTE,
            )
        )
    return lines


def metric_line(p: Patching, width: int) -> Text:
    pair = p.pair
    line = Text("LD = logit(", DIM)
    line.append(piece_text(p.answer))
    line.append(") − logit(", DIM)
    line.append(piece_text(p.contrast))
    line.append(")  clean ", DIM)
    line.append(signed(pair.clean_metric), HEADING)
    line.append("  corrupt ", DIM)
    line.append(signed(pair.corrupt_metric), HEADING)
    line.truncate(width)
    return line


def separation_note(p: Patching, width: int) -> list[Text]:
    """Where the clean prompt prefers the answer no more than the corrupted one, 1 on the
    maps is no restored answer: say so, with the spread (the demo model's indirect object)."""
    pair = p.pair
    if not pair.meaningful or pair.spread > 0:
        return []
    spread = f"LD_clean − LD_corrupt = {signed(pair.spread).strip()}"
    versions = (
        f"the pair does not separate the answer on this model: {spread}, so 1 on the maps is "
        "no restored answer (x: another example)",
        f"the pair does not separate the answer on this model: {spread}",
        f"the pair does not separate the answer: {spread}",
        f"does not separate the answer: {spread}",
    )
    return [Text(longest_fitting(versions, width), WARNING)]


def map_heading(p: Patching, width: int) -> Text:
    line = Text()
    for i, site in enumerate(SITES):
        name = f"{i + 1} {MAP_NAMES[site]}"
        line.append(name, SELECTED if site == p.site else DIM)
        line.append(" ")
    line.append("· m ", DIM)
    line.append(p.mode, HEADING)
    done, total = p.rows_done(), p.rows_total()
    if done < total:
        line.append(f"  exact {bar(done / total, PROGRESS)} {done}/{total}", NOTE)
        if not p.running:
            line.append(" (r runs)", NOTE)
    line.truncate(width)
    return line


def column_width(p: Patching, width: int) -> int:
    n = p.pair.shape(p.site)[1]
    return max(2, min(7, (width - LABEL) // max(n, 1)))


def map_lines(p: Patching, width: int) -> list[Text]:
    """The selected map, a row per layer, the cursor's cell reversed."""
    n_layer, n = p.pair.shape(p.site)
    cell = column_width(p, width)
    labels = Text(" " * LABEL)
    for i in range(n):
        label, style = column_label(p, i)
        labels.append(clip(label, cell - 1).ljust(cell), style)
    lines = [labels]
    for layer in range(n_layer):
        line = Text(f"L{layer}".ljust(LABEL), HEADING if layer == p.layer else DIM)
        for i in range(n):
            text, style = map_cell(p.value(p.site, layer, i), cell)
            chosen = (layer, i) == (p.layer, p.index)
            line.append(
                text, style + SELECTED if chosen and style else SELECTED if chosen else style
            )
        lines.append(line)
    lines.append(map_legend(p))
    for line in lines:
        line.truncate(width)
    return lines


def differs(p: Patching, index: int) -> bool:
    return p.clean[index].token_id != p.corrupt[index].token_id


def position_label(p: Patching, index: int) -> str:
    """The clean token, what is patched in; `*` where the corrupted one differs."""
    return ("*" if differs(p, index) else "") + piece_text(p.clean[index]).plain


def column_label(p: Patching, i: int) -> tuple[str, Style]:
    """A column's label, the cursor's bold; the differing tokens reversed, as above."""
    if p.site == "z":
        return f"H{i}", HEADING if i == p.index else DIM
    style = SELECTED if differs(p, i) else HEADING if i == p.index else DIM
    return position_label(p, i), style


def map_legend(p: Patching) -> Text:
    """What a cell is in this mode; where the positions' labels are marked, what `*` is."""
    if p.mode == "difference":
        legend = Text("estimate − exact: 0 = the estimate is right  ", DIM)
    else:
        legend = Text("1 = clean restored, 0 = no effect  ", DIM)
    legend.append_text(signed_legend())
    if p.site != "z" and p.pair.first_difference < p.pair.n_tokens:
        legend.append("  *clean ≠ corrupted", DIM)
    return legend


def map_cell(value: float | None, cell: int) -> tuple[str, Any]:
    """A number where it fits, else a sign and a density glyph (1 = full)."""
    if value is None:
        return "·".ljust(cell), DIM
    glyph, style = signed_cell(value, 1.0)
    if cell >= 6:
        return signed(value, cell - 1).ljust(cell), style
    sign = "+" if value > 0 else "−" if value < 0 else " "
    if glyph == DENSITY[0] and abs(value) < 0.005:
        sign, glyph = " ", DENSITY[0]
    return (sign + glyph).ljust(cell), style


def cell_lines(p: Patching, width: int) -> list[Text]:
    """The cursor's cell: its place, the estimate beside the exact value, and the applied
    patch's effect on the corrupted run's next-token probabilities."""
    site, layer, index = p.site, p.layer, p.index
    place = f"H{index}" if site == "z" else f"@{index} {position_label(p, index)}"
    line = Text(f"L{layer} {MAP_NAMES[site]} {place}: ", HEADING)
    line.append("estimate ", DIM)
    line.append(signed(p.estimate[site][layer][index]))
    row = p.exact.get(site, [[]] * (layer + 1))[layer]
    line.append("  exact ", DIM)
    line.append(signed(row[index]) if row else "   ···")
    line.append("  enter applies" if p.applied is None else "  backspace clears", DIM)
    lines = [line]
    if p.applied is not None:
        lines += applied_lines(p, width)
    if p.note:
        lines.append(Text(p.note, NOTE))
    for line in lines:
        line.truncate(width)
    return lines


def applied_lines(p: Patching, width: int) -> list[Text]:
    a, pair = p.applied, p.pair
    head = Text(f"applied {a.patch.label}, in the panes too: LD ", HEADING)
    head.append(f"{signed(pair.corrupt_metric).strip()} → {signed(a.metric).strip()}")
    head.append(f", {pair.normalised(a.metric):.2f} of the way", DIM)
    line = Text("next: ", DIM)
    for piece, before, after in a.candidates:
        line.append(piece_text(piece))
        line.append(f" {percent(before).strip()}→{percent(after).strip()}  ", DIM)
    return [head, line]


# Headless.


def measured(pair: Pair, pieces: Pieces) -> Patching:
    """Every map, exact and estimated, computed in line (for inspect)."""
    exact = {site: sweep(pair, site) for site in SITES}
    return patching(pair, pieces, estimate_maps(pair), exact=exact)


def token_of(piece: Piece) -> dict[str, Any]:
    return {"id": piece.token_id, "text": token_json(piece)["text"]}


def patching_json(p: Patching) -> dict[str, Any]:
    """The `patching` key of `inspect --corrupt`: every exact map and the estimate."""
    pair = p.pair
    out: dict[str, Any] = {
        "answer": token_of(p.answer),
        "contrast": token_of(p.contrast),
        "corrupt_tokens": [token_of(piece) for piece in p.corrupt],
        "clean_metric": pair.clean_metric,
        "corrupt_metric": pair.corrupt_metric,
        "meaningful": pair.meaningful,
    }
    out |= {MAP_NAMES[site]: p.exact[site] for site in SITES}
    out["estimate"] = {MAP_NAMES[site]: p.estimate[site] for site in SITES}
    return out


def patching_text(p: Patching, width: int) -> list[str]:
    """Every exact map, compactly, for `inspect --format text`."""
    head = (*prompt_lines(p, width), metric_line(p, width), *separation_note(p, width))
    lines = [line.plain for line in head]
    if not p.pair.meaningful:
        return [*lines, "LD clean and LD corrupt are too close for the maps to mean anything"]
    marked = p.pair.first_difference < p.pair.n_tokens
    for site in SITES:
        shown = replace(p, site=site, mode="exact", layer=-1, index=-1)
        mark = ", *clean ≠ corrupted" if marked and site != "z" else ""
        lines += ["", f"{MAP_NAMES[site]} (1 = clean restored{mark}):"]
        lines += [line.plain for line in map_lines(shown, width)[:-1]]
    return lines
