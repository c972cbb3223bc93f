"""Getting GPT-2 small from inside the app, while it runs the demo model: huggingface_hub's
download on a worker thread, a progress bar here, esc to cancel. The thread posts what
happens as messages; the app switches to GPT-2 small once it is downloaded and loaded."""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from rich.filesize import decimal
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import ProgressBar, Static

from gpt2scope.tui.messages import Fetched, FetchFailed, FetchProgress
from gpt2scope.tui.models import OpenError, open_model
from gpt2scope.tui.widgets import LeanFooter
from gpt2scope.weights import DownloadCancelled, download
from gpt2scope.weights.hub import hub_model

GPT2_SMALL = "gpt2"


def fetch_gpt2(
    post: Callable[[FetchProgress | Fetched | FetchFailed], object],
    cancel: threading.Event,
    device: str,
    dtype: torch.dtype,
) -> None:
    """On a worker thread: download GPT-2 small, load it onto `device` with its weights held
    in `dtype`, and post the outcome. After a cancel it posts nothing: the dialog is gone,
    and nothing partial is ever loaded."""

    def progress(file: str, done: int, total: int | None) -> None:
        post(FetchProgress(file, done, total))

    try:
        download(GPT2_SMALL, progress=False, cancel=cancel, on_progress=progress)
        if not cancel.is_set():
            post(Fetched(*open_model(GPT2_SMALL, device, dtype)))
    except DownloadCancelled:
        pass
    except OpenError as e:
        if not cancel.is_set():
            post(FetchFailed(str(e)))


class DownloadScreen(ModalScreen[None]):
    """The download's progress; esc cancels it and closes the dialog at once."""

    # The app's own keys are off while the dialog is up; quit still works, so it is listed.
    BINDINGS = [
        Binding("escape", "cancel", "cancel", key_display="esc"),
        Binding("q", "app.quit", "quit"),
    ]

    def __init__(self, cancel: threading.Event) -> None:
        super().__init__()
        self.cancel = cancel

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"Downloading GPT-2 small ({hub_model(GPT2_SMALL).repo_id}) into the "
                "Hugging Face cache",
                markup=False,
            )
            yield ProgressBar(total=None, show_eta=False)
            yield Static(
                "connecting to the Hugging Face hub (with no network it gives up after about "
                "half a minute)",
                id="file",
                markup=False,
            )
            yield Static(
                "esc: cancel · when it is done the app switches to GPT-2 small",
                classes="keys",
                markup=False,
            )
        yield LeanFooter()

    def show_progress(self, file: str, done: int, total: int | None) -> None:
        self.query_one(ProgressBar).update(total=total, progress=done)
        of_total = f" of {decimal(total)}" if total else ""
        self.query_one("#file", Static).update(f"{file}: {decimal(done)}{of_total}")

    def action_cancel(self) -> None:
        self.cancel.set()
        self.dismiss(None)
