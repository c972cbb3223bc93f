"""Every message the app's parts post to each other. Textual calls a message's handler
`on_` + its class name in snake case: `EngineEvent` reaches `on_engine_event`."""

from __future__ import annotations

from textual.message import Message

from gpt2scope.engine import Model
from gpt2scope.engine.runner import Event
from gpt2scope.tui.session import ModelInfo


class EngineEvent(Message):
    """A runner event, carried from the worker thread to the UI thread; `generation` tells
    the events of a runner replaced by a model switch from those of the current one."""

    def __init__(self, event: Event, generation: int) -> None:
        super().__init__()
        self.event = event
        self.generation = generation


class PromptLeft(Message):
    """The user left the prompt editor without running the prompt, for the panes (`to`
    None) or for the next or previous widget in the focus chain."""

    def __init__(self, to: str | None) -> None:
        super().__init__()
        self.to = to


class Branch(Message):
    """From the history screen: put `token_id` at generated step `step` and generate the
    rest again."""

    def __init__(self, step: int, token_id: int) -> None:
        super().__init__()
        self.step, self.token_id = step, token_id


class FetchProgress(Message):
    """From the download thread: `done` bytes of `file` so far, of `total` if known."""

    def __init__(self, file: str, done: int, total: int | None) -> None:
        super().__init__()
        self.file, self.done, self.total = file, done, total


class FetchFailed(Message):
    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class Fetched(Message):
    """GPT-2 small is in the cache and loaded."""

    def __init__(self, model: Model, info: ModelInfo) -> None:
        super().__init__()
        self.model, self.info = model, info
