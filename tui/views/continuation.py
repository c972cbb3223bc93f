"""The continuation view: the prompt, then each generated token styled by the probability it
was sampled with, and where the generation stands."""

from __future__ import annotations

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text

from tui.session import Scope
from tui.text import visible
from tui.views.common import Drawn, no_run, packed, piece_text
from tui.views.style import BYTES, DIM, HEADING, SELECTED, percent

# Sampled probability bands; each band has a text attribute as well as a colour, so the
# bands stay apart in 16 colours and with NO_COLOR.
BANDS = (
    (0.5, Style(color="green", bold=True), "≥50%"),
    (0.1, Style(color="yellow"), "10-50%"),
    (0.0, Style(color="red", underline=True), "<10%"),
)
PROMPT_STYLE = Style(color="grey70")
REASONS = {
    "length": "stopped: length reached",
    "end-of-text": "stopped: <|endoftext|>",
    "context limit": "stopped: context full",
    "stopped": "stopped by esc",
}


def band_style(probability: float) -> Style:
    return next(style for floor, style, _ in BANDS if probability >= floor)


def status(scope: Scope, width: int) -> list[Text]:
    n_ctx = scope.info.config.n_ctx
    parts = [Text(f"step {scope.steps} · cache {scope.n_tokens}/{n_ctx}", HEADING)]
    if scope.state != "idle":
        parts.append(Text(f"{scope.state}…"))
    elif scope.finish is not None:
        parts.append(Text(REASONS.get(scope.finish, scope.finish)))
    elif scope.steps == 0:
        parts.append(Text("g generates, s steps", DIM))
    return packed(parts, width, " · ")


def legend(width: int) -> Text:
    """The bands, each written in its own style."""
    text = Text("sampled p: " if width >= 28 else "", DIM)
    for i, (_, style, name) in enumerate(BANDS):
        text.append(("  " if i else "") + name, style)
    return text


def token_texts(scope: Scope) -> list[tuple[str, Style, bool]]:
    """(visible text, style, ends a line) per token."""
    out = []
    for i, piece in enumerate(scope.pieces):
        record = scope.sampled_at(i)
        style = PROMPT_STYLE if record is None else band_style(record.probability)
        if piece.is_bytes:
            style = style + BYTES
        if i == scope.query:
            style = style + SELECTED
        # A token of nothing but spaces would be invisible in running text.
        only_spaces = piece.text is not None and piece.text.strip(" ") == "" and piece.text != ""
        text = piece.label if piece.is_bytes or only_spaces else visible(piece.text)
        out.append((text, style, piece.text is not None and piece.text.endswith("\n")))
    return out


def wrapped(tokens: list[tuple[str, Style, bool]], width: int, query: int | None) -> Drawn:
    """Greedy wrap at token boundaries; a token wider than the line is split by character."""
    drawn = Drawn([Text()])
    for i, (text, style, breaks) in enumerate(tokens):
        line = drawn.lines[-1]
        if line.cell_len and line.cell_len + cell_len(text) > width:
            drawn.add()
        if drawn.lines[-1].cell_len + cell_len(text) <= width:
            drawn.lines[-1].append(text, style)
        else:
            for char in text:
                if drawn.lines[-1].cell_len + cell_len(char) > width:
                    drawn.add()
                drawn.lines[-1].append(char, style)
        if i == query:
            drawn.focus = len(drawn.lines) - 1
        if breaks:
            drawn.add()
    return drawn


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
    body = wrapped(token_texts(scope), width, scope.query)
    head = [*status(scope, width), legend(width)]
    drawn = Drawn([*head, *body.lines], focus=body.focus + len(head), pinned=len(head))
    room = height - len(drawn.lines) - 1
    if room >= 3:
        drawn.add()
        drawn.lines += steps_table(scope, room, width)
    for line in drawn.lines:
        line.truncate(width)
    return drawn
