"""Pure functions from a `Scope` to lines of Rich `Text`, one module per view. The panes
draw them and `gpt2scope inspect` prints them, so both show the same thing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gpt2scope.tui.session import Scope
from gpt2scope.tui.views.attention import render_attention
from gpt2scope.tui.views.common import Drawn
from gpt2scope.tui.views.continuation import render_continuation
from gpt2scope.tui.views.embeddings import render_embeddings
from gpt2scope.tui.views.header import render_header
from gpt2scope.tui.views.probabilities import render_probabilities
from gpt2scope.tui.views.qkv import render_qkv
from gpt2scope.tui.views.query import render_query


@dataclass(frozen=True)
class View:
    id: str
    title: str
    render: Callable[[Scope, int, int], Drawn]
    about: str  # one line for the help screen: what the numbers mean
    # What the drawing depends on, so a pane can skip redrawing when none of it changed.
    # Objects by id: the scopes compared are both alive, so their ids cannot collide.
    depends: Callable[[Scope], tuple]


def on_view(scope: Scope) -> tuple:
    return id(scope.view), scope.query


def on_head(scope: Scope) -> tuple:
    return id(scope.attn), scope.query


def on_prediction(scope: Scope) -> tuple:
    return id(scope.prediction), scope.query_is_last  # "after the last token" or not


def on_run(scope: Scope) -> tuple:
    return id(scope.view), scope.query, scope.state, scope.finish


VIEWS = (
    View(
        "embeddings",
        "Embeddings",
        render_embeddings,
        "the prompt's BPE pieces with ids (· space, ↵ newline, \\xNN bytes); for the selected "
        "token its wte row, wpe row and their sum (resid_pre[0]): each cell the largest |x| "
        "of its dims, glyph density |x| / max, orange +, blue -",
        on_view,
    ),
    View(
        "attention",
        "Attention",
        render_attention,
        "pattern[query, key] of layer L head H: queries down, keys across; glyph and colour "
        "grow with the weight (·░▒▓█ on a √ scale, 0 to 1), ╱ where the key is in the "
        "query's future (masked); beside it the q, k, v maps, one cell per dimension",
        on_head,
    ),
    View(
        "probabilities",
        "Probabilities",
        render_probabilities,
        "the next-token candidates by logit, after the last token: bar = probability after "
        "temperature (█ kept, ░ cut by top-k/top-p), p% = what it is sampled with (kept, "
        "renormalised), T=1 = the model's own; ▸ the token chosen; entropy in bits, model's → "
        "sampled from",
        on_prediction,
    ),
    View(
        "query",
        "Query",
        render_query,
        "every key the selected query may see, heaviest first: w% = attention weight, score "
        "= q·k/√d_head before the softmax; ★ the top 5",
        on_head,
    ),
    View(
        "qkv",
        "Q/K/V",
        render_qkv,
        "one attention row in numbers: q of the query, k and v of its top 5 keys, each q·k, "
        "its score (q·k/√d_head) and weight, and z = Σ w·v over all keys",
        on_head,
    ),
    View(
        "continuation",
        "Continuation",
        render_continuation,
        "the prompt, then each generated token styled by the probability it was sampled with "
        "(bold green ≥50%, orange 10-50%, underlined red <10%); step count, cache length, "
        "why it stopped",
        on_run,
    ),
)

__all__ = ["VIEWS", "Drawn", "View", "render_header"]
