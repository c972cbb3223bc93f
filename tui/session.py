"""What the views show, as plain data: the model, the user's selection, and the latest run.

A `Session` follows the runner's events and the user's choices and hands out `Scope`s:
immutable snapshots the panes and `inspect` render. Nothing here imports Textual, and
everything costly (one head's pattern, the next-token distribution) is computed once per
event or selection change, never per paint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import torch

from gpt2scope.engine import (
    Ablation,
    AblationMode,
    Finished,
    FinishReason,
    GPT2Config,
    Model,
    Prefilled,
    Reran,
    RunView,
    SampleRecord,
    SamplingParams,
    State,
    StateChanged,
    Stepped,
    Tokenizer,
)
from gpt2scope.engine.ablation import NO_ABLATION
from gpt2scope.engine.analysis import (
    AttentionRow,
    HeadWrites,
    attention_row,
    head_writes,
    value_norms,
)
from gpt2scope.engine.runner import Event
from gpt2scope.engine.sampling import preview_record
from gpt2scope.tui.text import Piece, Pieces

# It stops at "it": the opening query is the pronoun whose referent the sentence leaves to
# the reader, and a first `g` goes on with the sentence (after a full stop, the demo model
# trained on quotations often ends the text at once).
SAMPLE_PROMPT = "The trophy doesn't fit in the suitcase because it"
TOP_KEYS = 5
INTACT_KEPT = 16  # the intact model's logits for this many knocked-out token sequences


@dataclass(frozen=True)
class ModelInfo:
    name: str
    origin: str  # "path", "hub cache" or "demo"
    description: str
    n_params: int
    config: GPT2Config
    device: str  # where the model runs: cpu, cuda or mps
    dtype: str  # what its weights are held in: float32, bfloat16 or float16

    @classmethod
    def of(cls, model: Model, name: str, origin: str, description: str) -> ModelInfo:
        dtype = str(model.weights_dtype).removeprefix("torch.")
        return cls(name, origin, description, model.n_params, model.config, model.device, dtype)

    @property
    def is_demo(self) -> bool:
        return self.origin == "demo"

    @property
    def size(self) -> str:
        """Parameter count the way model cards write it: 124M, 1.5B, 2.1M."""
        n = self.n_params
        if n >= 1e9:
            return f"{n / 1e9:.1f}B"
        if n >= 1e8:
            return f"{n / 1e6:.0f}M"
        return f"{n / 1e6:.1f}M"


@dataclass(frozen=True)
class Settings:
    """The user's choices; `query` None follows the last token."""

    layer: int = 0
    head: int = 0
    query: int | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    length: int = 6
    seed: int = 0
    bos: bool = False  # the tokens start with <|endoftext|>
    # The token the contributions screen explains at the query, and the one it is set
    # against (a logit difference); None: the default target, no contrast.
    target: int | None = None
    contrast: int | None = None
    # The Attention and Query panes and the model map show value-weighted norms
    # ||a_ij v_j W_O[h]|| (rows renormalised) instead of the attention weights.
    value_weighted: bool = False
    induction_probe: bool = False  # the model map shows the induction probe, not the text
    maps: bool = True  # the q, k, v maps beside the attention pattern (key v)


