"""The probabilities view: the next-token distribution, candidate by candidate.

Each bar is the candidate's probability after temperature; solid bars survived the top-k /
top-p cut, shaded ones were cut. The percentages are what the token is (or was) sampled
with, renormalised over the kept candidates, and, when the pane is wide enough, the model's
own probability at temperature 1.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text

from gpt2scope.tui.session import Candidate, Prediction, Scope, Shift
from gpt2scope.tui.text import token_json
from gpt2scope.tui.views.common import Drawn, count, longest_fitting, no_run, packed, piece_text
from gpt2scope.tui.views.spec import PaneSpec
from gpt2scope.tui.views.style import CHOSEN, CUT, DIM, HEADING, KEPT, MAX_BAR, NOTE, bar, percent

KNOCKED_OUT = Style(color="magenta")

MODEL_COLUMN_MIN_WIDTH = 36  # for the settings in the summary
MIN_LABEL = 4
HEADER_ROOM = 5  # rows left for the candidates before the column header takes one
MIN_SHOWN = 3  # candidates even a short pane lists (the class layout at 80x24)


def summary(
    p: Prediction,
    vocab: int,
    width: int,
    off_query: bool,
    shift: Shift | None = None,
    patched: bool = False,
) -> list[Text]:
    """What was chosen (or that nothing was yet), the settings and the entropies, wrapped;
    `off_query` when the query is not the last token, whose prediction this is; with a
    `shift`, how far the knock-outs (or the patch, when `patched`) moved the distribution
    from the intact model's (the same tokens unpatched)."""
    if p.chosen is None:
        versions = ("next token · not sampled yet", "not sampled yet")
        parts = [Text(longest_fitting(versions, width), HEADING)]
    else:
        chose = Text(f"step {p.step} chose ", HEADING)
        chose.append_text(piece_text(p.chosen, 14, style=CHOSEN))
        parts = [chose, Text(f"{percent(p.chosen_prob or 0.0).strip()} · rank {p.chosen_rank}")]
    if off_query:  # ← → move the query, but only the last token predicts what comes next
        parts.append(Text("after the last token", DIM))
    params = p.params
    if width >= MODEL_COLUMN_MIN_WIDTH:
        parts += [
            Text(f"T {params.temperature:.2f} k {params.top_k or 'off'} p {params.top_p:.2f}", DIM),
            Text("argmax" if params.temperature == 0 else f"kept {p.n_kept} of {vocab}", DIM),
            Text(f"entropy {p.entropy:.2f} → {p.sampled_entropy:.2f} bits", DIM),
        ]
    else:  # the status line has T, k and p; the cut line shows what was kept
        parts.append(Text(f"H {p.entropy:.2f}→{p.sampled_entropy:.2f} bits", DIM))
    if shift is not None:
        parts.append(Text(shift_label(shift, width, patched), KNOCKED_OUT))
    return packed(parts, width, " · ")


def shift_label(shift: Shift, width: int, patched: bool) -> str:
    """How far apart the two distributions are; after a patch, against what in words: the
    corrupted prompt (and what was generated since) run without the patch."""
    kl = f"{shift.kl_bits:.3f}"
    if not patched:
        return f"KL(intact‖now) {kl} bits"
    versions = (
        f"KL from the unpatched run (the same tokens, no patch) {kl} bits",
        f"KL from the unpatched run {kl} bits",
        f"vs unpatched run: KL {kl} bits",
        f"vs unpatched KL {shift.kl_bits:.2f} bits",
    )
    return longest_fitting(versions, width)


def before_after(before: float, after: float) -> str:
    """' 43.1→12.0': the intact model's probability, then the knocked-out one's, in %."""
    return f" {before * 100:4.1f}→{after * 100:4.1f}"


def candidate_line(
    c: Candidate,
    chosen: bool,
    label_width: int,
    bar_width: int,
    model_column: bool,
    before: float | None = None,
) -> Text:
    line = Text("▸ " if chosen else "  ", CHOSEN)
    line.append_text(piece_text(c.piece, label_width, pad=True, style=CHOSEN if chosen else None))
    line.append(" ")
    if bar_width:
        glyph_bar = bar(c.prob_temperature, bar_width)
        if not c.kept:  # a cut bar in ░ to its last partly filled cell: told apart without colour
            glyph_bar = ("░" * len(glyph_bar.rstrip())).ljust(bar_width)
        line.append(glyph_bar + " ", KEPT if c.kept else CUT)
    line.append(percent(c.prob_sampled) if c.kept else "  cut", "" if c.kept else CUT)
    if before is not None:  # in a narrow pane too: it is what a knock-out is about
        line.append(before_after(before, c.prob), KNOCKED_OUT)
    elif model_column:
        line.append(f" {percent(c.prob)}", DIM)
    return line


def column_header(
    label_width: int,
    bar_width: int,
    model_column: bool,
    shift: bool,
    patched: bool = False,
    width: int = 0,
) -> Text:
    header = "  " + ("token" if label_width >= 5 else "tok").ljust(label_width) + " "
    if bar_width:
        header += ("after T" if bar_width >= 7 else "bar").ljust(bar_width) + " "
    header += "   p%"
    if shift and patched:  # the run before the patch, in as many words as fit
        header += "  unpatched→now" if len(header) + 15 <= width else "  before→now"
    elif shift:
        header += "  intact→now"
    elif model_column:
        header += "  T=1"
    return Text(header, DIM)


