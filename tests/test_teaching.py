"""Issue #26 without its lessons: panes that say what they mean, a screen readable on a
projector and in every theme, and the glitches found in the same pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
from textual.filter import ANSIToTruecolor, Monochrome
from textual.widgets._footer import FooterKey

from gpt2scope.tui.keys import KEYS
from gpt2scope.tui.lessons import find
from gpt2scope.tui.text import visible
from gpt2scope.tui.views import PANES, SCREENS
from gpt2scope.tui.views.attention import axis_label
from gpt2scope.tui.views.lens import probability as lens_probability
from gpt2scope.tui.views.model_map import KINDS, Grid
from gpt2scope.tui.views.model_map import legend as map_legend
from gpt2scope.tui.views.qkv import vector, z_lines
from gpt2scope.tui.widgets import Pane, PromptInput
from tests.driver import make_app, settle, shown

pytestmark = pytest.mark.anyio

SENTENCE = "The quick brown fox jumps over the lazy dog because it was very tired"  # 14 tokens
PROMPT = "The cat sat on the mat because it was tired."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def lines_of(pane: Pane) -> list[str]:
    return shown(pane).splitlines()


# Panes that say what they mean.


async def test_i_puts_a_caption_on_every_pane_and_takes_it_off(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        panes = {spec.id: app.query_one(f"#{spec.id}", Pane) for spec in PANES}
        before = {name: lines_of(pane)[0] for name, pane in panes.items()}
        await pilot.press("i")
        await pilot.pause()
        for spec in PANES:
            first = lines_of(panes[spec.id])[0]
            assert spec.caption and first in spec.caption, (spec.id, first)
        assert "softmax(q·k" in lines_of(panes["attention"])[0]  # its formula
        await pilot.press("i")
        await pilot.pause()
        assert {name: lines_of(pane)[0] for name, pane in panes.items()} == before


async def test_probabilities_at_80x24_head_their_columns_and_say_what_is_hidden(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, top_k=50)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = shown(app.query_one("#probabilities", Pane))
        assert "token" in text and "p%" in text and "T=1" in text
        n = len(app.scope.prediction.candidates)
        hidden = n - sum(line.startswith(("  ", "▸ ")) for line in text.splitlines()[1:])
        assert hidden > 0 and "▾" in text  # the rows cut off say so


async def test_query_pane_gives_the_rows_entropy_against_a_uniform_rows(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT, layer=1, head=2)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        scope = app.scope
        a, query = scope.attn, scope.query
        # the row worked out again from q and k, not read from the view
        scores = a.k[: query + 1] @ a.q[query] / math.sqrt(a.q.shape[1])
        w = np.exp(scores - scores.max())
        w /= w.sum()
        entropy = float(-(w * np.log2(w)).sum())
        text = shown(app.query_one("#query", Pane))
        assert f"{entropy:.2f}" in text and f"{math.log2(query + 1):.2f}" in text


async def test_home_end_braces_jump_and_keys_at_a_limit_say_so(tiny_model):
    app = make_app(tiny_model, prompt=PROMPT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        last = app.scope.n_tokens - 1
        await pilot.press("home")
        assert app.scope.query == 0
        await pilot.press("left")
        await pilot.pause()
        assert any("first token" in n.message for n in app._notifications)
        await pilot.press("end")
        assert app.scope.query == last
        await pilot.press("right_curly_bracket")
        assert app.scope.settings.layer == tiny_model.config.n_layer - 1
        await pilot.press("left_curly_bracket")
        assert app.scope.settings.layer == 0
        await pilot.press("left_square_bracket")
        await pilot.pause()
        assert any("already at layer 0" in n.message for n in app._notifications)


# Readable on a projector and in every terminal.


async def test_attention_at_120x40_shows_every_row_and_the_keys_labels(tiny_model):
    app = make_app(tiny_model, prompt=SENTENCE)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.scope.n_tokens == 14
        lines = lines_of(app.query_one("#attention", Pane))
        rows = [line for line in lines if line[:2].strip().isdigit()]
        assert [int(line[:2]) for line in rows] == list(range(14))
        at = lines.index(rows[0])
        labels = lines[1:at]  # the key axis, written downwards
        column = rows[0].index("█")  # key 0's cells: the first token sees only itself
        cell = len(rows[0][column:]) - len(rows[0][column:].lstrip("█"))
        for j, piece in enumerate(app.scope.pieces):
            word = axis_label(piece.label)
            down = "".join(line[column + cell * j] for line in labels).strip()
            assert len(down) >= min(3, len(word)) and word.startswith(down), (word, down)


async def test_v_gives_the_pattern_the_width_of_the_maps(tiny_model):
    app = make_app(tiny_model, prompt=SENTENCE)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        pane = app.query_one("#attention", Pane)
        assert "q 0-" in shown(pane)
        await pilot.press("v")
        await pilot.pause()
        assert "q 0-" not in shown(pane) and "███╱" in shown(pane)  # 3 cells a key


@pytest.mark.parametrize("how", ["flag", "key"])
async def test_class_layout_shows_four_big_panes(tiny_model, how):
    app = make_app(tiny_model, prompt=PROMPT, layout="class" if how == "flag" else "six")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        if how == "key":
            await pilot.press("C")
            await pilot.pause()
        shown_panes = {p.id for p in app.query(Pane) if p.display and p.region.area}
        assert shown_panes == {"attention", "probabilities", "query", "continuation"}
        grid = app.query_one("#panes")
        assert app.query_one("#attention").region.height == grid.region.height
        await pilot.press("C")
        await pilot.pause()
        assert len([p for p in app.query(Pane) if p.display]) == 6


def wcag(rgb) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(x) for x in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def ratio(a, b) -> float:
    la, lb = sorted((wcag(a), wcag(b)))
    return (lb + 0.05) / (la + 0.05)


def worst_contrast(app, monochrome: bool = False) -> tuple[float, str]:
    """The least contrast of any glyph in the panes against its background, and the glyph."""
    worst = (99.0, "")
    filters = (ANSIToTruecolor(app.ansi_theme), Monochrome())  # as NO_COLOR has them
    for pane in app.query(Pane):
        if not pane.display or not pane.region.area:
            continue
        for strip in pane.strips():
            segments = list(strip)
            for filter_ in filters if monochrome else ():
                segments = filter_.apply(segments, pane.styles.background)
            worst = min(worst, least_contrast(app, segments))
    return worst


def least_contrast(app, segments) -> tuple[float, str]:
    worst = (99.0, "")
    for text, style, _ in segments:
        if not text.strip() or style is None or style.reverse or style.bgcolor is None:
            continue
        fg = style.color.get_truecolor(app.ansi_theme)
        bg = style.bgcolor.get_truecolor(app.ansi_theme, foreground=False)
        worst = min(worst, (ratio(fg, bg), text))
    return worst


def region_contrast(app, region) -> tuple[float, str]:
    """The least contrast of any glyph in a region of the screen as composed."""
    strips = app.screen._compositor.render_strips()[region.y : region.bottom]
    crops = (strip.crop(region.x, region.right) for strip in strips)
    return min((least_contrast(app, list(crop)) for crop in crops), default=(99.0, ""))


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light", "solarized-light", "nord"])
async def test_every_glyph_stands_out_from_the_themes_background(tiny_model, theme):
    app = make_app(tiny_model, prompt=PROMPT, length=8)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        app.theme = theme
        await pilot.pause()
        least, glyph = worst_contrast(app)
        assert least >= 3.0, (theme, glyph, least)


async def test_no_color_greys_keep_low_weights_and_the_legend_readable(tiny_model):
    """NO_COLOR draws every colour as a grey of its luminance (Textual's Monochrome)."""
    app = make_app(tiny_model, prompt=PROMPT, length=8)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        least, glyph = worst_contrast(app, monochrome=True)
        assert least >= 2.5, (glyph, least)
        assert "<10%" in shown(app.query_one("#continuation", Pane))


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light", "solarized-light"])
@pytest.mark.parametrize(
    "key, selector",
    [
        ("question_mark", "#help"),
        ("L", "#lesson-list"),
        ("D", "DownloadScreen > Vertical"),
        ("P", "Screen"),
        ("", "LessonBar"),  # a lesson started, its bar
    ],
)
async def test_help_dialogs_and_the_lesson_bar_stand_out_in_every_theme(
    tiny_model, theme, key, selector
):
    """What covers the panes (help, the lesson list, the download dialog, patching) and the
    lesson bar are as readable as the panes; the panes a dialog or a lesson dims are not
    counted."""
    app = make_app(tiny_model, "demo", "demo", prompt=PROMPT, length=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.theme = theme
        if key:
            await pilot.press(key)
        else:
            app.start_lesson(find("mask"))
        await settle(pilot)
        region = (
            app.screen.region if selector == "Screen" else app.screen.query_one(selector).region
        )
        least, glyph = region_contrast(app, region)
        assert least >= 3.0, (theme, glyph, least)


# The glitches found in the same pass.


async def test_separators_are_not_token_glyphs(tiny_model):
    """`query 15 · · 16 keys` read as two separators; the space is its own glyph now."""
    space, tab = visible(" ", spaces=True), visible("\t")
    assert {space, tab}.isdisjoint({"·", "→"})
    app = make_app(tiny_model, prompt="a b c d")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        head = lines_of(app.query_one("#query", Pane))[0]
        assert head.split(" · ")[0] == f"query {app.scope.query} {app.scope.query_piece.label}"


def test_model_map_legend_does_not_name_self_with_the_sinks_letter():
    sink, self_ = (
        KINDS[next(k for k in KINDS if "sink" in k)],
        KINDS[next(k for k in KINDS if k == "self")],
    )
    legend = map_legend(Grid(4, 10, True, True), 200)[-1].plain
    masses = next(part for part in legend.split(" · ") if "mass on position 0" in part)
    codes = masses.split(":")[0].split()
    assert sink.code.lower() not in codes and self_.code in codes


def test_dimension_offsets_are_not_written_as_positions():
    lines = vector("q[7]", np.linspace(-1, 1, 32), 60, as_numbers=True)
    assert len(lines) > 1
    for line in lines[1:]:
        assert "[" not in line.plain and line.plain.split()[0].startswith("d")


def test_the_logit_lens_writes_one_unit_in_its_column():
    shown_ = [lens_probability(p) for p in np.logspace(-8, 0, 60)]
    assert not any("%" in s for s in shown_) and any("e-" in s for s in shown_)


def test_help_and_palette_texts_have_no_markdown():
    keys = [*KEYS, *(k for s in SCREENS for k in s.keys)]
    assert not [k.help for k in keys if "`" in k.help]


def test_z_at_the_first_token_speaks_of_one_key(tiny_model):
    from tests.test_tui_views import run_scope

    scope = run_scope(tiny_model, PROMPT, 0).scope()
    a = scope.attn
    note = z_lines(a, 0, a.top_keys(0), 60, False)[0].plain
    assert "1 keys" not in note and "top 1 carry" not in note


async def test_zoomed_probabilities_use_the_width_for_long_tokens(tiny_model):
    from gpt2scope.tui.views.probabilities import render_probabilities
    from tests.test_tui_views import run_scope

    scope = run_scope(tiny_model, PROMPT, 3).scope()
    long = max((c.piece.label for c in scope.prediction.candidates), key=len)
    narrow = "\n".join(t.plain for t in render_probabilities(scope, 50, 30).lines)
    wide = "\n".join(t.plain for t in render_probabilities(scope, 120, 30).lines)
    if len(long) > 14:
        assert long not in narrow
    assert long in wide


@pytest.mark.parametrize("screen", ["m", "h"])
async def test_deeper_footers_fit_80_columns_with_the_way_out(tiny_model, screen):
    app = make_app(tiny_model, prompt=PROMPT, length=2)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        await pilot.press(screen)
        await settle(pilot)
        await pilot.pause(0.2)
        keys = [k for k in app.screen.query(FooterKey) if k.region.width]
        assert {"back", "prompt", "quit"} <= {k.description for k in keys}
        assert all(k.region.right <= 80 for k in keys)


async def test_stage_5_at_80x24_opens_with_every_key_in_view(tiny_model):
    app = make_app(tiny_model)  # the sample sentence
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.focus_panes()
        await pilot.press("a", "down", "down", "down", "down")
        await settle(pilot)
        text = shown(app.screen.query_one(Pane))
        assert "stage 5 of 5" in text and "more lines" not in text


async def test_the_opening_editor_says_how_to_quit(tiny_model):
    app = make_app(tiny_model)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.query_one(PromptInput).has_focus
        keys = {(k.key_display, k.description) for k in app.screen.query(FooterKey)}
        assert ("ctrl+q", "quit") in keys


def test_inspect_text_has_no_interactive_hints_or_markdown(capsys, tiny_checkpoint):
    from gpt2scope.tui.cli import main

    args = ["inspect", "--weights", str(tiny_checkpoint), "--prompt", PROMPT, "--length", "2"]
    assert main([*args, "--format", "text"]) == 0
    out = capsys.readouterr().out
    assert "enter: put" not in out and "`length`" not in out
