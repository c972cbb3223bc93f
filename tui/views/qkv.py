"""The Q/K/V view: one attention row worked out in numbers. The query's q, the k and v of its
top keys, each q·k and its score, and z, the weighted sum of every key's v.

Three levels of detail, the first that fits the pane: every number; a glyph strip per
vector; one line per key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.text import Text

from gpt2scope.tui.session import HeadData, Scope
from gpt2scope.tui.text import fit
from gpt2scope.tui.views.common import Drawn, longest_fitting, no_run, piece_text
from gpt2scope.tui.views.spec import PaneSpec, on_head
from gpt2scope.tui.views.style import (
    DIM,
    HEADING,
    NOTE,
    percent,
    pooled,
    signed,
    signed_numbers,
    signed_strip,
)

NUMBER_WIDTH = 6
NAME_WIDTH = 7


def numbers_per_line(width: int) -> int:
    """16, 8 or 4, whichever fits, so that dimensions line up by index."""
    return next((n for n in (16, 8, 4) if n * NUMBER_WIDTH <= width), 1)


def numbers(values: np.ndarray, width: int) -> list[Text]:
    """The values in rows of `numbers_per_line`."""
    per_line = numbers_per_line(width)
    lines = []
    for start in range(0, len(values), per_line):
        chunk = values[start : start + per_line]
        lines.append(Text(signed_numbers(chunk, NUMBER_WIDTH)))
    return lines


def key_header(query: int, width: int, sqrt_d: float) -> Text:
    text = Text(f"keys of query {query}: score = q·k / {sqrt_d:.2f}, w = softmax(score)", NOTE)
    text.truncate(width)
    return text


@dataclass(frozen=True)
class KeyColumns:
    """Widths of the key table: k<index>, the key's label, then q·k (when it fits), score, w."""

    name_width: int
    label_width: int
    show_dot: bool

    @classmethod
    def fit(cls, n_tokens: int, width: int) -> KeyColumns:
        name_width = len(str(n_tokens - 1)) + 2
        show_dot = width >= 34
        numbers = (7 if show_dot else 0) + 7 + 6
        return cls(name_width, max(3, min(14, width - name_width - numbers)), show_dot)

    def header(self) -> Text:
        text = fit("key", self.name_width + self.label_width)
        text += " " + "q·k".rjust(6) if self.show_dot else ""
        return Text(text + " " + "score".rjust(6) + " " + "w".rjust(5), DIM)

    def row(self, scope: Scope, a: HeadData, query: int, key: int) -> Text:
        line = Text(f"k{key}".ljust(self.name_width), HEADING)
        line.append_text(piece_text(scope.pieces[key], self.label_width, pad=True))
        if self.show_dot:
            line.append(" " + signed(float(a.q[query] @ a.k[key])))
        line.append(" " + signed(float(a.scores_row(query)[key])) + " ")
        line.append(percent(float(a.pattern_row(query)[key])), HEADING)
        return line


def vector(name: str, values: np.ndarray, width: int, as_numbers: bool) -> list[Text]:
    """A name, then the values: every number, or a glyph strip and the norm |x|."""
    norm = float(np.linalg.norm(values))
    head = Text(f"{name:<{NAME_WIDTH}}", HEADING)
    if as_numbers:
        body = numbers(values, width - NAME_WIDTH)
        per_line = len(body[0].plain) // NUMBER_WIDTH
        offsets = (
            # "d8", not "[8]": brackets are positions (q[7]), these are dimensions
            Text(f"d{i * per_line}".rjust(NAME_WIDTH - 1) + " ", DIM)
            for i in range(1, len(body))
        )
        return [head + body[0], *(offset + b for offset, b in zip(offsets, body[1:], strict=True))]
    scale = float(np.abs(values).max()) or 1.0
    label = f" |{name.strip().split('[')[0]}| {norm:.2f}"
    strip_width = max(1, width - NAME_WIDTH - len(label))
    return [head + signed_strip(pooled(values, strip_width), scale) + Text(label, DIM)]


def detailed(scope: Scope, a: HeadData, query: int, width: int, as_numbers: bool) -> list[Text]:
    keys = a.top_keys(query)
    lines = [*vector(f"q[{query}]", a.q[query], width, as_numbers)]
    columns = KeyColumns.fit(scope.n_tokens, width)
    lines += [key_header(query, width, math.sqrt(a.q.shape[1])), columns.header()]
    for j in keys:
        lines.append(columns.row(scope, a, query, j))
        lines += vector(f" k[{j}]", a.k[j], width, as_numbers)
        lines += vector(f" v[{j}]", a.v[j], width, as_numbers)
    lines += z_lines(a, query, keys, width, as_numbers)
    return lines


