"""The pure parts of the UI: safe text, the prompt editor's escapes, the key ladders, and the
views drawn at many sizes (never wider than asked, never a control character, fast)."""

from __future__ import annotations

import math
import queue
import re
import unicodedata
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console
from rich.style import Style

from gpt2scope.engine import Finished, Runner, SamplingParams, State, gpt2_tokenizer, load_model
from gpt2scope.tui.keys import KEYS, LADDERS, keys_help, next_on_ladder
from gpt2scope.tui.session import ModelInfo, Session, Settings
from gpt2scope.tui.text import Pieces, editable, from_editable, running_texts, visible
from gpt2scope.tui.views import PANES, render_header
from gpt2scope.tui.views.attention import GAP, render_attention
from gpt2scope.tui.views.block import INDEX_WIDTH, strip_lines
from gpt2scope.tui.views.continuation import render_continuation, wrap
from gpt2scope.tui.views.embeddings import render_embeddings
from gpt2scope.tui.views.lens import probability as lens_probability
from gpt2scope.tui.views.page import wrapped_note
from gpt2scope.tui.views.probabilities import render_probabilities
from gpt2scope.tui.views.qkv import detailed, detailed_height
from gpt2scope.tui.views.query import render_query
from gpt2scope.tui.views.style import MASKED, signed, weight_cell
from gpt2scope.weights import DEMO_DIR
from tests.conftest import write_checkpoint

INVISIBLE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"}


@given(st.text())
def test_visible_leaves_nothing_invisible(text):
    shown = visible(text)
    assert not [c for c in shown if unicodedata.category(c) in INVISIBLE]


def test_visible_names_the_usual_suspects():
    assert visible("a b\nc\td\x1b[31m") == "a b↵c⇥d␛[31m"
    assert visible(" x", spaces=True) == "␣x"
    assert visible("\x00\x07\x7f") == "␀␇␡"
    assert visible("\u202e\u200b\x85") == "\\u202e\\u200b\\x85"


@given(st.text())
def test_the_editor_line_stands_for_the_prompt(text):
    line = editable(text)
    assert "\n" not in line
    assert not [c for c in line if unicodedata.category(c) in INVISIBLE]
    assert from_editable(line) == text


def test_a_backslash_that_starts_no_escape_is_kept():
    assert from_editable("C:\\path \\q \\x4") == "C:\\path \\q \\x4"
    assert from_editable("a\\nb\\x41\\u00e9") == "a\nbAé"


def test_signed_numbers_keep_their_width_however_large():
    assert [signed(x) for x in (1.5, -12.345, 103.9, -1234.5, 123456.0)] == [
        " +1.50",
        "-12.35",
        "+103.9",
        " -1234",
        "+123456",
    ]


def test_byte_pieces_show_their_bytes():
    tok = gpt2_tokenizer()
    ids = tok.encode("\u202e")  # three UTF-8 bytes, split over tokens
    pieces = Pieces(tok)
    labels = [pieces(i).label for i in ids]
    assert "".join(labels).startswith("\\x")
    assert pieces(tok.encode(" dog")[0]).label == "␣dog"
    # a space (or other ASCII) in a piece of bytes keeps its glyph: "␣\xe6", not "\x20\xe6"
    space_and_byte = next(i for i in tok.encode(" 日本") if tok.token_bytes(i)[:1] == b" ")
    label = pieces(space_and_byte).label
    assert label.startswith("␣\\x") and "\\x20" not in label


@pytest.mark.parametrize("name", sorted(LADDERS))
def test_ladders_move_one_rung_and_stop_at_the_ends(name):
    rungs = LADDERS[name]
    for lower, upper in zip(rungs, rungs[1:], strict=False):
        assert next_on_ladder(name, lower, 1) == upper
        assert next_on_ladder(name, upper, -1) == lower
    assert next_on_ladder(name, rungs[0], -1) == rungs[0]
    assert next_on_ladder(name, rungs[-1], 1) == rungs[-1]


def test_a_value_between_rungs_moves_to_the_next_rung():
    assert next_on_ladder("temperature", 0.75, 1) == 0.8
    assert next_on_ladder("temperature", 0.75, -1) == 0.7
    assert next_on_ladder("top_k", 7, -1) == 5


def test_help_lists_every_key():
    text = keys_help()
    for key in KEYS:
        assert key.help in text


