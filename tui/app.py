"""The Textual app: a status line, the prompt editor and six panes over one GPT-2 run.

The runner's worker thread posts its events here as messages; the UI thread only ever sends
it commands, so no key waits on the model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial

import torch
from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.containers import Grid, Horizontal
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Input, Label
from textual.worker import Worker, WorkerState

from gpt2scope.engine import (
    Ablation,
    AblationMode,
    Done,
    Failed,
    Model,
    Run,
    Runner,
    RunView,
    Sampler,
    State,
    Tokenizer,
    sample,
)
from gpt2scope.engine import gpt2_tokenizer as default_tokenizer
from gpt2scope.engine.ablation import NO_ABLATION
from gpt2scope.engine.analysis import HeadWrites
from gpt2scope.engine.attribution import ablated, head_effects
from gpt2scope.engine.runner import Event
from gpt2scope.tui.download_screen import DownloadScreen, fetch_gpt2
from gpt2scope.tui.help import HelpScreen
from gpt2scope.tui.keep_tail import KeepTailScreen
from gpt2scope.tui.keys import KEYS, LESSON_DIGITS, bindings, next_on_ladder
from gpt2scope.tui.lesson_bar import LessonActions, LessonBar, LessonNumber
from gpt2scope.tui.lessons import Lesson
from gpt2scope.tui.messages import EngineEvent, Fetched, FetchFailed, FetchProgress, PromptLeft
from gpt2scope.tui.patching_screen import Left as PatchingLeft
from gpt2scope.tui.patching_screen import PatchingScreen
from gpt2scope.tui.screens import DeeperActions, DeeperScreen
from gpt2scope.tui.session import (
    SAMPLE_PROMPT,
    HeadData,
    HeadEffects,
    ModelInfo,
    Scope,
    Session,
    Settings,
    fitted_ablation,
)
from gpt2scope.tui.text import editable, from_editable, visible
from gpt2scope.tui.views import PANES
from gpt2scope.tui.views import attribution as contributions
from gpt2scope.tui.widgets import AttentionPane, LeanFooter, Pane, PromptInput, StatusLine

PUBLISH_INTERVAL = 0.1  # seconds: while generating, the panes follow at most 10 times a second
LAID_OUT_FOR = (80, 24)  # the smallest terminal the six panes are arranged for


class ScopeApp(DeeperActions, LessonActions, App[int]):
    CSS_PATH = "app.tcss"
    # Below 120 columns the panes share the width evenly (the screen's -narrow class).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    # Under 40 lines a lesson shows only its step's pane (the screen's -short class).
    VERTICAL_BREAKPOINTS = [(0, "-short"), (40, "-tall")]
    TITLE = "gpt2scope"
    BINDINGS = [*bindings(), *LESSON_DIGITS]
    ESCAPE_TO_MINIMIZE = False  # esc stops a generation; z (or esc when idle) un-zooms
    ALLOW_IN_MAXIMIZED_VIEW = "StatusLine, Footer"
    AUTO_FOCUS = None  # on_mount focuses the editor or the panes, depending on --prompt

    scope: reactive[Scope | None] = reactive(None, repaint=False)
    captions: reactive[bool] = reactive(False)  # key i: each pane says what it shows
    layout: reactive[str] = reactive("six", init=False)  # or "class": four big panes (key C)

    def __init__(
        self,
        model: Model,
        info: ModelInfo,
        settings: Settings,
        prompt: str | None = None,
        device: str = "cpu",
        tokenizer: Tokenizer | None = None,
        sampler: Sampler = sample,
        lesson: Lesson | bool = False,
        layout: str = "six",
    ) -> None:
        """`prompt` None opens on a sample sentence with the editor focused; a blank one asks
        for a prompt and runs nothing; `device` is where a downloaded model goes; `lesson`
        starts one (True: opens the list of lessons); `layout` "class" shows four big panes."""
        super().__init__()
        self.opening_lesson = lesson
        self.opening_layout = layout
        self.model = model
        self.sampler = sampler
        self.prompt = prompt
        self.device = device
        self.session = Session(info, tokenizer or default_tokenizer(), settings)
        self.runner: Runner | None = None
        self.generation = 0  # counts the runners started, one per model
        self.fetching: threading.Thread | None = None  # the download of GPT-2 small, if asked
        self.fetch_cancel = threading.Event()
        self.outstanding: set[int] = set()  # ids of the commands sent whose Done is to come
        self._intact: Worker | None = None  # works out the intact model's logits
        self._writes: Worker | None = None  # reads what the selected head writes
        self._limit_said: tuple[str, float] | None = None  # the last, and when
        # The head effects being computed (their job number) and what cancels them.
        self._effects: tuple[int, threading.Event] | None = None
        self.unpublished = False  # events have changed the session since the last publish
        self.publish_tick: Timer | None = None
        self.told_too_small = False
        # While the panes show a patched run: the clean and the corrupted prompt it came from.
        self.patched_prompts: tuple[str, str] | None = None
        self.patching_left: PatchingLeft | None = None  # P reopens the patching screen so

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status").data_bind(ScopeApp.scope)
        with Horizontal(id="prompt-bar"):
            yield Label("prompt ›", id="prompt-label")
            yield PromptInput(
                value=editable(self.first_prompt),
                placeholder="type a prompt (\\n for a newline) and press enter",
                compact=True,
                id="prompt",
            )
        with Grid(id="panes"):
            for spec in PANES:
                pane = AttentionPane if spec.id == "attention" else Pane
                yield pane(spec).data_bind(ScopeApp.scope, captioned=ScopeApp.captions)
        yield LessonBar(id="lesson")
        yield LeanFooter()

    def on_mount(self) -> None:
        self.layout = self.opening_layout
        self.start_runner()
        self.publish()
        if self.first_prompt.strip():
            self.run_prompt(self.first_prompt)
        if self.prompt is None or not self.first_prompt.strip():
            self.query_one(PromptInput).focus()  # a blank --prompt asks for one, unrun
        else:
            self.query_one("#attention").focus()
        if self.opening_lesson is True:
            self.action_lessons()
        elif self.opening_lesson:
            self.start_lesson(self.opening_lesson)

    @property
    def first_prompt(self) -> str:
        return SAMPLE_PROMPT if self.prompt is None else self.prompt

    def on_resize(self, event: events.Resize) -> None:
        """Say once, the first time the terminal is below LAID_OUT_FOR, that panes are cut
        and how to see one whole; a smaller terminal still works. Not again at every shrink:
        dragging a window's edge would stack the notices."""
        width, height = event.size
        too_small = width < LAID_OUT_FOR[0] or height < LAID_OUT_FOR[1]
        if too_small and not self.told_too_small:
            self.notify(
                f"{width}x{height} is smaller than the {LAID_OUT_FOR[0]}x{LAID_OUT_FOR[1]} the "
                "panes are laid out for: z shows the focused pane whole",
                severity="warning",
            )
            self.told_too_small = True

    def on_unmount(self) -> None:
        self.fetch_cancel.set()
        self.stop_effects()
        self.close_runner()

    # Between the threads.

    def start_runner(self) -> None:
        self.generation += 1
        generation = self.generation
        s = self.session.settings

        def receive(event: Event) -> None:
            """Called on the runner's thread: hand the event over, never wait."""
            self.post_message(EngineEvent(event, generation))

        tokenizer = self.session.pieces.tokenizer
        self.runner = Runner(self.model, receive, s.params, s.seed, tokenizer, self.sampler)

    def on_engine_event(self, message: EngineEvent) -> None:
        if message.generation != self.generation:
            return  # from the runner of the model before a switch
        event = message.event
        if isinstance(event, Done):
            self.outstanding.discard(event.command)
            if not self.outstanding and self.runner.ablation != self.session.ablation:
                # a knock-out the runner refused (said in its Failed): not on after all
                self.session.set_ablation(self.runner.ablation)
                self.publish()
            return  # nothing on screen changes: the events before it said what happened
        self.session.apply(event)
        if isinstance(event, Failed):
            self.notify(
                visible(event.message),
                title="The model could not do that",
                severity="error",
                markup=False,
            )
        self.unpublished = True

    def publish_events(self) -> None:
        if self.unpublished:
            self.show_session()

    def publish(self) -> None:
        """Show the session now, as a key does, and start the tick over from now: events
        only mark the session changed, and the tick shows them once for all the events of
        an interval. A fast model steps faster than the screen needs to follow, and
        repainting every pane per token would leave key presses waiting behind the renders;
        the token after a key waits its turn instead of adding its renders to the key's
        repaint. (Timer.reset would wait out the interval under way first.)"""
        if self.publish_tick is not None:
            self.publish_tick.stop()
        self.publish_tick = self.set_interval(PUBLISH_INTERVAL, self.publish_events)
        self.show_session()

    def show_session(self) -> None:
        self.unpublished = False
        self.scope = self.session.scope()
        self.want_intact()
        self.want_writes()
        self.follow_lesson()

    def want_intact(self) -> None:
        """While something is knocked out, work out the intact model's prediction for the
        tokens shown, one run at a time, the newest, for the Probabilities view's before."""
        view = self.session.intact_wanted()
        if view is not None and self._intact is None:
            self._intact = self.run_worker(
                partial(intact_logits, view), thread=True, group="intact", exit_on_error=False
            )

    def want_writes(self) -> None:
        """What the selected head writes at the query, for the Query pane and the
        contributions screen: one read at a time, of the newest scope."""
        scope = self.scope
        a = scope.attn if scope is not None else None
        if a is None or self._writes is not None or a.writes_read(scope.query):
            return
        self._writes = self.run_worker(
            partial(read_writes, a, scope.query), thread=True, group="writes", exit_on_error=False
        )

    @property
    def reading_writes(self) -> bool:
        return self._writes is not None

    def take_writes(self, worker: Worker) -> None:
        self._writes = None
        if worker.state != WorkerState.SUCCESS:
            return  # the app is closing
        a, query, writes = worker.result
        if isinstance(writes, Exception):
            self.notify(
                visible(f"{type(writes).__name__}: {writes}"),
                title="What the head writes could not be worked out",
                severity="error",
                markup=False,
            )
            writes = None  # kept as failed: the views say so; not read again while selected
        self.session.keep_writes(a, query, writes)
        if a is not self.scope.attn or query != self.scope.query:
            self.want_writes()  # the selection moved on while it was read
        elif self.session.state == State.GENERATING:
            self.unpublished = True  # the tick shows it with the next token's events
        else:
            self.publish()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is self._writes and event.state in FINAL:
            self.take_writes(event.worker)
        if event.worker is not self._intact or event.state not in FINAL:
            return
        self._intact = None
        if event.state != WorkerState.SUCCESS:
            return  # the app is closing
        tokens, logits, error = event.worker.result
        self.session.keep_intact(tokens, logits)  # None: not tried again for these tokens
        if error is not None:
            self.notify(
                visible(error),
                title="The intact model's prediction could not be worked out",
                severity="error",
                markup=False,
            )
        self.publish()

    def close_runner(self) -> None:
        if self.runner is not None:
            self.runner.close()

    # Commands.

    def run_prompt(self, text: str) -> None:
        tokenizer, bos = self.session.pieces.tokenizer, self.session.settings.bos
        ids = tokenizer.encode(text, bos)
        if len(ids) > self.model.config.n_ctx:
            self.offer_tail(ids, bos)
            return
        self.session.set_prompt(text)
        self.patched_prompts = None
        self.send(lambda r: r.start_prompt(text, bos))

    def show_patched(self, run: Run, clean: str, corrupt: str) -> None:
        """Show the patching screen's patched run of `corrupt` in every pane, until a prompt
        is run again (clearing the patch runs `clean`)."""
        self.session.set_prompt(corrupt)
        self.screen_stack[0].query_one(PromptInput).value = editable(corrupt)
        self.send(lambda r: r.show_run(run))
        self.patched_prompts = (clean, corrupt)

    def show_prompt(self, prompt: str) -> None:
        """Run `prompt` as if typed into the prompt bar (from another screen)."""
        self.screen_stack[0].query_one(PromptInput).value = editable(prompt)
        self.run_prompt(prompt)

    def offer_tail(self, ids: list[int], bos: bool) -> None:
        """Say how long the prompt is and the limit, and offer to run what fits: its end,
        which is what the next token depends on most (after the <|endoftext|> it starts
        with, if it does)."""
        tail = ids[:bos] + ids[bos - self.model.config.n_ctx :]

        def answered(keep: bool | None) -> None:
            if keep:
                self.session.set_prompt(self.session.pieces.tokenizer.decode(tail[bos:]))
                self.send(lambda r: r.start_tokens(tail))

        self.push_screen(KeepTailScreen(len(ids), len(tail)), answered)

    def send(self, command: Callable[[Runner], int]) -> None:
        """Give the runner a command, kept outstanding until its Done arrives."""
        if self.runner is not None:
            self.outstanding.add(command(self.runner))

    def change(self, **changes: object) -> None:
        self.session.update(**changes)
        self.publish()

    def change_params(self, **changes: object) -> None:
        params = replace(self.session.settings.params, **changes)
        self.change(params=params)
        if self.runner is not None:
            self.runner.set_params(self.session.settings.params)  # as clamped

    # Actions, one per key (see tui/keys.py).

    def action_layer(self, delta: int) -> None:
        self.move_to("layer", self.session.settings.layer + delta)

    def action_layer_to(self, end: int) -> None:
        self.move_to("layer", end % self.session.info.config.n_layer)

    def action_head(self, delta: int) -> None:
        self.move_to("head", self.session.settings.head + delta)

    def move_to(self, name: str, value: int) -> None:
        """Select layer or head `value`, saying so when it is past the first or last."""
        before = getattr(self.session.settings, name)
        self.change(**{name: value})
        if getattr(self.session.settings, name) == before:
            end = "first" if before == 0 else "last"
            self.said_limit(f"already at {name} {before}, the {end}")

    def action_query(self, delta: int) -> None:
        before = self.scope.query if self.scope is not None else None
        self.session.move_query(delta)
        self.publish()
        if before is not None and self.scope.query == before:
            self.said_limit(f"the query is already the {'first' if delta < 0 else 'last'} token")

    def action_query_to(self, end: int) -> None:
        """The first token (0), or the last, followed as the run grows (-1)."""
        if self.scope is None or self.scope.query is None:
            return
        before = self.scope.query
        self.change(query=None if end < 0 else 0)
        if self.scope.query == before:
            self.said_limit(f"the query is already the {'first' if end == 0 else 'last'} token")

    def said_limit(self, sentence: str) -> None:
        """A key that would go past an end says so, briefly, instead of doing nothing; a key
        held down says it once while the toast is up, not once per repeat."""
        now, last = time.monotonic(), self._limit_said
        if last is not None and last[0] == sentence and now - last[1] < LIMIT_TOAST_S:
            return
        self._limit_said = (sentence, now)
        self.notify(sentence, timeout=LIMIT_TOAST_S)

    def action_captions(self) -> None:
        self.captions = not self.captions

    def action_maps(self) -> None:
        self.change(maps=not self.session.settings.maps)

    def action_class_layout(self) -> None:
        self.layout = "six" if self.layout == "class" else "class"

    def watch_layout(self, layout: str) -> None:
        self.screen_stack[0].set_class(layout == "class", "-class")

    def action_toggle(self, setting: str) -> None:
        """Flip one of the views' on/off settings (value-weighted, the induction probe)."""
        self.change(**{setting: not getattr(self.session.settings, setting)})

    def action_bos(self) -> None:
        self.change(bos=not self.session.settings.bos)
        self.run_prompt(self.session.prompt)

    def action_edit_prompt(self) -> None:
        self.query_one(PromptInput).focus()

    def on_input_submitted(self, message: Input.Submitted) -> None:
        if isinstance(message.input, LessonNumber):
            self.lesson_number(message.value)
            return
        text = from_editable(message.value)
        if not text.strip():  # the bar goes back to the prompt of the run on screen
            self.notify("the prompt is empty: type some text to run", severity="error")
            self.on_prompt_left()
            return
        self.run_prompt(text)
        self.focus_panes()

    def on_prompt_left(self, message: PromptLeft | None = None) -> None:
        # Leaving drops an edit that was not run: the bar shows the prompt of the run on screen.
        self.query_one(PromptInput).value = editable(self.session.prompt)
        to = message and message.to
        if to == "next":
            self.screen.focus_next()
        elif to == "previous":
            self.screen.focus_previous()
        else:
            self.focus_panes()

    def focus_panes(self) -> None:
        self.query_one("#attention").focus()

    def action_generate(self) -> None:
        length = self.session.settings.length
        self.action_follow()  # a look back would hide the new tokens
        self.send(lambda r: r.generate(length))

    def action_step(self) -> None:
        self.action_follow()
        self.send(lambda r: r.step())

    def action_stop(self) -> None:
        if self.outstanding:
            if self.runner is not None:
                self.runner.stop()
        elif self.screen.maximized is not None:
            self.screen.minimize()

    def action_temperature(self, direction: int) -> None:
        t = self.session.settings.params.temperature
        self.change_params(temperature=self.next_rung("temperature", t, direction))

    def action_top_k(self, direction: int) -> None:
        k = self.session.settings.params.top_k
        self.change_params(top_k=int(self.next_rung("top_k", k, direction)))

    def action_top_p(self, direction: int) -> None:
        p = self.session.settings.params.top_p
        self.change_params(top_p=self.next_rung("top_p", p, direction))

    def action_length(self, direction: int) -> None:
        n = self.session.settings.length
        self.change(length=int(self.next_rung("length", n, direction)))

    def next_rung(self, name: str, value: float, direction: int) -> float:
        rung = next_on_ladder(name, value, direction)
        if rung == value:
            shown = "off" if name == "top_k" and value == 0 else f"{value:g}"
            end = "highest" if direction > 0 else "lowest"
            self.said_limit(f"{name.replace('_', '-')} is already {shown}, the {end}")
        return rung

    def action_new_seed(self) -> None:
        seed = self.session.settings.seed + 1
        self.change(seed=seed)
        if self.runner is not None:
            self.runner.set_seed(seed)

    def action_zoom(self) -> None:
        screen = self.screen
        if screen.maximized is not None:
            screen.minimize()
            return
        focused = screen.focused
        pane = focused if isinstance(focused, Pane) else self.query_one("#attention", Pane)
        screen.maximize(pane)
        pane.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """While the download dialog is up only quitting works: the other keys act on a model
        that is about to be replaced, and another screen would hide the dialog."""
        if isinstance(self.screen, DownloadScreen):
            return action == "quit"
        if action == "zoom" and isinstance(self.screen, DeeperScreen):
            return False  # a deeper screen already fills the terminal: no z in its footer
        if action.startswith("lesson_"):
            return self.lesson is not None
        if action == "cancel_effects":
            return self._effects is not None  # else esc goes back, as on every screen
        return super().check_action(action, parameters)

    def action_download(self) -> None:
        if not self.session.info.is_demo:
            name = self.session.info.name
            self.notify(f"D fetches GPT-2 small in place of the demo; this is {name}", markup=False)
            return
        if self.fetching is not None and self.fetching.is_alive():
            self.notify("the cancelled download is still stopping; try again in a moment")
            return
        self.fetch_cancel = cancel = threading.Event()
        self.push_screen(DownloadScreen(cancel), lambda _: self.said_cancelled(cancel))
        # A daemon thread, not a Textual worker: those run in asyncio's executor, which the
        # app waits for on exit, and with no network the hub sleeps between retries for half a
        # minute without looking at `cancel`. Quitting then would hang on a blank screen.
        self.fetching = threading.Thread(
            target=fetch_gpt2,
            # GPT-2 small as the demo was opened: on the same device, in the same dtype
            args=(self.post_message, cancel, self.device, self.model.weights_dtype),
            name="download GPT-2 small",
            daemon=True,
        )
        self.fetching.start()

    def said_cancelled(self, cancel: threading.Event) -> None:
        if cancel.is_set():
            self.notify("download of GPT-2 small cancelled; still on the demo model")

    def on_fetch_progress(self, message: FetchProgress) -> None:
        if isinstance(self.screen, DownloadScreen):
            self.screen.show_progress(message.file, message.done, message.total)

    def on_fetch_failed(self, message: FetchFailed) -> None:
        if isinstance(self.screen, DownloadScreen):
            self.screen.dismiss(None)
        self.notify(
            visible(message.reason),
            title="GPT-2 small could not be downloaded",
            severity="error",
            markup=False,
        )

    def on_fetched(self, message: Fetched) -> None:
        if isinstance(self.screen, DownloadScreen):
            self.screen.dismiss(None)
        self.switch_model(message.model, message.info)

    def switch_model(self, model: Model, info: ModelInfo) -> None:
        """Run `model` from now on, with the same settings, the prompt on screen run again."""
        prompt = self.session.prompt or self.first_prompt
        ablation, dropped = fitted_ablation(self.session.ablation, info.config)
        self.stop_effects()
        self.close_runner()
        self.model = model
        self.session = Session(info, self.session.pieces.tokenizer, self.session.settings)
        self.outstanding.clear()
        self.start_runner()
        if ablation != NO_ABLATION:
            self.set_ablation(ablation)
        self.publish()
        self.run_prompt(prompt)
        self.notify(f"now running {info.description}, {info.size} parameters", markup=False)
        if dropped:
            self.notify(f"{info.name} has no {dropped}: no longer knocked out", markup=False)

    # Knock-outs, and the contributions screen's target and head effects.

    def set_ablation(self, ablation: Ablation) -> None:
        """Knock out `ablation`'s heads and MLPs from now on: the runner runs the tokens
        again through the knocked-out model, and so every prompt, token and branch after."""
        self.session.set_ablation(ablation)
        self.send(lambda r: r.set_ablation(ablation))
        self.publish()

    def action_knock_out(self) -> None:
        s, a = self.session.settings, self.session.ablation
        self.set_ablation(replace(a, heads=a.heads ^ {(s.layer, s.head)}))

    def action_knock_out_mlp(self) -> None:
        s, a = self.session.settings, self.session.ablation
        self.set_ablation(replace(a, mlps=a.mlps ^ {s.layer}))

    def action_restore(self) -> None:
        a = self.session.ablation
        if a.empty:
            self.notify("nothing is knocked out: o knocks out the selected head, M its MLP")
            return
        self.set_ablation(replace(a, heads=frozenset(), mlps=frozenset()))

    def action_ablation_mode(self) -> None:
        a = self.session.ablation
        mode = AblationMode.MEAN if a.mode == AblationMode.ZERO else AblationMode.ZERO
        self.set_ablation(replace(a, mode=mode))
        said = "its mean over the run" if mode == AblationMode.MEAN else "0"
        self.notify(f"knock-outs: {mode}, a head's z set to {said}", timeout=3)

    def action_target(self, delta: int) -> None:
        scope = self.scope
        if scope is not None and scope.view is not None:
            self.change(**contributions.moved_target(scope, delta))

    def action_contrast(self) -> None:
        scope = self.scope
        if scope is not None and scope.view is not None:
            self.change(contrast=contributions.toggled_contrast(scope))

    def action_head_effects(self) -> None:
        """Knock out each head alone, in a worker, the rows shown as they finish."""
        scope = self.scope
        if scope is None or scope.view is None:
            self.notify("no run yet: type a prompt (p) and press enter")
            return
        self.stop_effects()
        view, position = scope.view, scope.query
        target, contrast = contributions.chosen_tokens(view, position, scope.settings)
        mode = self.session.ablation.mode
        effects = self.session.start_effects(view, position, target, contrast, mode)
        cancel = threading.Event()
        self._effects = (effects.job, cancel)
        work = partial(self.compute_effects, effects, cancel)
        self.run_worker(work, thread=True, group="effects", exit_on_error=False)
        self.refresh_bindings()
        self.publish()

    def compute_effects(self, effects: HeadEffects, cancel: threading.Event) -> None:
        """In a worker thread; each finished layer goes to the UI thread at once."""

        def on_row(layer: int, row: list[float]) -> None:
            if not cancel.is_set():
                self.call_from_thread(self.effects_row, effects.job, layer, row)

        error = None
        try:
            head_effects(
                effects.view,
                effects.position,
                effects.target,
                effects.contrast,
                effects.mode,
                on_row=on_row,
                cancelled=cancel.is_set,
            )
        except Exception as e:  # said on screen; the rows done so far stay
            error = f"{type(e).__name__}: {e}"
        if not cancel.is_set():
            self.call_from_thread(self.effects_ended, effects.job, error)

    def effects_row(self, job: int, layer: int, row: list[float]) -> None:
        self.session.effects_row(job, layer, row)
        self.unpublished = True

    def effects_ended(self, job: int, error: str | None) -> None:
        if self._effects is not None and self._effects[0] == job:
            self._effects = None
            self.refresh_bindings()
        if error is not None:
            self.notify(visible(error), title="Head effects failed", severity="error", markup=False)

    def stop_effects(self) -> None:
        if self._effects is not None:
            self._effects[1].set()
            self._effects = None
            self.session.cancel_effects()
            self.refresh_bindings()

    def action_cancel_effects(self) -> None:
        self.stop_effects()
        self.publish()

    def action_patching(self) -> None:
        if isinstance(self.screen, DeeperScreen):
            self.screen.dismiss(None)  # one deeper screen at a time, as action_open does
            self.call_later(self.action_patching)
        elif not isinstance(self.screen, PatchingScreen):
            self.push_screen(PatchingScreen())

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        self.fetch_cancel.set()
        self.close_runner()
        self.exit(0)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        ours = [
            SystemCommand(
                f"{k.help[0].upper()}{k.help[1:]}", f"key {k.shown}", self.palette_action(k.action)
            )
            for k in KEYS
        ]
        # Textual's own Quit would be a second one; its Screenshot is e's export, done worse
        # (it saves to a downloads folder a server often lacks, and then only says it failed).
        left_out = {command.title for command in ours} | {"Screenshot"}
        yield from (c for c in super().get_system_commands(screen) if c.title not in left_out)
        yield from ours

    def palette_action(self, action: str) -> Callable[[], None]:
        return lambda: self.call_later(self.run_action, action)


FINAL = (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED)
LIMIT_TOAST_S = 2.0


def read_writes(a: HeadData, query: int) -> tuple[HeadData, int, HeadWrites | Exception]:
    """In a worker thread: what the head writes at the query, or why not."""
    try:
        return a, query, a.read_writes(query)
    except Exception as e:
        return a, query, e


def intact_logits(view: RunView) -> tuple[tuple[int, ...], torch.Tensor | None, str | None]:
    """In a worker thread: the intact model's next-token logits after the view's tokens,
    the layers before the first knocked-out one reused from the view; or why not."""
    try:
        return view.tokens, ablated(view, NO_ABLATION).logits, None
    except Exception as e:
        return view.tokens, None, f"{type(e).__name__}: {e}"