def detailed_height(n_keys: int, d_head: int, width: int, as_numbers: bool) -> int:
    """How many lines `detailed` makes, known without drawing them."""
    vector_lines = math.ceil(d_head / numbers_per_line(width - NAME_WIDTH)) if as_numbers else 1
    return vector_lines + 2 + n_keys * (1 + 2 * vector_lines) + 1 + vector_lines


def z_lines(a: HeadData, query: int, keys: list[int], width: int, as_numbers: bool) -> list[Text]:
    share = float(a.pattern_row(query)[keys].sum())
    if query == 0:
        note = Text("z = v[0]: its one key, itself, has all the weight", NOTE)
    else:
        top = f"the top {len(keys)} carry" if len(keys) > 1 else "the top one carries"
        note = Text(f"z = Σ w·v over all {query + 1} keys; {top} {percent(share).strip()}", NOTE)
    return [note, *vector(f"z[{query}]", a.z_row(query), width, as_numbers)]


def brief(scope: Scope, a: HeadData, query: int, width: int) -> list[Text]:
    """One line per top key and one for q and z: what fits in a small pane."""
    keys = a.top_keys(query)
    q_scale = float(np.abs(a.q[query]).max()) or 1.0
    q_line = Text(f"q[{query}] |q| {np.linalg.norm(a.q[query]):.2f} ", HEADING)
    q_line.append_text(signed_strip(pooled(a.q[query], max(1, width - q_line.cell_len)), q_scale))
    columns = KeyColumns.fit(scope.n_tokens, width)
    lines = [q_line, columns.header()]
    lines += [columns.row(scope, a, query, j) for j in keys]
    z = a.z_row(query)
    z_scale = float(np.abs(z).max()) or 1.0
    z_line = Text(f"z[{query}] |z| {np.linalg.norm(z):.2f} ", HEADING)
    z_line.append_text(signed_strip(pooled(z, max(1, width - z_line.cell_len)), z_scale))
    return [*lines, z_line]


def render_qkv(scope: Scope, width: int, height: int) -> Drawn:
    a, query = scope.attn, scope.query
    if a is None or query is None:
        return no_run(width)
    s, d = scope.settings, scope.info.config.d_head
    title = Text(f"L{s.layer} H{s.head} " if width >= 40 else "", HEADING)
    title.append(f"query {query} ", HEADING)
    title.append_text(piece_text(scope.query_piece, 12))
    versions = (f" · d_head {d}, √{d} = {math.sqrt(d):.2f}", f" · d_head {d}", "")
    title.append(longest_fitting(versions, width - title.cell_len), DIM)
    n_keys = len(a.top_keys(query))
    fits = [detailed_height(n_keys, d, width, numeric) + 1 <= height for numeric in (True, False)]
    if any(fits):
        body = detailed(scope, a, query, width, as_numbers=fits[0])
    else:
        body = brief(scope, a, query, width)
    drawn = Drawn([title, *body], pinned=1)
    for line in drawn.lines:
        line.truncate(width)
    return drawn


def qkv_numbers(scope: Scope) -> dict[str, Any]:
    a, query = scope.attn, scope.query
    keys = a.top_keys(query)
    return {
        "q": a.q[query].tolist(),
        "keys": [
            {
                "index": j,
                "k": a.k[j].tolist(),
                "v": a.v[j].tolist(),
                "dot": float(np.dot(a.q[query].astype(np.float64), a.k[j])),
                "score": float(a.scores_row(query)[j]),
                "weight": float(a.pattern_row(query)[j]),
            }
            for j in keys
        ],
        "z": a.z_row(query).tolist(),
    }


def qkv_json(scope: Scope) -> dict[str, Any]:
    return {"qkv": qkv_numbers(scope)}


SPEC = PaneSpec(
    id="qkv",
    title="Q/K/V",
    render=render_qkv,
    about="one attention row in numbers: q of the query, k and v of its top 5 keys, each q·k, "
    "its score (q·k/√d_head) and weight, and z = Σ w·v over all keys",
    depends=on_head,
    json=qkv_json,
    caption=(
        "the numbers behind the row: score = q·k / √d for each key, and z = Σ w v",
        "score = q·k / √d for each key, z = Σ w v",
        "score = q·k/√d; z = Σ w v",
        "z = Σ w v",
    ),
)