def test_running_text_reads_characters_split_over_tokens_whole():
    tok = gpt2_tokenizer()
    pieces = Pieces(tok)
    text = "I 🙂 猫 café\u0301 \u202e x"
    shown = running_texts([pieces(i) for i in tok.encode(text)])
    assert "".join(shown) == "I 🙂 猫 café\u0301 \\u202e x"
    cut = [pieces(i) for i in tok.encode("猫")[:-1]]  # its last byte never comes
    assert running_texts(cut) == [None] * len(cut)


def test_running_text_draws_a_line_opening_combining_mark_on_a_base():
    tok = gpt2_tokenizer()
    pieces = Pieces(tok)
    body = wrap([pieces(i) for i in tok.encode("\u0301x\n\u0301y")], 40)
    lines = [body.line(i, lambda token: Style()).plain for i in range(len(body.rows))]
    assert lines[0].startswith("◌\u0301x") and lines[1] == "◌\u0301y"


def run_scope(model, prompt: str, length: int, **settings):
    """Run the prompt and a generation through a real runner, as the app does."""
    tok = gpt2_tokenizer()
    info = ModelInfo.of(model, "tiny", "path", "tiny")
    session = Session(info, tok, Settings(params=SamplingParams(), **settings))
    events: queue.Queue = queue.Queue()
    runner = Runner(model, events.put, SamplingParams(), 0, tok)
    runner.start_prompt(prompt)
    runner.generate(length)
    while not isinstance(event := events.get(timeout=60), Finished):
        session.apply(event)
    session.apply(event)
    runner.close()
    return session


@pytest.fixture(scope="module")
def session(tiny_model):
    prompt = "Tokens [bold]like[/] this\x1b[2J, tabs\tand\nnewlines — ünïcode 漢字 \u202e."
    return run_scope(tiny_model, prompt, 6, layer=1, head=3)


SIZES = [(12, 3), (24, 8), (38, 9), (60, 20), (78, 44), (158, 44)]


@pytest.mark.parametrize("width, height", SIZES)
@pytest.mark.parametrize("view", PANES, ids=lambda v: v.id)
def test_views_fit_the_width_and_show_no_control_characters(session, view, width, height):
    for query in (0, 5, None):
        session.update(query=query)
        lines = view.render(session.scope(), width, height).lines
        for line in lines:
            assert cell_len(line.plain) <= width
            assert not [c for c in line.plain if unicodedata.category(c) in INVISIBLE]


SUBSCRIPTS = str.maketrans("", "", "₀₁₂₃₄₅₆₇₈₉")


@pytest.mark.parametrize("width, height", [(60, 20), (78, 44), (158, 44)])
@pytest.mark.parametrize(
    ("render", "typed"),
    [
        (render_continuation, "Tokens [bold]like[/] this"),
        (render_embeddings, "Tokens ␣[ bold ] like [/ ]"),  # its pieces, ids dropped
    ],
)
def test_a_prompt_holding_rich_markup_is_shown_as_typed(session, render, typed, width, height):
    """The session's prompt holds "[bold]like[/]". Read as Rich markup it would lose its
    brackets and make "like" bold; the views that show the prompt's text show it as typed."""
    session.update(query=None)  # the last token is the query: nothing highlights "like"
    lines = render(session.scope(), width, height).lines
    found = [line for line in lines if typed in line.plain.translate(SUBSCRIPTS)]
    assert len(found) == 1
    line, console = found[0], Console()
    like = line.plain.index("like")
    assert not any(line.get_style_at_offset(console, like + i).bold for i in range(4))


def test_header_shows_model_head_query_and_settings(session):
    session.update(query=None)
    text = "\n".join(line.plain for line in render_header(session.scope(), 160))
    for part in ("tiny", "(path)", "L1 H3", "query", "T 0.80", "k 5", "p 1.00", "length", "seed 0"):
        assert part in text


@pytest.mark.parametrize("width", range(40, 161, 4))
def test_the_header_breaks_its_lines_in_the_same_places_whatever_the_token(session, width):
    """The query token and the runner's state change at every step of a generation, and
    the query with ← →; if they moved the header's line breaks, its height would change and
    every pane would jump a line (and be laid out and drawn again)."""
    layouts = set()
    for query in (None, *range(session.scope().n_tokens)):
        session.update(query=query)  # None follows the last token: " (last)"
        for state in State:
            lines = render_header(replace(session.scope(), state=state), width)
            layouts.add(tuple(line.plain.count("│") for line in lines))
    assert len(layouts) == 1


