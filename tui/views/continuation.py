"""The continuation view: the prompt, then each generated token styled by the probability it
was sampled with, and where the generation stands."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text

from gpt2scope.engine import FinishReason, SampleRecord, State
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import MARK_BASE, Piece, running_texts, token_json
from gpt2scope.tui.views.common import Drawn, Lines, longest_fitting, no_run, packed, piece_text
from gpt2scope.tui.views.spec import PaneSpec
from gpt2scope.tui.views.style import BYTES, DIM, HEADING, SELECTED, percent

# Sampled probability bands; each band has a text attribute as well as a colour, so the
# bands stay apart in 16 colours and with NO_COLOR.
BANDS = (
    (0.5, Style(color="green", bold=True), "≥50%"),
    (0.1, Style(color="yellow"), "10-50%"),
    (0.0, Style(color="red", underline=True), "<10%"),
)
PROMPT_STYLE = Style(color="grey70")
REASONS = {
    FinishReason.LENGTH: "done",  # every token asked for: `length` after g, one after s
    FinishReason.END_OF_TEXT: "stopped: <|endoftext|>",
    FinishReason.CONTEXT_LIMIT: "stopped: context full",
    FinishReason.STOPPED: "stopped by esc",
}


def band_style(probability: float) -> Style:
    return next(style for floor, style, _ in BANDS if probability >= floor)


def status(scope: Scope, width: int) -> list[Text]:
    n_ctx = scope.info.config.n_ctx
    parts = [Text(f"step {scope.steps} · cache {scope.n_tokens}/{n_ctx}", HEADING)]
    if scope.state != State.IDLE:
        parts.append(Text(f"{scope.state}…"))
    elif scope.finish is not None and not scope.looking_back:  # why the newest step ended
        parts.append(Text(REASONS[scope.finish]))
    elif scope.steps == 0:
        parts.append(Text("g generates, s steps", DIM))
    return packed(parts, width, " · ")


def legend(width: int) -> Text:
    """The bands, each written in its own style."""
    bands = Text()
    for i, (_, style, name) in enumerate(BANDS):
        bands.append(("  " if i else "") + name, style)
    return Text(longest_fitting(("sampled p: ", ""), width - bands.cell_len), DIM) + bands


@dataclass(frozen=True)
class Wrapped:
    """Tokens as running text wrapped at token boundaries, a token wider than the line split
    by character: each line's (token index, text) parts, and the line each token ends on.
    A line's Text is made only when it is drawn: a pane shows a dozen lines of hundreds."""

    rows: list[list[tuple[int, str]]]
    line_of: list[int]
    undecoded: set[int]  # tokens shown as their bytes

    def line(self, i: int, style_of: Callable[[int], Style]) -> Text:
        text = Text()
        for token, part in self.rows[i]:
            if not text and part and cell_len(part[0]) == 0:
                part = MARK_BASE + part  # a combining mark first would fuse with the border
            text.append(part, style_of(token))
        return text


def wrap(pieces: Sequence[Piece], width: int) -> Wrapped:
    rows: list[list[tuple[int, str]]] = [[]]
    line_of = []
    used = 0
    texts = running_texts(pieces)
    undecoded = {i for i, text in enumerate(texts) if text is None}
    for i, piece in enumerate(pieces):
        text = piece.label if texts[i] is None else texts[i]
        size = cell_len(text)
        if used and used + size > width:
            rows.append([])
            used = 0
        if used + size <= width:
            rows[-1].append((i, text))
            used += size
        else:
            for char in text:
                if used and used + cell_len(char) > width:
                    rows.append([])
                    used = 0
                rows[-1].append((i, char))
                used += cell_len(char)
        line_of.append(len(rows) - 1)
        if piece.ends_line:
            rows.append([])
            used = 0
    return Wrapped(rows, line_of, undecoded)


def token_style(scope: Scope, i: int, undecoded: set[int]) -> Style:
    """Token i's style in running text: the prompt's, or the band of the probability it was
    sampled with; raw bytes and the selected query marked as well."""
    record = scope.sampled_at(i)
    style = PROMPT_STYLE if record is None else band_style(record.probability)
    if i in undecoded:
        style = style + BYTES
    if i == scope.query:
        style = style + SELECTED
    return style


def steps_table(scope: Scope, rows: int, width: int) -> list[Text]:
    """The latest generated tokens, one per line: step, token, p sampled, model's rank."""
    if rows < 2 or not scope.sampled:
        return []
    shown = min(rows - 1, scope.steps)
    label_width = max(4, min(20, width - 22))
    lines = [Text("step " + "token".ljust(label_width) + "      p  rank", DIM)]
    for i in range(scope.steps - shown, scope.steps):
        record = scope.sampled[i]
        line = Text(f"{i + 1:>4} ", DIM)
        line.append_text(piece_text(scope.pieces[scope.prompt_length + i], label_width, pad=True))
        line.append(f" {percent(record.probability)}", band_style(record.probability))
        line.append(f" {record.rank:>5}", DIM)
        lines.append(line)
    return lines


def render_continuation(scope: Scope, width: int, height: int) -> Drawn:
    if not scope.pieces:
        return no_run(width)
    body = wrap(scope.pieces, width)
    head = [*status(scope, width), legend(width)]
    tail: list[Text] = []
    room = height - len(head) - len(body.rows) - 1
    if room >= 3:
        tail = [Text(), *steps_table(scope, room, width)]

    def draw(i: int) -> Text:
        if i < len(head):
            line = head[i]
        elif i < len(head) + len(body.rows):
            line = body.line(i - len(head), lambda token: token_style(scope, token, body.undecoded))
        else:
            line = tail[i - len(head) - len(body.rows)]
        line.truncate(width)
        return line

    lines = Lines(draw, range(len(head) + len(body.rows) + len(tail)))
    return Drawn(lines, focus=body.line_of[scope.query] + len(head), pinned=len(head))


def on_run(scope: Scope) -> tuple:
    return id(scope.view), scope.query, scope.state, scope.finish


def record_json(record: SampleRecord) -> dict[str, Any]:
    return {
        "probability": record.probability,
        "model_probability": record.model_probability,
        "rank": record.rank,
    }


def continuation_json(scope: Scope) -> dict[str, Any]:
    return {
        "continuation": [
            {**token_json(scope.pieces[scope.prompt_length + i]), **record_json(r)}
            for i, r in enumerate(scope.sampled)
        ],
        "finish": scope.finish,
    }


SPEC = PaneSpec(
    id="continuation",
    title="Continuation",
    render=render_continuation,
    about="the prompt, then each generated token styled by the probability it was sampled with "
    "(bold green ≥50%, orange 10-50%, underlined red <10%); step count, cache length, "
    "why it stopped",
    depends=on_run,
    json=continuation_json,
    caption=(
        "the text so far: the prompt, then each generated token coloured by its probability",
        "the prompt, then the generated tokens by probability",
        "the text, coloured by p",
        "the text",
    ),
)
