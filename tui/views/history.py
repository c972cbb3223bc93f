"""The history view: every generation step kept, shown one at a time. The text with the shown
step's token highlighted; what that step chose against the argmax; where the query that made
the prediction looked (the selected head's attention row of the token before); and the
candidates, one of which can be put in the chosen token's place to branch from there.
"""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text

from gpt2scope.engine import SampleRecord
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import Piece, Pieces, token_json
from gpt2scope.tui.views.common import Drawn, no_run, packed, piece_text
from gpt2scope.tui.views.continuation import PROMPT_STYLE, band_style, wrap
from gpt2scope.tui.views.page import Page
from gpt2scope.tui.views.probabilities import candidate_line
from gpt2scope.tui.views.spec import BranchAt, Cursor, Key, ScreenSpec
from gpt2scope.tui.views.style import CHOSEN, DIM, HEADING, MAX_BAR, NOTE, SELECTED, percent

TIMELINE_LINES = 3
ATTENDED_KEYS = 5
LATER = Style(color="grey42")
HISTORY_CANDIDATES = 10  # per step in the JSON


def timeline(scope: Scope, width: int) -> list[Text]:
    """The prompt and every generated token, the shown step's reversed, later steps grey;
    only the lines around the shown step."""
    prompt = scope.pieces[: scope.prompt_length]
    body = wrap([*prompt, *scope.history_pieces], width)

    def style_of(i: int) -> Style:
        step = i - len(prompt) + 1
        if step <= 0:
            return PROMPT_STYLE
        style = LATER if step > scope.steps else band_style(scope.history[step - 1].probability)
        return style + SELECTED if step == scope.steps else style

    focus = body.line_of[len(prompt) + scope.steps - 1]
    first = max(min(focus - TIMELINE_LINES // 2, len(body.rows) - TIMELINE_LINES), 0)
    shown = range(first, min(first + TIMELINE_LINES, len(body.rows)))
    return [body.line(i, style_of) for i in shown]


def choice_lines(scope: Scope, width: int) -> list[Text]:
    p, step = scope.step_prediction, scope.steps
    argmax = p.candidates[0]
    chose = Text(f"step {step} chose ", HEADING)
    chose.append_text(piece_text(p.chosen, 14, style=CHOSEN))
    parts = [chose, Text(f"p {percent(p.chosen_prob or 0.0).strip()} · rank {p.chosen_rank}")]
    if p.chosen_rank == 0:
        parts.append(Text("the argmax", DIM))
    else:
        best = Text("argmax ", DIM)
        best.append_text(piece_text(argmax.piece, 14))
        best.append(f" p {percent(argmax.prob_sampled).strip()}", DIM)
        parts.append(best)
    params = p.params
    parts.append(
        Text(
            f"T {params.temperature:.2f} k {params.top_k or 'off'} p {params.top_p:.2f} · "
            f"entropy {p.entropy:.2f} → {p.sampled_entropy:.2f} bits",
            DIM,
        )
    )
    return packed(parts, width, " · ")


def attended(scope: Scope, width: int) -> list[Text]:
    """Where the token before the chosen one looked: its row made this step's prediction."""
    a, query = scope.attn, scope.n_tokens - 2
    if a is None or query < 0:
        return []
    s = scope.settings
    lead = Text(f"L{s.layer} H{s.head}: query {query} ", DIM)
    lead.append_text(piece_text(scope.pieces[query], 10))
    lead.append(" looked at:", DIM)
    parts = [lead]
    for j in a.top_keys(query, ATTENDED_KEYS):
        key = Text(f"{j} ", DIM)  # the position tells apart keys with the same text
        key.append_text(piece_text(scope.pieces[j], 10))
        key.append(f" {percent(float(a.pattern_row(query)[j])).strip()}")
        parts.append(key)
    return packed(parts, width, "  ")


def branch_hint(scope: Scope, cursor: int) -> Text:
    candidate = scope.step_prediction.candidates[cursor]
    later = len(scope.history) - scope.steps
    text = Text("enter: put ", NOTE)
    text.append_text(piece_text(candidate.piece, 14, style=CHOSEN))
    text.append(f" at step {scope.steps}" + (f", then {later} more" if later else ""), NOTE)
    return text


def candidate_rows(scope: Scope, cursor: int, width: int) -> tuple[Text, list[Text]]:
    p = scope.step_prediction
    longest = max(cell_len(c.piece.label) for c in p.candidates)
    label_width = max(4, min(longest, 14, (width - 2 - 12) // 2))
    bar_width = min(width - 2 - label_width - 1 - 5 - 6 - 1, MAX_BAR)
    bar_width = bar_width if bar_width >= 3 else 0
    header = "  " + "token".ljust(label_width) + " "
    header += ("after T".ljust(bar_width) + " " if bar_width else "") + "   p%  T=1"
    rows = []
    for i, c in enumerate(p.candidates):
        row = candidate_line(c, c.piece == p.chosen, label_width, bar_width, True)
        if i == cursor:
            row.stylize(SELECTED)
        rows.append(row)
    return Text(header, DIM), rows


def render_history(page: Page[None], width: int, height: int) -> Drawn:
    scope = page.scope
    if scope.view is None:
        return no_run(width)
    n = len(scope.history)
    if not n:
        return Drawn([Text("history · nothing generated yet: g generates, s steps", NOTE)])
    title = Text(f"history · step {scope.steps} of {n}", HEADING)
    title.append(" (newest)" if scope.steps == n else " (looking back)", DIM)
    head = [title, *timeline(scope, width)]
    if scope.steps == 0:
        more = " · → step 1" if page.live else ""
        head.append(Text(f"step 0: the prompt alone, before the first token{more}", NOTE))
        return Drawn(head)
    cursor = min(max(page.cursor, 0), len(scope.step_prediction.candidates) - 1)
    head += [*choice_lines(scope, width), *attended(scope, width)]
    if page.live:
        head.append(branch_hint(scope, cursor))
    header, rows = candidate_rows(scope, cursor, width)
    head.append(header)
    drawn = Drawn([*head, *rows], focus=len(head) + cursor, pinned=len(head))
    for line in drawn.lines:
        line.truncate(width)
    return drawn


def step_json(step: int, piece: Piece, record: SampleRecord, pieces: Pieces) -> dict[str, Any]:
    argmax = record.candidate_ids[0]  # candidates come sorted by logit, ties by id
    top = zip(
        record.candidate_ids, record.candidate_probs, record.candidate_probs_filtered, strict=True
    )
    return {
        "step": step,
        "chosen": {
            **token_json(piece),
            "probability": record.probability,
            "model_probability": record.model_probability,
            "rank": record.rank,
        },
        "argmax": {**token_json(pieces(argmax)), "model_probability": record.candidate_probs[0]},
        "entropy_bits": record.entropy,
        "sampled_entropy_bits": record.sampled_entropy,
        "temperature": record.params.temperature,
        "top_k": record.params.top_k,
        "top_p": record.params.top_p,
        "top": [
            {**token_json(pieces(i)), "model_probability": p, "probability": sampled}
            for i, p, sampled in list(top)[:HISTORY_CANDIDATES]
        ],
    }


def history_json(figure: None, scope: Scope, pieces: Pieces) -> list[dict[str, Any]]:
    return [
        step_json(i + 1, piece, record, pieces)
        for i, (piece, record) in enumerate(zip(scope.history_pieces, scope.history, strict=True))
    ]


def chosen_index(scope: Scope) -> int:
    """Where the shown step's chosen token is among its candidates (0 with none)."""
    p = scope.step_prediction
    if p is None:
        return 0
    ids = [c.piece.token_id for c in p.candidates]
    return ids.index(p.chosen.token_id) if p.chosen.token_id in ids else 0


def shown_record(scope: Scope) -> SampleRecord | None:
    return scope.sampled[-1] if scope.sampled else None


def candidate_count(scope: Scope) -> int:
    p = scope.step_prediction
    return 1 if p is None else len(p.candidates)


def branch_at_cursor(scope: Scope, cursor: int) -> BranchAt | str:
    if scope.step_prediction is None:
        return "pick a generated step first: ← → move through them"
    candidate = scope.step_prediction.candidates[cursor]
    return BranchAt(scope.steps, candidate.piece.token_id)


SPEC = ScreenSpec(
    id="history",
    title="History",
    key="h",
    label="history",
    summary="history: every step kept; branch from one",
    render=render_history,
    about="every generation step: the text with the step shown reversed, what it chose (p, "
    "rank) against the argmax, where the query before it looked, and its candidates; "
    "the other views show that step too; enter puts the candidate under the cursor in "
    "the chosen one's place and generates the rest again",
    depends=lambda s: (),
    compute=None,
    json=history_json,
    keys=(
        Key("left", "←", "app.look(-1)", "step-", "previous step", True, "step"),
        Key("right", "→", "app.look(1)", "step+", "next step", True, "step"),
        Key("up", "↑", "cursor(-1)", "cand-", "candidate above", True, "token"),
        Key("down", "↓", "cursor(1)", "cand+", "candidate below", True, "token"),
        Key("enter", "enter", "enter", "branch", "branch: put it here, generate the rest", True),
    ),
    # The cursor starts on the token the shown step chose, whenever another step is shown.
    cursor=Cursor(count=candidate_count, start=chosen_index, anchor=shown_record),
    enter=branch_at_cursor,
)
