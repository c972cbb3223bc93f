"""The status line: which model, which head, which token, the sampling settings, the state."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

from gpt2scope.engine import State
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import visible
from gpt2scope.tui.views.common import packed, piece_text
from gpt2scope.tui.views.style import DIM, SELECTED

STATE_STYLES = {
    State.IDLE: Style(color="green"),
    State.PREFILLING: Style(color="yellow", bold=True),
    State.GENERATING: Style(color="cyan", bold=True),
}
DEMO_NOTE = (
    "demo model: a tiny GPT-2 trained for this app, not OpenAI's GPT-2; "
    "D downloads GPT-2 small and switches to it (or run gpt2scope download)"
)
DEMO_NOTE_SHORT = "demo model, not GPT-2 · D: download GPT-2 small"
# for inspect's text, where there is no D key
DEMO_NOTE_PRINTED = "demo model, not OpenAI's GPT-2: gpt2scope download fetches GPT-2 small"
LOOKING_BACK = Style(color="black", bgcolor="yellow", bold=True)
KNOCKED_OUT = Style(color="black", bgcolor="magenta", bold=True)


def model_label(scope: Scope) -> Text:
    info = scope.info
    # float32 is what a model is unless told otherwise; half precision changes its numbers.
    held = "" if info.dtype == "float32" else f" · {info.dtype}"
    return Text.assemble(
        (visible(info.name), "bold"), f" {info.size} ({info.origin}) on {info.device}{held}"
    )


def query_label(scope: Scope, width: int) -> Text:
    piece = scope.query_piece
    if piece is None:
        return Text("query -")
    label = Text(f"query {scope.query} ")
    label.append_text(piece_text(piece, piece_width(width), style=SELECTED))
    label.append(following(scope), DIM)
    return label


FOLLOWING = " (last)"


def following(scope: Scope) -> str:
    return FOLLOWING if scope.settings.query is None else ""


def piece_width(width: int) -> int:
    return max(6, width // 8)


def sampling_label(scope: Scope, compact: bool = False) -> Text:
    s = scope.settings
    p = s.params
    length, gap = ("len", " ") if compact else ("length", " · ")
    return Text(
        f"T {p.temperature:.2f} k {p.top_k or 'off'} p {p.top_p:.2f}{gap}"
        f"{length} {s.length}{gap}seed {s.seed}" + (f"{gap}bos" if s.bos else "")
    )


def history_label(scope: Scope) -> list[Text]:
    """When the views show a past step, say so first: every number on screen is from then."""
    if not scope.looking_back:
        return []
    return [Text(f"◂ step {scope.steps} of {len(scope.history)} · f: live", LOOKING_BACK)]


def ablation_label(scope: Scope) -> list[Text]:
    """While anything is knocked out or patched, say what and how: every number on screen
    is from the model without them, or from the patched run."""
    a, view = scope.ablation, scope.view
    labels = [] if a.empty else [Text(f"off: {a.label()} · {a.mode}", KNOCKED_OUT)]
    if view is not None and view.patch:
        labels.append(Text(f"patched: {view.patch}", KNOCKED_OUT))
    return labels


MOST_LINES = 2  # of the status line at 80 columns, while a patch or knock-out is shown too


def render_header(scope: Scope, width: int, live: bool = True) -> list[Text]:
    """The app's status line; not `live`, for printing, without the runner's state. The
    sampling settings are said shorter where the line would take more than two lines."""
    lines = status_lines(scope, width, live, compact=False)
    if len(lines) > MOST_LINES:
        lines = status_lines(scope, width, live, compact=True)
    if scope.info.is_demo:
        note = DEMO_NOTE if len(DEMO_NOTE) <= width else DEMO_NOTE_SHORT
        note = note if live else DEMO_NOTE_PRINTED
        lines += packed([Text(note, Style(color="yellow"))], width)
    return lines


def status_lines(scope: Scope, width: int, live: bool, compact: bool) -> list[Text]:
    s, c = scope.settings, scope.info.config
    # Each part with the most cells it can take while a run goes on (0: its own width), so
    # the line breaks, and with them the panes' layout, stay put from one token to the next.
    laid_out = [
        *([(Text("gpt2scope", "bold"), 0)] if width >= 100 else []),
        *((part, 0) for part in history_label(scope)),
        (model_label(scope), 0),
        (Text(f"L{s.layer} H{s.head}", "bold"), len(f"L{c.n_layer - 1} H{c.n_head - 1}")),
        *((part, 0) for part in ablation_label(scope)),
        (
            query_label(scope, width),
            # with room for " (last)" either way: moving the query must not move the breaks
            len(f"query {c.n_ctx - 1} ") + piece_width(width) + len(FOLLOWING),
        ),
        (sampling_label(scope, compact), 0),
    ]
    if live:
        state = Text("● " + scope.state, STATE_STYLES[scope.state])
        laid_out.append((state, max(len("● " + name) for name in STATE_STYLES)))
    parts, room = zip(*laid_out, strict=True)
    return packed(list(parts), width, room=room)
