"""The patching screen (key P): a clean and a corrupted prompt, and maps of how much of the
clean logit difference each activation copied from the clean run brings back (drawn by
tui/views/patching.py). The estimate fills every map at once; a worker thread then
computes the exact cells a layer at a time, the selected map first, each row posted to the
UI thread as it is done; esc cancels it and the keys never wait on it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import ActiveBinding, Binding
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Input, Label

from gpt2scope.engine.patching import SITES, Pair, Patch
from gpt2scope.engine.patching import estimate as estimate_maps
from gpt2scope.engine.patching import sweep as exact_row_by_row
from gpt2scope.tui.keys import bindings
from gpt2scope.tui.screens import off_the_footer
from gpt2scope.tui.session import Scope
from gpt2scope.tui.text import clip, editable, from_editable, visible
from gpt2scope.tui.views import PaneSpec
from gpt2scope.tui.views.common import Drawn
from gpt2scope.tui.views.patching import (
    ABOUT,
    EXAMPLES,
    KEYS,
    MODES,
    Applied,
    Patching,
    applied,
    length_refusal,
    pair_of,
    patching,
    render_patching,
)
from gpt2scope.tui.views.style import NOTE, WARNING
from gpt2scope.tui.widgets import ClippedInput, LeanFooter, Pane, StatusLine


def render_state(state: Patching | str | None, width: int, height: int) -> Drawn:
    if isinstance(state, Patching):
        return render_patching(state, width, height)
    return Drawn([Text(clip(state or "", width), NOTE)])


@dataclass(frozen=True, eq=False)
class Left:
    """The screen as the user left it (the app keeps it): P opens it so again, patch and
    all, while the panes still show the prompt it was left on."""

    prompt: str  # the app's prompt when the screen was left
    prompts: tuple[str, str]  # the pair shown: clean, corrupted
    state: Patching
    example: int


class PatchSheet(Pane, inherit_bindings=False):
    """The maps; scrolls by the page when the layers outgrow the screen (the arrows move
    the cell cursor)."""

    SCROLL_HINTS = (" (pgup pgdn)", "")
    BINDINGS = [
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
    ]
    scope: reactive[Patching | str | None] = reactive(None, repaint=False)

    def __init__(self) -> None:
        super().__init__(PaneSpec("patching", "Patching", render_state, ABOUT, lambda s: (id(s),)))

    def watch_scope(self, old: object, new: object) -> None:
        self.refresh()


class PatchingScreen(Screen[None]):
    """Both prompts, the maps and the cursor's cell; see tui/views/patching.py."""

    BINDINGS = [*bindings(KEYS)]
    CSS = """
    PatchingScreen #prompts { height: 2; }
    PatchingScreen .prompt-row { height: 1; }
    PatchingScreen .prompt-row Label { width: 10; }
    PatchingScreen Input { width: 1fr; }
    PatchingScreen #refusal { width: 1fr; height: 1; display: none; }
    PatchingScreen #refusal.shown { display: block; }
    """

    scope: reactive[Scope | None] = reactive(None, repaint=False)  # the app's, for the status
    state: reactive[Patching | str | None] = reactive(None, repaint=False)

    def __init__(self) -> None:
        super().__init__(name="patching")
        self._job = 0
        self._cancel: threading.Event | None = None
        self._example = -1
        self._applying = 0
        self._prompts = ("", "")  # the texts of the pair shown: clean, corrupted

    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        return off_the_footer(self, super().active_bindings)

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status").data_bind(PatchingScreen.scope)
        clean, corrupt = self.first_prompts()
        with Horizontal(classes="prompt-row"):
            yield Label("clean ›")
            yield ClippedInput(editable(clean), compact=True, id="clean")
        with Horizontal(classes="prompt-row"):
            yield Label("corrupt ›")
            yield ClippedInput(editable(corrupt), compact=True, id="corrupt")
        # Under the editors, where the user who just pressed enter is looking.
        yield Label("", id="refusal", markup=False)
        yield PatchSheet().data_bind(scope=PatchingScreen.state)
        # ctrl+p still opens the palette: its label would push the screen's keys off
        yield LeanFooter(show_command_palette=False)

    def first_prompts(self) -> tuple[str, str]:
        """The app's prompt, and as the corrupted one an example's if the prompt is one,
        else the prompt itself, for the user to change a word of."""
        left = self.left()
        if left is not None:
            return left.prompts
        if self.app.patched_prompts is not None:
            return self.app.patched_prompts
        scope = self.app.scope
        clean = scope.prompt if scope is not None and scope.prompt.strip() else EXAMPLES[0].clean
        for i, example in enumerate(EXAMPLES):
            if example.clean == clean:
                self._example = i
                return clean, example.corrupt
        return clean, clean

    def left(self) -> Left | None:
        """The screen as it was left, if it still fits: the same prompt in the panes, and the
        same model and tokens (D switches the model, B the <|endoftext|>)."""
        left, session = self.app.patching_left, self.app.session
        if left is None or left.prompt != session.prompt:
            return None
        clean = left.state.pair.clean
        ids = session.pieces.tokenizer.encode(left.prompts[0], session.settings.bos)
        if clean.params is not self.app.model.params or clean.tokens != tuple(ids):
            return None
        return left

    def on_mount(self) -> None:
        self.watch(self.app, "scope", self.follow)
        self.query_one(PatchSheet).focus()
        left = self.left()
        if left is not None:
            self.reopen(left)
            return
        example = EXAMPLES[self._example] if self._example >= 0 else None
        self.measure(*((example.answer, example.contrast) if example else ()))

    @property
    def computing(self) -> bool:
        """A sweep or an applied patch is still being worked out."""
        return self._cancel is not None or self._applying > 0

    def follow(self, scope: Scope | None) -> None:
        self.scope = scope

    def reopen(self, left: Left) -> None:
        """As it was left; the patch only if the panes still show it."""
        self._prompts, self._example = left.prompts, left.example
        shown = self.app.patched_prompts == left.prompts
        self.state = left.state if shown else replace(left.state, applied=None)

    def on_unmount(self) -> None:
        self.cancel_sweep()
        if isinstance(self.state, Patching):
            state = replace(self.state, running=False, note="")
            left = Left(self.app.session.prompt, self._prompts, state, self._example)
            self.app.patching_left = left

    # The prompts and the answer.

    def on_input_submitted(self, message: Input.Submitted) -> None:
        """New prompts, the same answer and contrast (d goes back to the runs' own); a pair
        of another length is refused under the editors, the focus left in the one edited."""
        message.stop()
        lengths = self.lengths()
        if lengths[0] != lengths[1]:
            self.refuse(length_refusal(*lengths))
            return
        self.query_one(PatchSheet).focus()
        self.action_rerun()

    def lengths(self) -> tuple[int, int]:
        tokenizer, bos = self.app.session.pieces.tokenizer, self.app.session.settings.bos
        texts = (from_editable(self.query_one(f"#{w}", Input).value) for w in ("clean", "corrupt"))
        n_clean, n_corrupt = (len(tokenizer.encode(text, bos)) for text in texts)
        return n_clean, n_corrupt

    def refuse(self, reason: str) -> None:
        """One line under the editors; it goes once a pair is shown or the edit is undone."""
        line = self.query_one("#refusal", Label)
        line.update(Text(f"✗ {reason}", WARNING) if reason else "")
        line.set_class(bool(reason), "shown")

    def put_back(self) -> None:
        """The editors hold the pair shown again."""
        if self._prompts != ("", ""):
            for which, text in zip(("clean", "corrupt"), self._prompts, strict=True):
                self.query_one(f"#{which}", Input).value = editable(text)
        self.refuse("")

    def action_defaults(self) -> None:
        self.measure()

    def action_edit(self, which: str) -> None:
        self.query_one(f"#{which}", Input).focus()

    def action_example(self) -> None:
        self._example = (self._example + 1) % len(EXAMPLES)
        example = EXAMPLES[self._example]
        self.query_one("#clean", Input).value = example.clean
        self.query_one("#corrupt", Input).value = example.corrupt
        self.measure(example.answer, example.contrast)

    def action_swap(self) -> None:
        if isinstance(self.state, Patching):
            pair = self.state.pair
            self.measure(pair.contrast, pair.answer)

    def measure(self, answer: str | int | None = None, contrast: str | int | None = None) -> None:
        """Run both prompts and compute the maps, in a worker; what was shown stays until the
        new pair is ready, and stays for good when the new prompts cannot be patched."""
        self.cancel_sweep()
        self._job += 1
        self._cancel = cancel = threading.Event()
        clean = from_editable(self.query_one("#clean", Input).value)
        corrupt = from_editable(self.query_one("#corrupt", Input).value)
        if isinstance(self.state, Patching):
            self.state = replace(self.state, note="computing…")
        else:
            self.state = "computing…"
        job = self._job
        self.run_worker(
            lambda: self.compute(job, clean, corrupt, answer, contrast, cancel),
            thread=True,
            group="patching",
            exit_on_error=False,
        )

    def compute(
        self,
        job: int,
        clean: str,
        corrupt: str,
        answer: str | int | None,
        contrast: str | int | None,
        cancel: threading.Event,
    ) -> None:
        """On a worker thread: the pair and the estimate, then the exact rows."""
        app = self.app
        try:
            pair = self.pair_for(clean, corrupt, answer, contrast)
            current = self.state.site if isinstance(self.state, Patching) else SITES[0]
            empty = {site: [[]] * pair.clean.config.n_layer for site in SITES}
            shown = patching(
                pair,
                app.session.pieces,
                estimate_maps(pair),
                exact=empty,
                site=current,
                running=True,
            )
            app.call_from_thread(self.arrived, job, shown, (clean, corrupt))
            for site in [current, *(s for s in SITES if s != current)]:
                if cancel.is_set():
                    break

                def on_row(layer: int, row: list[float], site: str = site) -> None:
                    app.call_from_thread(self.exact_row, job, site, layer, row)

                exact_row_by_row(pair, site, on_row, cancel.is_set)
        except Exception as e:  # said in one line; what was shown stays
            app.call_from_thread(self.refused, job, visible(str(e)))
            return
        app.call_from_thread(self.finished, job)

    def pair_for(
        self, clean: str, corrupt: str, answer: str | int | None, contrast: str | int | None
    ) -> Pair:
        session, model = self.app.session, self.app.model
        tokenizer, bos = session.pieces.tokenizer, session.settings.bos
        ids = [tokenizer.encode(text, bos) for text in (clean, corrupt)]
        chosen = [tokenizer.encode(t)[0] if isinstance(t, str) else t for t in (answer, contrast)]
        return pair_of(model.config, model.params, *ids, session.pieces, *chosen)

    def refused(self, job: int, reason: str) -> None:
        if job != self._job:
            return
        self._cancel = None
        self.refuse(reason)
        if isinstance(self.state, Patching):
            self.state = replace(self.state, note="", running=False)
        else:
            self.state = reason

    def arrived(self, job: int, shown: Patching, prompts: tuple[str, str]) -> None:
        if job == self._job:
            self._prompts = prompts
            self.refuse("")
            old = self.state
            if isinstance(old, Patching) and old.pair.shape(old.site) == shown.pair.shape(old.site):
                shown = replace(shown, layer=old.layer, index=old.index, mode=old.mode)
            self.state = shown

    def exact_row(self, job: int, site: str, layer: int, row: list[float]) -> None:
        if job != self._job or not isinstance(self.state, Patching):
            return
        maps = dict(self.state.exact)
        rows = list(maps[site])
        rows[layer] = row
        maps[site] = rows
        self.state = replace(self.state, exact=maps)

    def finished(self, job: int) -> None:
        if job == self._job and isinstance(self.state, Patching):
            self.state = replace(self.state, running=False)
            self._cancel = None

    def cancel_sweep(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self._cancel = None
            if isinstance(self.state, Patching):
                self.state = replace(self.state, running=False)

    def action_back(self) -> None:
        """esc: leave a prompt being edited (putting back the pair shown, as the app's
        prompt bar does), cancel a sweep under way, else go back."""
        if isinstance(self.focused, Input):
            self.put_back()
            self.query_one(PatchSheet).focus()
        elif self._cancel is not None:
            self.cancel_sweep()
            self.notify("exact cells cancelled: r computes them", timeout=3)
        else:
            self.dismiss(None)

    def action_rerun(self) -> None:
        if isinstance(self.state, Patching):
            pair = self.state.pair
            self.measure(pair.answer, pair.contrast)
        else:
            self.measure()

    # The maps.

    def action_site(self, index: int) -> None:
        if isinstance(self.state, Patching):
            n = self.state.pair.shape(SITES[index])[1]
            self.state = replace(self.state, site=SITES[index], index=min(self.state.index, n - 1))

    def action_mode(self) -> None:
        if isinstance(self.state, Patching):
            mode = MODES[(MODES.index(self.state.mode) + 1) % len(MODES)]
            self.state = replace(self.state, mode=mode)

    def action_move(self, d_layer: int, d_index: int) -> None:
        if isinstance(self.state, Patching):
            s = self.state
            n_layer, n = s.pair.shape(s.site)
            layer = min(max(s.layer + d_layer, 0), n_layer - 1)
            index = min(max(s.index + d_index, 0), n - 1)
            self.state = replace(s, layer=layer, index=index)

    def action_apply(self) -> None:
        if not isinstance(self.state, Patching):
            return
        s = self.state
        patch = Patch(s.site, s.layer, s.index)
        pieces = self.app.session.pieces

        def work() -> None:
            result = applied(s.pair, patch, pieces)
            self.app.call_from_thread(self.show_applied, s.pair, result)

        self._applying += 1
        self.run_worker(work, thread=True, group="apply", exit_on_error=False)

    def show_applied(self, pair: Pair, result: Applied) -> None:
        """Here and in every pane: the panes show the patched corrupted run until cleared."""
        self._applying -= 1
        if isinstance(self.state, Patching) and self.state.pair is pair:
            self.state = replace(self.state, applied=result)
            ablation = self.app.session.ablation
            if ablation.empty:
                self.app.show_patched(result.run, *self._prompts)
            else:
                self.notify(
                    f"shown here only: patching runs the intact model, and {ablation.label()} "
                    "is knocked out in the panes (O restores it)",
                    markup=False,
                )

    def action_clear(self) -> None:
        """Clear the patch, and give the panes the clean prompt's run again."""
        if isinstance(self.state, Patching):
            self.state = replace(self.state, applied=None)
        if self.app.patched_prompts is not None:
            self.app.show_prompt(self.app.patched_prompts[0])
        else:
            self.notify("no patch is applied: enter applies the cell's", timeout=3)
