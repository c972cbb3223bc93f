"""The offer made for a prompt longer than the model's context: run its last n_ctx tokens."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from gpt2scope.tui.widgets import LeanFooter


class KeepTailScreen(ModalScreen[bool]):
    """Says how long the prompt is and the limit; dismissed with True to keep the tail."""

    BINDINGS = [
        Binding("y,enter", "answer(True)", "keep the tail", key_display="y"),
        Binding("n,escape", "answer(False)", "cancel", key_display="n"),
    ]

    def __init__(self, n_tokens: int, n_ctx: int) -> None:
        super().__init__()
        self.n_tokens = n_tokens
        self.n_ctx = n_ctx

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"The prompt is {self.n_tokens} tokens; the model's context is {self.n_ctx}.",
                markup=False,
            )
            yield Static(f"Run its last {self.n_ctx} tokens instead?", markup=False)
            yield Static(
                f"y / enter: keep the last {self.n_ctx} · n / esc: cancel",
                classes="keys",
                markup=False,
            )
        yield LeanFooter()

    def action_answer(self, keep: bool) -> None:
        self.dismiss(keep)
