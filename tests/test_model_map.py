"""The model map at every GPT-2 size's grid, the value-weighted toggle in the panes, and the
probe in inspect's JSON."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from rich.cells import cell_len

from gpt2scope.engine import gpt2_tokenizer, load_model
from gpt2scope.engine.analysis import HeadKind, HeadStats
from gpt2scope.engine.probe import induction_probe
from gpt2scope.tui.cli import main
from gpt2scope.tui.views import SCREEN_BY_ID
from gpt2scope.tui.views.attention import render_attention
from gpt2scope.tui.views.model_map import KINDS, NAMED, MapFigure, render_model_map
from gpt2scope.tui.views.page import Page
from gpt2scope.tui.views.query import render_query
from tests.conftest import write_checkpoint
from tests.test_attribution_view import session_on

GRIDS = [(12, 12), (24, 16), (36, 20), (48, 25)]
SIZES = [(80, 22), (120, 38), (200, 58)]


def synthetic(n_layer: int, n_head: int) -> MapFigure:
    """Heads of every kind in turn, with numbers that differ per head."""
    kinds = list(HeadKind)
    stats = []
    for layer in range(n_layer):
        for head in range(n_head):
            x = (layer * n_head + head) % 97 / 97
            kind = kinds[(layer + head) % len(kinds)]
            stats.append(HeadStats(layer, head, 3 * x, x, 1 - x, x / 2, 1 - x, x, x, 0.1, x, kind))
    return MapFigure(tuple(stats), 1024, False)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("map")
    write_checkpoint(directory, 2, 4, 64, 64, scale=8.0, seed=1)
    return load_model(directory)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("size", SIZES)
def test_every_head_has_its_cell_at_every_size(model, grid, size):
    n_layer, n_head = grid
    width, height = size
    figure = synthetic(n_layer, n_head)
    scope = session_on(model, [464, 3797, 3332]).scope()
    drawn = render_model_map(Page(scope, figure, scope), width, height)
    lines = [line.plain for line in drawn.lines]
    assert all(cell_len(line) <= width for line in lines)
    rows = [line for line in lines if line[:1] == "L" and line[1].isdigit() and " H" not in line]
    assert [row.split()[0] for row in rows] == [f"L{i}" for i in range(n_layer)]
    label = len(f"L{n_layer - 1}") + 1
    for layer, row in enumerate(rows):
        cells = row[label:].split("│")[0]
        cell = (len(cells) + 1) // n_head if "│" in row else len(cells) // n_head
        names = [
            KINDS[h.kind].short if cell > NAMED else KINDS[h.kind].code for h in figure.layer(layer)
        ]
        # each head's cell starts with its kind, in order: none is cut off
        assert [cells[i * cell : i * cell + len(name)] for i, name in enumerate(names)] == names
    # every column is named: by H and its number, its number, or at least its last digit
    header = lines[lines.index(rows[0]) - 1]
    cells = rows[0][label:].split("│")[0]
    cell = (len(cells) + 1) // n_head if "│" in rows[0] else len(cells) // n_head
    for head in range(n_head):
        name = header[label + head * cell : label + (head + 1) * cell].strip()
        assert name in (f"H{head}", str(head), str(head % 10))
    summary = "│  ≥30% on 0" in "\n".join(lines)
    assert summary or "per-layer summary: needs a wider terminal" in "\n".join(lines)
    # the counts stay at the bottom, whatever scrolls
    assert drawn.footer >= 1
    footer = " ".join(lines[-drawn.footer :])
    for kind, k in KINDS.items():
        count = sum(h.kind == kind for h in figure.stats)
        assert f"{k.code} {k.word} {count}" in footer


def test_a_short_terminal_keeps_eight_layers_of_xl_in_sight_with_the_probe_on(model):
    scope = session_on(model, [464, 3797, 3332]).scope()
    probe = induction_probe(scope.view.config, scope.view.params, scope.view.ablation, 8, 0)
    figure = replace(synthetic(48, 25), probe=probe)
    width, height = 78, 19  # the map's pane in an 80x24 terminal
    drawn = render_model_map(Page(scope, figure, scope), width, height)
    lines = [line.plain for line in drawn.lines]
    assert all(cell_len(line) <= width for line in lines)
    # what scrolls between the pinned heading and the counts, less the two scroll hints
    assert height - drawn.pinned - drawn.footer - 2 >= 8
    assert lines[drawn.pinned].startswith("L0 ")
    footer = " ".join(lines[-drawn.footer :])
    for kind, k in KINDS.items():
        assert f"{k.code} {k.short} {sum(h.kind == kind for h in figure.stats)}" in footer
    assert any("knocked out: first" in line for line in lines[: drawn.pinned])


def test_wide_cells_show_the_named_score_and_the_entropy(model):
    figure = synthetic(12, 12)
    scope = session_on(model, [464, 3797, 3332]).scope()
    lines = [line.plain for line in render_model_map(Page(scope, figure, scope), 240, 60).lines]
    h = figure.stats[5]
    row = next(line for line in lines if line.startswith("L0 ") and "·" not in line)
    named = "" if h.mass is None else f"{round(h.mass * 100)}%"
    entropy = f"{h.entropy:.1f}b"
    assert f"{KINDS[h.kind].short:<6}{named:>4} {entropy:>5}" in row


def test_w_switches_attention_and_query_to_value_weighted_norms(model):
    session = session_on(model, [464, 3797, 3332, 319, 262])
    plain = [line.plain for line in render_attention(session.scope(), 60, 20).lines]
    session.update(value_weighted=True)
    scope = session.scope()
    weighted = [line.plain for line in render_attention(scope, 60, 20).lines]
    assert "pattern" in plain[0] and "value-weighted" in weighted[0]
    query = [line.plain for line in render_query(scope, 60, 20).lines]
    assert "vw%" in query[3] and query[2].startswith("writes")
    # keys sorted by the value-weighted share, the first one's numbers being the head's
    row = scope.attn.weighted_row(scope.query)
    top = int(row[: scope.query + 1].argmax())
    assert query[4].split()[1] == str(top)


def test_inspect_writes_the_probe_and_the_sink_free_scores(tmp_path, capsys):
    write_checkpoint(tmp_path, 2, 4, 64, 80, scale=8.0, seed=2)
    args = ["inspect", "--weights", str(tmp_path), "--prompt", "The cat sat", "--length", "0"]
    args += ["--format", "json", "--induction-probe", "8", "--value-weighted", "--seed", "3"]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    probe = data["induction_probe"]
    assert (probe["seed"], probe["n"]) == (3, 8)
    tokens = probe["tokens"]
    assert tokens[0] == 50256 and tokens[1:9] == tokens[9:]
    assert len(probe["heads"]) == 8
    assert {"sink_free_previous", "sink_free_self", "kind"} <= set(data["head_stats"][0])
    assert {h["kind"] for h in data["head_stats"]} <= {k.value for k in HeadKind}
    T = len(data["tokens"])
    assert len(data["value_weighted"]) == T
    sums = torch.tensor(data["value_weighted"]).sum(-1)
    torch.testing.assert_close(sums, torch.ones(T, dtype=sums.dtype), atol=1e-5, rtol=0)
    assert SCREEN_BY_ID["head_stats"].keys[-1].key == "i"
    assert gpt2_tokenizer().decode(tokens[1:9])  # real tokens