@dataclass(frozen=True, eq=False)
class HeadData:
    """One attention head over the whole run, as numpy arrays. A query's row (its scores,
    pattern and z) is worked out when a view first reads it: a pane shows a few dozen rows
    of a run's up to 1024, and the whole matrix at every token would cost the UI thread
    milliseconds that key presses wait behind."""

    layer: int
    head: int
    q: np.ndarray  # [T, d_head]
    k: np.ndarray
    v: np.ndarray
    value_norms: np.ndarray  # [T] ||v_j @ W_O[h]||: how much key j's value writes
    # For what the head writes: the run, and the token labels of what it promotes.
    view: RunView = field(repr=False)
    pieces: Pieces = field(repr=False)
    _rows: dict[int, AttentionRow] = field(default_factory=dict, repr=False)
    _writes: dict[int, HeadWrites | None] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, view: RunView, layer: int, head: int, pieces: Pieces) -> HeadData:
        """The engine's q, k and v for one head; the rest follows from them in `row`."""
        q, k, v = (
            view.get(name, layer)[:, head].detach().cpu().float().numpy()
            for name in ("q", "k", "v")
        )
        with torch.no_grad():
            norms = value_norms(view, layer, head)[0].cpu().float().numpy()
        return cls(layer, head, q, k, v, norms, view, pieces)

    def row(self, query: int) -> AttentionRow:
        """One query's scores, pattern and z (gpt2scope.engine.analysis.attention_row)."""
        row = self._rows.get(query)
        if row is None:
            row = self._rows[query] = attention_row(self.q[query], self.k, self.v, query)
        return row

    def scores_row(self, query: int) -> np.ndarray:
        return self.row(query).scores

    def pattern_row(self, query: int) -> np.ndarray:
        return self.row(query).pattern

    def z_row(self, query: int) -> np.ndarray:
        return self.row(query).z

    def weighted_row(self, query: int) -> np.ndarray:
        """The value-weighted norms of the query's row, renormalised to sum to 1."""
        # engine.analysis.value_weighted, in numpy: torch ops on the UI thread wait behind
        # the runner's thread pool
        weighted = self.pattern_row(query) * self.value_norms
        return weighted / max(float(weighted.sum()), 1e-30)

    def shown_row(self, query: int, weighted: bool) -> np.ndarray:
        return self.weighted_row(query) if weighted else self.pattern_row(query)

    def read_writes(self, query: int) -> HeadWrites:
        """What the head writes at the query, read through ln_f and the unembedding: a
        product with the whole unembedding, 21 ms at gpt2-xl, so the app runs it on a worker
        (tui/app.py; `inspect` in line) and the views draw only what it kept."""
        return head_writes(self.view, query, [(self.layer, self.head)])[0]

    def kept_writes(self, query: int) -> tuple[HeadWrites | None, bool]:
        """What was kept (None while unread), and whether the read failed."""
        writes = self._writes.get(query)
        return writes, writes is None and query in self._writes

    def keep_writes(self, query: int, writes: HeadWrites | None) -> None:
        self._writes[query] = writes

    def writes_read(self, query: int) -> bool:
        """Kept, or failed: not to be read again."""
        return query in self._writes

    @cached_property
    def pattern(self) -> np.ndarray:
        """[T, T] softmax weights, row = query, column = key: every row, for JSON."""
        return np.stack([self.pattern_row(i) for i in range(len(self.q))])

    def top_keys(self, query: int, n: int = TOP_KEYS) -> list[int]:
        """The keys the query attends to most, heaviest first (ties: earlier key first)."""
        weights = self.pattern_row(query)[: query + 1]
        order = np.argsort(-weights, kind="stable")
        return [int(i) for i in order[:n]]


@dataclass(frozen=True)
class Candidate:
    piece: Piece
    prob: float  # the model's own, temperature 1
    prob_temperature: float  # softmax(logits / temperature)
    prob_sampled: float  # after the top-k/top-p cut, renormalised; 0 when cut
    kept: bool


@dataclass(frozen=True)
class Prediction:
    """A next-token distribution: sampled at `step` (with `chosen`), or a preview of the
    next token under the current parameters (step and chosen None)."""

    candidates: tuple[Candidate, ...]  # sorted by logit
    params: SamplingParams
    entropy: float  # bits, the model's own distribution
    sampled_entropy: float  # bits, the distribution sampled from
    n_kept: int
    step: int | None = None
    chosen: Piece | None = None
    chosen_rank: int | None = None
    chosen_prob: float | None = None

    @classmethod
    def of_record(cls, record: SampleRecord, step: int | None, pieces: Pieces) -> Prediction:
        """What a step sampled from; with `step` None, only its distribution (a preview)."""
        candidates = zip(
            record.candidate_ids,
            record.candidate_probs,
            record.candidate_probs_temperature,
            record.candidate_probs_filtered,
            strict=True,
        )
        chosen = step is not None
        return cls(
            candidates=tuple(
                Candidate(pieces(i), p, pt, pf, rank < record.n_kept)
                for rank, (i, p, pt, pf) in enumerate(candidates)
            ),
            params=record.params,
            entropy=record.entropy,
            sampled_entropy=record.sampled_entropy,
            n_kept=record.n_kept,
            step=step,
            chosen=pieces(record.token_id) if chosen else None,
            chosen_rank=record.rank if chosen else None,
            chosen_prob=record.probability if chosen else None,
        )

    @classmethod
    def preview(cls, logits: torch.Tensor, params: SamplingParams, pieces: Pieces) -> Prediction:
        """The next token's distribution under `params`, before anything is drawn."""
        return cls.of_record(preview_record(logits, params), None, pieces)


