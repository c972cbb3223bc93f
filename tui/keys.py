"""Every key of the app, in one table: the bindings, the footer, the command palette, the help
screen and `gpt2scope --help` are all made from it. The keys that open the deeper screens,
and the screens' own keys, come from the screens' specs."""

from __future__ import annotations

from textual.binding import Binding

from gpt2scope.tui.views import SCREENS, Key
from gpt2scope.tui.views import patching as patching_view

KEYS = (
    Key("left_square_bracket", "[", "layer(-1)", "layer-", "previous layer"),
    Key("right_square_bracket", "]", "layer(1)", "layer+", "next layer"),
    Key("comma", ",", "head(-1)", "head-", "previous head"),
    Key("full_stop", ".", "head(1)", "head+", "next head"),
    Key("left", "←", "query(-1)", "query-", "query token: one to the left"),
    Key("right", "→", "query(1)", "query+", "query token: one to the right (past the end: last)"),
    Key("home", "home", "query_to(0)", "first query", "query token: the first"),
    Key("end", "end", "query_to(-1)", "last query", "query token: the last (and follow it)"),
    Key("left_curly_bracket", "{", "layer_to(0)", "first layer", "first layer"),
    Key("right_curly_bracket", "}", "layer_to(-1)", "last layer", "last layer"),
    Key("i", "i", "captions", "captions", "captions: one line on each pane says what it shows"),
    Key("v", "v", "maps", "q/k/v maps", "Attention: the q, k, v maps beside the pattern, or not"),
    Key("C", "C", "class_layout", "class layout", "class layout: four big panes, or all six"),
    Key("p", "p", "edit_prompt", "prompt", "edit the prompt: enter runs it, esc leaves it", True),
    Key("g", "g", "generate", "generate", "generate tokens, as many as the length (n N)", True),
    Key("s", "s", "step", "step", "generate one token", True),
    Key("escape", "esc", "stop", "stop", "stop generating", True),
    Key("t", "t", "temperature(-1)", "temp-", "temperature down"),
    Key("T", "T", "temperature(1)", "temp+", "temperature up"),
    Key("k", "k", "top_k(-1)", "top-k-", "top-k down (smaller cut)"),
    Key("K", "K", "top_k(1)", "top-k+", "top-k up (up to off)"),
    Key("u", "u", "top_p(-1)", "top-p-", "top-p down"),
    Key("U", "U", "top_p(1)", "top-p+", "top-p up (1 = off)"),
    Key("n", "n", "length(-1)", "length-", "length down: tokens per g"),
    Key("N", "N", "length(1)", "length+", "length up: tokens per g"),
    Key("r", "r", "new_seed", "seed", "new seed (the next prompt or token draws from it)"),
    Key("B", "B", "bos", "bos", "<|endoftext|> first, or not; runs the prompt again"),
    Key(
        "w",
        "w",
        "toggle('value_weighted')",
        "weights/norms",
        "Attention, Query and the map: attention weights or value-weighted norms",
    ),
    Key("z", "z", "zoom", "zoom", "zoom the focused pane to full screen and back", True),
    *(screen.opener for screen in SCREENS),
    patching_view.OPENER,
    Key("o", "o", "knock_out", "knock out", "knock out the selected head, or bring it back"),
    Key("M", "M", "knock_out_mlp", "knock out mlp", "knock out the selected layer's MLP, or not"),
    Key("O", "O", "restore", "restore", "bring back every knocked-out head and MLP"),
    Key("A", "A", "ablation_mode", "zero/mean", "knock-outs: z set to 0, or to its mean"),
    Key("less_than_sign", "<", "look(-1)", "step-", "history: every view shows the step before"),
    Key("greater_than_sign", ">", "look(1)", "step+", "history: every view shows the step after"),
    Key("f", "f", "follow", "live", "follow the run again: show its newest step"),
    Key("e", "e", "export", "export", "export the screen (SVG) and the run (JSON) to ./"),
    Key("D", "D", "download", "download", "download GPT-2 small and switch to it (on the demo)"),
    Key("L", "L", "lessons", "lessons", "lessons: predict first, then see the model's numbers"),
    Key("1", "0-9", "lesson_answer(1)", "answer", "in a lesson: a choice, or start a number"),
    Key("space", "space", "lesson_next", "next", "in a lesson: the next step", True),
    Key("X", "X", "lesson_leave", "leave lesson", "leave the lesson"),
    Key("question_mark", "?", "help", "help", "help screen: every key and view", True),
    Key("q", "q", "quit", "quit", "quit", True),
)
# The lesson's other answer keys, listed above as 0-9.
LESSON_DIGITS = [
    Binding(str(n), f"lesson_answer({n})", "answer", show=False) for n in (0, *range(2, 10))
]
# On a deeper screen, on top of its own keys; the same key or esc goes back.
BACK = Key("escape", "esc", "dismiss", "back", "back to the panes", True)
# Keys Textual already provides, listed for completeness.
BUILT_IN = (
    ("tab / shift+tab", "cycle focus between the prompt and the panes"),
    ("↑ ↓ pgup pgdn", "scroll the focused pane; in Attention, ↑ ↓ move the query"),
    ("ctrl+home ctrl+end", "scroll the focused pane to its top or bottom"),
    ("ctrl+p", "command palette: every key above by name"),
)