def more_below(p: Prediction, shown: int, width: int) -> str:
    """The candidates not drawn, so a cut pane says it is cut: how many, kept and cut."""
    hidden = len(p.candidates) - shown
    kept = max(p.n_kept - shown, 0)
    versions = (
        f"▾ {count(hidden, 'more candidate')}: {kept} kept, {hidden - kept} cut (z zoom)",
        f"▾ {hidden} more: {kept} kept, {hidden - kept} cut",
        f"▾ {hidden} more",
    )
    return longest_fitting(versions, width)


def cut_reason(p: Prediction) -> str:
    params = p.params
    if params.temperature == 0:
        return "T 0: argmax only"
    if params.top_k and p.n_kept == params.top_k:
        return f"cut by top-k {params.top_k}"
    return f"cut by top-p {params.top_p:.2f}"


def shown_count(p: Prediction, rows: int) -> int:
    """How many candidates fit in `rows`, leaving room for the cut divider, for a chosen
    token ranked below them and for the line saying how many more there are (not in a
    pane too short for more than the top MIN_SHOWN)."""
    n = max(rows, MIN_SHOWN)
    if len(p.candidates) > n and rows > MIN_SHOWN:
        n -= 1
    if p.n_kept < n:
        n -= 1
    chosen_rank = p.chosen_rank if p.chosen_rank is not None else -1
    if chosen_rank >= n:
        n -= 1
    return max(n, 1)


def render_probabilities(scope: Scope, width: int, height: int) -> Drawn:
    p = scope.prediction
    if p is None:
        return no_run(width)
    shift = scope.shift
    vocab = scope.info.config.vocab_size
    patched = scope.view is not None and bool(scope.view.patch)
    lines = summary(p, vocab, width, not scope.query_is_last, shift, patched)
    # A short pane keeps the top candidates and drops the summary's later lines (z zooms).
    drawn = Drawn(lines[: max(1, height - MIN_SHOWN)])
    model_column = width >= 2 + MIN_LABEL + 1 + 5 + 6
    tail = len(before_after(1, 1)) if shift else 6 if model_column else 0
    longest = max(cell_len(c.piece.label) for c in p.candidates)
    # A zoomed pane gives long tokens their whole label, not 14 cells and blank space.
    label_width = max(MIN_LABEL, min(longest, max(14, width // 4), (width - 2 - 6 - tail) // 2))
    bar_width = min(width - 2 - label_width - 1 - 5 - tail - 1, MAX_BAR)
    if bar_width < 3:
        bar_width = 0
    if height - len(drawn.lines) >= HEADER_ROOM:
        shifted = shift is not None
        drawn.add(column_header(label_width, bar_width, model_column, shifted, patched, width))
    chosen_id = p.chosen.token_id if p.chosen else None
    shown = list(p.candidates[: shown_count(p, height - len(drawn.lines))])
    for i, c in enumerate(shown):
        if i == p.n_kept:
            drawn.add(Text(f"  ─ {cut_reason(p)} ─", NOTE))
        is_chosen = c.piece.token_id == chosen_id
        before = shift.before[i] if shift else None
        drawn.add(candidate_line(c, is_chosen, label_width, bar_width, model_column, before))
    if p.chosen is not None and all(c.piece.token_id != chosen_id for c in shown):
        chosen_line = Text(f"▸ chose rank {p.chosen_rank}: ", CHOSEN)
        # the token with an ellipsis if it must be cut, not chopped by the pane's edge
        chosen_line.append_text(piece_text(p.chosen, max(1, min(14, width - chosen_line.cell_len))))
        drawn.add(chosen_line)
    if len(shown) < len(p.candidates) and len(drawn.lines) < height:
        drawn.add(Text(more_below(p, len(shown), width), NOTE))
    for line in drawn.lines:
        line.truncate(width)
    return drawn


def on_prediction(scope: Scope) -> tuple:
    # "after the last token" or not; the intact model's, once worked out
    return id(scope.prediction), scope.query_is_last, id(scope.shift)


def prediction_json(p: Prediction) -> dict[str, Any]:
    return {
        "step": p.step,
        "chosen": None if p.chosen is None else p.chosen.token_id,
        **asdict(p.params),
        "entropy_bits": p.entropy,
        "sampled_entropy_bits": p.sampled_entropy,
        "n_kept": p.n_kept,
        "candidates": [
            {
                **token_json(c.piece),
                "model_probability": c.prob,
                "temperature_probability": c.prob_temperature,
                "probability": c.prob_sampled,
                "kept": c.kept,
            }
            for c in p.candidates
        ],
    }


def probabilities_json(scope: Scope) -> dict[str, Any]:
    return {"probabilities": prediction_json(scope.prediction)}


SPEC = PaneSpec(
    id="probabilities",
    title="Probabilities",
    render=render_probabilities,
    about="the next-token candidates by logit, after the last token: bar = probability after "
    "temperature (█ kept, ░ cut by top-k/top-p), p% = what it is sampled with (kept, "
    "renormalised), T=1 = the model's own; ▸ the token chosen; entropy in bits, model's → "
    "sampled from; while heads or MLPs are knocked out, intact→now is the model's own "
    "probability without the knock-outs and with them, and KL(intact‖now) how far apart the "
    "two distributions are, in bits; after a patch (P) the same against the unpatched run: the "
    "corrupted prompt and the tokens since, without the patch",
    depends=on_prediction,
    json=probabilities_json,
    caption=(
        "what the model says comes next, likeliest first: p = softmax(logits / T)",
        "the next token, likeliest first: p = softmax(logits / T)",
        "next: softmax(logits / T)",
        "softmax(logits/T)",
    ),
)