@dataclass(frozen=True)
class Shift:
    """How the knock-outs moved a prediction: the intact model's probability (temperature 1)
    of each of its candidates, and KL(intact || knocked out) over the whole vocabulary."""

    before: tuple[float, ...]
    kl_bits: float


@dataclass(frozen=True, eq=False)
class HeadEffects:
    """The total effect of knocking out each head alone on one target's logit (or logit
    difference), as far as computed: a row per layer, None until it is done."""

    job: int  # tells a restarted computation's rows from the one before
    view: RunView
    position: int
    target: int
    contrast: int | None
    mode: AblationMode
    rows: tuple[tuple[float, ...] | None, ...]
    cancelled: bool = False

    @property
    def n_done(self) -> int:
        return sum(row is not None for row in self.rows)

    @property
    def done(self) -> bool:
        return self.n_done == len(self.rows)


def fitted_ablation(ablation: Ablation, config: GPT2Config) -> tuple[Ablation, str]:
    """The knock-outs a model of `config` has, and those it has not, named ('L30H2 L40mlp')."""
    heads = frozenset(
        (layer, head)
        for layer, head in ablation.heads
        if layer < config.n_layer and head < config.n_head
    )
    mlps = frozenset(layer for layer in ablation.mlps if layer < config.n_layer)
    gone = replace(ablation, heads=ablation.heads - heads, mlps=ablation.mlps - mlps)
    return replace(ablation, heads=heads, mlps=mlps), gone.label()


def query_index(query: int | None, n_tokens: int) -> int:
    """The selected query token among `n_tokens`: None (and anything past the end) is the
    last."""
    return n_tokens - 1 if query is None else min(query, n_tokens - 1)


@dataclass(frozen=True, eq=False)
class Scope:
    """Everything the six views and the header show, at one moment."""

    info: ModelInfo
    settings: Settings
    state: State = State.IDLE  # the runner's
    prompt: str = ""
    view: RunView | None = None
    pieces: tuple[Piece, ...] = ()
    prompt_length: int = 0
    sampled: tuple[SampleRecord, ...] = ()  # one per generated token, in order
    # Every step of the run, also those after the one shown when looking back in history.
    history: tuple[SampleRecord, ...] = ()
    history_pieces: tuple[Piece, ...] = ()  # the token each of those steps chose
    finish: FinishReason | None = None  # why the last generation stopped
    attn: HeadData | None = None  # the selected layer and head
    # What it writes at the query, once the app has read it on a worker (keep_writes).
    writes: HeadWrites | None = None
    writes_failed: bool = False  # that read raised: said in a notification
    prediction: Prediction | None = None
    step_prediction: Prediction | None = None  # what the shown step sampled from
    # (token embedding row, positional embedding row, their sum) at the query
    embedding: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    ablation: Ablation = NO_ABLATION  # what the user knocked out (the runner follows)
    shift: Shift | None = None  # the prediction against the intact model's, once known
    effects: HeadEffects | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.pieces)

    @cached_property
    def query(self) -> int | None:
        """The selected query token's index, None before any run."""
        return query_index(self.settings.query, self.n_tokens) if self.pieces else None

    @property
    def query_is_last(self) -> bool:
        """The query is the last token, the one whose prediction Probabilities shows."""
        return self.query == self.n_tokens - 1

    @property
    def query_piece(self) -> Piece | None:
        q = self.query
        return None if q is None else self.pieces[q]

    @property
    def steps(self) -> int:
        return len(self.sampled)

    @property
    def looking_back(self) -> bool:
        """True when the views show a past step rather than the newest."""
        return self.steps < len(self.history)

    def sampled_at(self, position: int) -> SampleRecord | None:
        """The record of the token at `position`, if it was generated rather than prompted."""
        i = position - self.prompt_length
        return self.sampled[i] if 0 <= i < len(self.sampled) else None


