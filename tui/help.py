"""The help screen: every key, and what each view's numbers mean."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from gpt2scope.tui.keys import BUILT_IN, KEYS
from gpt2scope.tui.views import PANES, SCREENS
from gpt2scope.tui.views import patching as patching_view
from gpt2scope.tui.widgets import LeanFooter

INTRO = (
    "gpt2scope runs GPT-2 in a background thread and shows what happens inside it. "
    "Layers and heads are 0-based, as GPT-2's own h.0 … h.11. The query token is the one "
    "whose attention row the Attention, Query and Q/K/V panes show; by default the last."
)


def keys_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for key in KEYS:
        table.add_row(key.shown, key.help)
    for shown, text in BUILT_IN:
        table.add_row(shown, text)
    return table


def panes_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for pane in PANES:
        table.add_row(pane.title, Text(pane.about))
    return table


def screens_table() -> Table:
    """Key, name, what the numbers mean, and each screen's own keys."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for screen in SCREENS:
        text = Text.assemble((screen.title, "bold"), f": {screen.about}.")
        if screen.keys:
            text.append("\n" + " · ".join(f"{k.shown} {k.help}" for k in screen.keys), "italic")
        table.add_row(screen.key, text)
    text = Text.assemble(("Patching", "bold"), f": {patching_view.ABOUT}.")
    text.append("\n" + " · ".join(f"{k.shown} {k.help}" for k in patching_view.KEYS), "italic")
    table.add_row(patching_view.OPENER.key, text)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "close help", key_display="esc"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(Text("Keys", style="bold underline"))
            yield Static(keys_table())
            yield Static(Text("\nViews", style="bold underline"))
            yield Static(panes_table())
            yield Static(Text("\nScreens", style="bold underline"))
            yield Static(screens_table())
            yield Static(Text("\n" + INTRO, style="italic"))
            yield Static(Text("\nesc, ? or q closes this screen", style="dim"))
        yield LeanFooter()

    def on_mount(self) -> None:
        self.query_one("#help").border_title = "Help"
        self.query_one("#help").focus()