def test_attention_draws_the_masked_triangle_and_the_query_row(session):
    session.update(query=3)
    scope = session.scope()
    lines = [line.plain for line in render_attention(scope, 158, 60).lines]
    rows = [line for line in lines if line[:3].strip().isdigit()]
    assert len(rows) == scope.n_tokens
    assert MASKED not in rows[-1] and MASKED in rows[0]


def test_attention_windows_around_the_query_and_says_so(session):
    session.update(query=2)
    scope = session.scope()
    drawn = render_attention(scope, 38, 9)
    assert "rows 0-" in drawn.lines[0].plain
    session.update(query=None)
    drawn = render_attention(session.scope(), 38, 9)
    assert drawn.lines[0].plain.startswith("rows ")  # in short: too narrow for "of 39"


def test_attention_keeps_key_0_in_view_when_it_hides_earlier_keys(long_session):
    """Key 0 is where heads rest: when the window leaves out the keys after it, its column
    stays, with a gap column, and the heading says which keys are shown."""
    scope = long_session.scope()
    drawn = render_attention(scope, 78, 22)
    n = scope.n_tokens
    assert "keys 0, " in drawn.lines[0].plain and f"-{n - 1} of {n}" in drawn.lines[0].plain
    rows = [line.plain for line in drawn.lines if line.plain[:4].strip().isdigit()]
    assert rows and all(GAP in row for row in rows)
    first = rows[-1].index(GAP) - 1  # key 0's cell, just before the gap
    row = scope.attn.pattern_row(scope.query)
    assert rows[-1][first] == weight_cell(float(row[0]))[0]


@pytest.fixture(scope="module")
def long_session(tmp_path_factory):
    """A 256-token run with d_head 64, the size the render budget is set for."""
    directory = tmp_path_factory.mktemp("wide")
    write_checkpoint(directory, n_layer=1, n_head=4, n_embd=256, n_positions=256, scale=4.0)
    model = load_model(directory)
    tok = gpt2_tokenizer()
    ids = (tok.encode("The quick brown fox jumps over the lazy dog. ") * 40)[:250]
    info = ModelInfo.of(model, "wide", "path", "wide")
    session = Session(info, tok, Settings())
    events: queue.Queue = queue.Queue()
    runner = Runner(model, events.put, SamplingParams(), 0, tok)
    runner.start_tokens(ids)
    runner.generate(6)
    while not isinstance(event := events.get(timeout=60), Finished):
        session.apply(event)
    runner.close()
    return session


@pytest.mark.parametrize("width", [20, 40, 58, 70, 100, 150])
@pytest.mark.parametrize("as_numbers", [True, False])
def test_the_qkv_view_knows_each_layouts_height_before_drawing_it(long_session, width, as_numbers):
    scope = long_session.scope()
    a, query = scope.attn, scope.query
    n_keys = len(a.top_keys(query))
    expected = detailed_height(n_keys, a.q.shape[1], width, as_numbers)
    assert len(detailed(scope, a, query, width, as_numbers)) == expected


def test_a_token_the_demo_never_trained_on_is_marked_untrained():
    """The demo model's rows for tokens absent from its training text are zero; the pane
    says so instead of drawing a strip of dots with |x| 0.00."""
    demo = load_model(DEMO_DIR)
    wte = demo.params.wte
    tok = gpt2_tokenizer()
    # the first zero row whose token BPE gives back when it follows "The cat" as text
    untrained = next(
        i
        for i in (wte.abs().sum(-1) == 0).nonzero().flatten().tolist()
        if tok.encode("The cat" + tok.decode([i]))[2:] == [i]
    )
    prompt = "The cat" + tok.decode([untrained])
    session = run_scope(demo, prompt, 0)
    for query, marked in ((1, False), (2, True)):
        session.update(query=query)
        drawn = render_embeddings(session.scope(), 40, 16).lines
        wte_line = next(line.plain for line in drawn if line.plain.startswith("wte["))
        assert ("untrained: all 0" in wte_line) == marked, wte_line