LADDERS = {
    "temperature": (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0),
    "top_k": (1, 2, 3, 4, 5, 8, 10, 20, 40, 50, 100, 200, 500, 1000, 0),  # 0 = off, last
    "top_p": (0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
    "length": (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 256, 512, 1024),
}


def next_on_ladder(name: str, value: float, direction: int) -> float:
    """The next rung above (direction 1) or below (-1) `value`, which need not be a rung;
    stays put at either end. top-k's 0 (off) counts as its top rung."""
    rungs = LADDERS[name]
    position = (lambda v: float("inf") if v == 0 else v) if name == "top_k" else float
    current = position(value)
    if direction > 0:
        above = [r for r in rungs if position(r) > current]
        return above[0] if above else value
    below = [r for r in rungs if position(r) < current]
    return below[-1] if below else value


def bindings(keys: tuple[Key, ...] = KEYS) -> list[Binding]:
    return [
        Binding(
            k.key,
            k.action,
            k.label,
            show=k.footer,
            key_display=k.shown,
            group=Binding.Group(k.group, compact=True) if k.group else None,
        )
        for k in keys
    ]


def keys_help() -> str:
    """The key list as plain text, two columns, for `gpt2scope --help`."""
    rows = [(k.shown, k.help) for k in KEYS] + list(BUILT_IN)
    width = max(len(shown) for shown, _ in rows)
    text = "keys:\n" + "\n".join(f"  {shown:<{width}}  {text}" for shown, text in rows) + "\n"
    text += "in the screens these open (the same key or esc goes back):\n"
    for screen in SCREENS:
        if screen.keys:
            own = ", ".join(f"{k.shown} {k.help}" for k in screen.keys)
            text += f"  {screen.key}  {own}\n"
    own = ", ".join(f"{k.shown} {k.help}" for k in patching_view.KEYS)
    text += f"  {patching_view.OPENER.key}  {own}\n"
    return text


def keys_markdown() -> str:
    """Every key as Markdown tables, for docs/keys.md (`python -m tools.write_docs`)."""

    def table(rows: list[tuple[str, str]]) -> str:
        # A bare | would end the cell (<|endoftext|>).
        lines = [f"| `{shown}` | {text.replace('|', chr(92) + '|')} |" for shown, text in rows]
        return "| key | does |\n|---|---|\n" + "\n".join(lines) + "\n"

    text = (
        "<!-- Written by `python -m tools.write_docs` from tui/keys.py: edit those, not this. -->\n"
        "# Keys\n\nThe main screen's keys, as `?` and `gpt2scope --help` list them; the deeper "
        "screens add their own, below.\n\n"
    )
    text += table([(k.shown, k.help) for k in KEYS] + list(BUILT_IN))
    bare = []
    for screen in SCREENS:
        if screen.keys:
            text += f"\n## The screen `{screen.key}` opens\n\n{screen.summary}; `esc` or "
            text += f"`{screen.key}` goes back.\n\n"
            text += table([(k.shown, k.help) for k in screen.keys])
        else:
            bare.append(f"`{screen.key}`")
    text += f"\n## The screen `{patching_view.OPENER.key}` opens\n\n"
    text += f"{patching_view.OPENER.help}; `esc` or `P` goes back.\n\n"
    text += table([(k.shown, k.help) for k in patching_view.KEYS])
    if bare:
        text += f"\nThe screens {' and '.join(bare)} open have no keys of their own.\n"
    return text