class Session:
    """Follows runner events and the user's selection; `scope()` is the current snapshot."""

    def __init__(self, info: ModelInfo, tokenizer: Tokenizer, settings: Settings) -> None:
        self.info = info
        self.pieces = Pieces(tokenizer)
        self.view: RunView | None = None
        self.settings = self.clamped(settings)
        self.state = State.IDLE
        self.prompt = ""
        self.prompt_length = 0
        self.sampled: list[SampleRecord] = []
        self.views: list[RunView] = []  # the run after each step; 0 is the prompt alone
        self.at_step: int | None = None  # the past step shown; None follows the run
        self.finish: FinishReason | None = None
        self.show_record = False  # the Probabilities view shows the last sampled step
        self.ablation = NO_ABLATION
        # The intact model's next-token logits after each of the last knocked-out token
        # sequences, worked out by the app off the UI thread (see intact_wanted).
        self._intact: dict[tuple[int, ...], torch.Tensor | None] = {}
        self.effects: HeadEffects | None = None
        self._effects_jobs = 0
        self._shift: Shift | None = None
        self._attn: HeadData | None = None
        self._prediction: Prediction | None = None
        self._step_prediction: Prediction | None = None
        self._scope: Scope | None = None

    # The user's choices.

    def clamped(self, s: Settings) -> Settings:
        c = self.info.config
        layer = min(max(s.layer, 0), c.n_layer - 1)
        head = min(max(s.head, 0), c.n_head - 1)
        length = min(max(s.length, 0), c.n_ctx)
        # Keeping more than the vocabulary keeps all of it; the sampler refuses such a top-k.
        params = replace(s.params, top_k=min(s.params.top_k, c.vocab_size))
        query = s.query
        if query is not None and self.shown_view is not None:
            # Reaching the last token means following it as the run grows.
            query = None if query >= self.shown_view.n_tokens - 1 else max(query, 0)
        return replace(s, layer=layer, head=head, length=length, query=query, params=params)

    def update(self, **changes: object) -> Settings:
        """Change settings (clamped to the model and the run) and return them."""
        before = self.settings
        self.settings = self.clamped(replace(before, **changes))
        if self.settings.params != before.params:
            self.show_record = False
            self._prediction = None
        self._scope = None
        return self.settings

    def move_query(self, delta: int) -> None:
        view = self.shown_view
        if view is None:
            return
        # from the query as shown: a step looked back at may have fewer tokens than it names
        current = query_index(self.settings.query, view.n_tokens)
        self.update(query=max(current + delta, 0))

    def look_at_step(self, step: int) -> None:
        """Show the run as it stood after generated token `step` (0: the prompt alone);
        the newest step means following the run again."""
        newest = len(self.sampled)
        step = min(max(step, 0), newest)
        at_step = None if step == newest else step
        if at_step != self.at_step:
            self.at_step = at_step
            self._forget_run()
            self._scope = None

    @property
    def shown_step(self) -> int:
        return len(self.sampled) if self.at_step is None else self.at_step

    @property
    def shown_view(self) -> RunView | None:
        return self.view if self.at_step is None else self.views[self.at_step]

    def set_prompt(self, text: str) -> None:
        self.prompt = text
        self._scope = None

    def set_ablation(self, ablation: Ablation) -> None:
        self.ablation = ablation
        self._scope = None

    # Knock-outs against the intact model.

    def intact_wanted(self) -> RunView | None:
        """The knocked-out or patched run whose prediction is shown, while the intact
        model's logits for its tokens are not known yet."""
        view = self._prediction_view()
        if view is None or not view.altered or view.tokens in self._intact:
            return None
        return view

    def keep_intact(self, tokens: tuple[int, ...], logits: torch.Tensor | None) -> None:
        self._intact[tokens] = logits
        while len(self._intact) > INTACT_KEPT:
            del self._intact[next(iter(self._intact))]
        self._shift = None
        self._scope = None

    def keep_writes(self, head: HeadData, query: int, writes: HeadWrites | None) -> None:
        """What the app read on a worker (None: the read failed): the next scope shows it."""
        head.keep_writes(query, writes)
        self._scope = None

    # Head effects, computed by the app in a worker, a layer at a time.

    def start_effects(
        self,
        view: RunView,
        position: int,
        target: int,
        contrast: int | None,
        mode: AblationMode,
    ) -> HeadEffects:
        self._effects_jobs += 1
        rows = (None,) * view.config.n_layer
        self.effects = HeadEffects(self._effects_jobs, view, position, target, contrast, mode, rows)
        self._scope = None
        return self.effects

    def effects_row(self, job: int, layer: int, row: list[float]) -> None:
        e = self.effects
        if e is not None and e.job == job:
            rows = e.rows[:layer] + (tuple(row),) + e.rows[layer + 1 :]
            self.effects = replace(e, rows=rows)
            self._scope = None

    def cancel_effects(self) -> None:
        if self.effects is not None and not self.effects.done:
            self.effects = replace(self.effects, cancelled=True)
            self._scope = None

    # The runner's events.

    def apply(self, event: Event) -> None:
        if isinstance(event, StateChanged):
            self.state = event.state
        elif isinstance(event, Prefilled):
            self.view, self.prompt_length = event.view, event.view.n_tokens
            self.sampled, self.finish, self.show_record = [], None, False
            self.views, self.at_step = [event.view], None
            self.settings = replace(self.settings, query=None)
            self._forget_run()
        elif isinstance(event, Reran):
            # The steps as they were sampled stay in history; the newest is seen anew.
            self.view = self.views[-1] = event.view
            if self.at_step is None:
                self._forget_run()
        elif isinstance(event, Stepped):
            del self.sampled[event.index - 1 :]
            self.sampled.append(event.record)
            del self.views[event.index :]
            self.views.append(event.view)
            self.view, self.finish, self.show_record = event.view, None, True
            if self.at_step is not None and self.at_step >= event.index:
                self.at_step = None  # the step looked at was replaced by a branch
            if self.at_step is None:
                self._forget_run()
        elif isinstance(event, Finished):
            self.finish = event.reason
        # A Failed event changes nothing here: the app shows it, the last run stays on screen.
        self._scope = None

    def _forget_run(self) -> None:
        self._attn = self._prediction = self._step_prediction = self._shift = None

    # The snapshot.

    def scope(self) -> Scope:
        if self._scope is None:
            self._scope = self._build()
        return self._scope

    def _build(self) -> Scope:
        view = self.shown_view
        attn = self._head_data()
        query = query_index(self.settings.query, view.n_tokens) if view is not None else None
        writes, failed = (None, False) if attn is None or query is None else attn.kept_writes(query)
        return Scope(
            info=self.info,
            settings=self.settings,
            state=self.state,
            prompt=self.prompt,
            view=view,
            pieces=tuple(self.pieces(t) for t in view.tokens) if view is not None else (),
            prompt_length=self.prompt_length,
            sampled=tuple(self.sampled[: self.shown_step]),
            history=tuple(self.sampled),
            history_pieces=tuple(self.pieces(r.token_id) for r in self.sampled),
            finish=self.finish,
            attn=attn,
            writes=writes,
            writes_failed=failed,
            prediction=self._next_prediction(),
            step_prediction=self._shown_step_prediction(),
            embedding=self._embedding(),
            ablation=self.ablation,
            shift=self._prediction_shift(),
            effects=self.effects,
        )

    def _prediction_view(self) -> RunView | None:
        """The run the Probabilities view's distribution came from: a sampled step's was the
        run before its token."""
        p = self._next_prediction()
        if p is None:
            return None
        return self.shown_view if p.step is None else self.views[p.step - 1]

    def _prediction_shift(self) -> Shift | None:
        view = self._prediction_view()
        if view is None or not view.altered or self._intact.get(view.tokens) is None:
            return None
        if self._shift is None:
            log_before = torch.log_softmax(self._intact[view.tokens].float(), -1)
            log_after = torch.log_softmax(view.logits.float(), -1)
            before = log_before.exp()
            kl = float((before * (log_before - log_after)).sum()) / math.log(2)
            ids = [c.piece.token_id for c in self._next_prediction().candidates]
            self._shift = Shift(tuple(before[ids].tolist()), max(kl, 0.0))
        return self._shift

    def _embedding(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        view = self.shown_view
        if view is None:
            return None
        query = query_index(self.settings.query, view.n_tokens)
        rows = (view.get("embed", None, query), view.get("pos_embed", None, query))
        rows += (view.get("resid_pre", 0, query),)
        return tuple(r.detach().cpu().float().numpy() for r in rows)

    def _head_data(self) -> HeadData | None:
        view = self.shown_view
        if view is None:
            return None
        layer, head = self.settings.layer, self.settings.head
        a = self._attn
        if a is None or (a.layer, a.head) != (layer, head):
            self._attn = HeadData.of(view, layer, head, self.pieces)
        return self._attn

    def _next_prediction(self) -> Prediction | None:
        view = self.shown_view
        if view is None:
            return None
        if self._prediction is None:
            step = self._shown_step_prediction()
            # A past step always shows what it sampled, whatever the parameters are now.
            if step is not None and (self.show_record or self.at_step is not None):
                self._prediction = step
            else:
                params = self.settings.params
                self._prediction = Prediction.preview(view.logits, params, self.pieces)
        return self._prediction

    def _shown_step_prediction(self) -> Prediction | None:
        steps = self.shown_step
        if steps and self._step_prediction is None:
            record = self.sampled[steps - 1]
            self._step_prediction = Prediction.of_record(record, steps, self.pieces)
        return self._step_prediction if steps else None