def test_at_temperature_zero_only_the_argmax_is_kept(tiny_model):
    """Top-k 5 would keep five, but at T 0 only the argmax can come: the cut falls after it."""
    session = run_scope(tiny_model, "The cat sat on the", 0)
    session.update(params=SamplingParams(temperature=0.0, top_k=5))
    lines = [line.plain for line in render_probabilities(session.scope(), 40, 12).lines]
    divider = next(i for i, line in enumerate(lines) if "argmax only" in line)
    assert " 100% " in lines[divider - 1]  # p%, then the model's own T=1 column
    assert " cut " in lines[divider + 1]


@pytest.mark.parametrize("width", range(18, 80, 3))
def test_explanations_shorten_by_whole_phrases_not_mid_word(session, width):
    """A narrow pane drops whole phrases of its notes; a note cut mid-word ('softmax(sc',
    'pa', '<10') reads as a fault, and a formula cut short reads as a wrong one."""
    session.update(query=5)
    scope = session.scope()
    d = scope.info.config.d_head
    formulas = (
        f"w = softmax(score); score = q·k / √{d} = q·k / {math.sqrt(d):.2f}",
        f"w = softmax(score), score = q·k / √{d}",
        f"score = q·k / √{d}",
    )
    query_lines = render_query(scope, width, 200).lines
    assert query_lines[len(query_lines) - 1].plain in formulas or width < len(formulas[-1])
    heading = render_attention(scope, width, 20).lines[0].plain
    assert re.search(r"H\d+( pattern( · query \d+ .*)?)?$", heading), heading
    legend = [line.plain for line in render_continuation(scope, width, 20).lines]
    assert any(line.endswith("≥50%  10-50%  <10%") for line in legend)


def test_the_printed_header_has_no_app_only_parts(session):
    """inspect prints the status line: without the runner's state, and the demo note without
    the D key, which only the app has."""
    demo = replace(session.scope(), info=replace(session.scope().info, origin="demo"))
    live = "\n".join(line.plain for line in render_header(demo, 100))
    printed = "\n".join(line.plain for line in render_header(demo, 100, live=False))
    assert "● " in live and "D: " in live
    assert "● " not in printed and "D: " not in printed and "gpt2scope download" in printed


def test_probabilities_say_whose_prediction_they_show_when_the_query_moves(session):
    """← → move the query in every view but this one: the next token follows the last."""
    for query, said in ((0, True), (None, False)):
        session.update(query=query)
        top = " ".join(line.plain for line in render_probabilities(session.scope(), 60, 12).lines)
        assert ("after the last token" in top) == said


@pytest.mark.parametrize(
    ("p", "shown"),
    [
        (1.0, " 1.0"),
        (0.43, " .43"),
        (0.043, ".043"),
        (2.3e-3, "2e-3"),
        (2.3e-4, "2e-4"),
        (1.2e-9, "1e-9"),
        (3.4e-10, "  ≈0"),
    ],
)
def test_lens_probabilities_fit_four_cells_without_losing_their_exponent(p, shown):
    """3.4e-10 cut to four cells read '3e-1', a 30% chance."""
    assert lens_probability(p) == shown


@pytest.mark.parametrize(("width", "rows"), [(78, 7), (78, 3), (60, 9), (138, 12)])
@pytest.mark.parametrize("hot", [0, 158, 511, 1500, 3071])
def test_the_mlp_strip_puts_each_neuron_under_its_rows_label(width, rows, hot):
    """A row's label is its first neuron and every cell covers as many neurons: the one hot
    neuron shows in the cell the labels say holds it (uneven groups put it up to 90 off)."""
    values = np.zeros(3072, np.float32)
    values[hot] = 5.0
    about, lines = strip_lines(values, width, rows)
    per_cell = int(re.search(r"a cell per (\d+)? ?neuron", about.plain).group(1) or 1)
    assert len(lines) <= rows
    drawn = [(int(line.plain[:INDEX_WIDTH]), line.plain[INDEX_WIDTH + 1 :]) for line in lines]
    first, cells = next((first, cells) for first, cells in drawn if "█" in cells)
    assert first + cells.index("█") * per_cell <= hot < first + (cells.index("█") + 1) * per_cell


def test_a_note_wraps_to_the_cells_wide_characters_take():
    lines = wrapped_note("日本語 " * 4, 13)  # each word takes 6 cells, not 3
    assert [str(line) for line in lines] == ["日本語 日本語", "日本語 日本語"]
