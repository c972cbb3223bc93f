"""The contributions screen's figure and drawing, the status line and the Probabilities view
while something is knocked out: their numbers against transformers' GPT-2 on a random
checkpoint and against the engine's attribution, and what a user reads off the screen."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rich.cells import cell_len

from gpt2scope.engine import Ablation, Prefilled, gpt2_tokenizer, load_model
from gpt2scope.engine.ablation import NO_ABLATION
from gpt2scope.engine.attribution import attribution
from gpt2scope.tui.session import ModelInfo, Session, Settings
from gpt2scope.tui.text import Pieces
from gpt2scope.tui.views import SCREEN_BY_ID, render_header
from gpt2scope.tui.views.attribution import (
    SPEC,
    contributions_json,
    moved_target,
    render_contributions,
    toggled_contrast,
)
from gpt2scope.tui.views.page import Page
from gpt2scope.tui.views.probabilities import render_probabilities
from tests.conftest import write_checkpoint

PROMPT_IDS = [11, 263, 42, 7, 199, 15, 88, 3, 42, 7]
VOCAB = 300
SCREEN = (78, 19)  # the sheet of a deeper screen in an 80x24 terminal


def session_on(model, ids, settings=None, ablation=NO_ABLATION, query=None):
    info = ModelInfo.of(model, "test", "path", "test")
    session = Session(info, gpt2_tokenizer(), settings or Settings())
    session.apply(Prefilled(1, model.start(ids, ablation).view()))
    session.update(query=query)
    return session


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("why")
    hf = write_checkpoint(directory, 3, 4, 64, 32, VOCAB, scale=8.0, seed=5)
    return hf, load_model(directory)


@pytest.fixture(scope="module")
def gpt2_small_shape(tmp_path_factory):
    """12 layers x 12 heads, the grid of GPT-2 small, on a narrow model."""
    directory = tmp_path_factory.mktemp("twelve")
    write_checkpoint(directory, 12, 12, 48, 32, VOCAB, scale=2.0, seed=1)
    return load_model(directory)


def page_of(session, figure=None):
    scope = session.scope()
    if figure is None:
        figure = SPEC.figure(scope, session.pieces)
    return Page(scope, figure, scope)


@pytest.mark.parametrize("query", [4, len(PROMPT_IDS) - 1])
def test_the_figure_is_the_engines_attribution_and_adds_up_to_transformers_logit(checkpoint, query):
    hf, model = checkpoint
    session = session_on(model, PROMPT_IDS, query=query)
    scope = session.scope()
    f = SPEC.figure(scope, session.pieces)
    a = f.attribution
    # the default target: the next token of the text, after the last one the top prediction
    with torch.no_grad():
        logits = hf(torch.tensor([PROMPT_IDS])).logits[0, query].double()
    next_token = PROMPT_IDS[query + 1] if query + 1 < len(PROMPT_IDS) else int(logits.argmax())
    assert a.target == next_token
    assert f.target_logit == pytest.approx(float(logits[a.target]), rel=1e-4)
    assert f.target_prob == pytest.approx(float(torch.softmax(logits, -1)[a.target]), rel=1e-4)
    engine = attribution(scope.view, query, a.target)
    assert [c.value for c in a.components] == [c.value for c in engine.components]
    # the grid, the MLP column and the fixed terms are every component: they add up
    grid_sum = f.heads.sum() + f.mlps.sum() + f.embed + f.biases + f.ln_f_bias
    assert grid_sum == pytest.approx(float(logits[a.target]), rel=1e-4)
    for c in a.components:
        if c.head is not None:
            assert f.heads[c.layer, c.head] == c.value


def test_contrast_is_the_runner_up_and_the_terms_add_up_to_the_logit_difference(checkpoint):
    hf, model = checkpoint
    session = session_on(model, PROMPT_IDS)
    session.update(contrast=toggled_contrast(session.scope()))
    scope = session.scope()
    f = SPEC.figure(scope, session.pieces)
    with torch.no_grad():
        logits = hf(torch.tensor([PROMPT_IDS])).logits[0, -1].double()
    first, second = torch.topk(logits, 2).indices.tolist()
    assert (f.attribution.target, f.attribution.contrast) == (first, second)
    difference = float(logits[first] - logits[second])
    assert f.attribution.model_value == pytest.approx(difference, rel=1e-4)
    assert sum(c.value for c in f.attribution.components) == pytest.approx(difference, rel=1e-4)
    session.update(contrast=toggled_contrast(scope))
    assert session.scope().settings.contrast is None


def test_x_moves_the_target_through_the_top_predictions_and_back(checkpoint):
    hf, model = checkpoint
    session = session_on(model, PROMPT_IDS)
    with torch.no_grad():
        logits = hf(torch.tensor([PROMPT_IDS])).logits[0, -1]
    top = torch.topk(logits, 10).indices.tolist()
    seen = []
    for _ in range(10):
        session.update(**moved_target(session.scope(), 1))
        scope = session.scope()
        seen.append(SPEC.figure(scope, session.pieces))
    assert [f.attribution.target for f in seen] == top[1:] + top[:1]
    assert session.settings.target is None  # back on the default: it follows the run again
    session.update(**moved_target(session.scope(), -1))
    assert session.settings.target == top[-1]


def test_json_names_every_component_as_the_issue_writes_them(checkpoint):
    _, model = checkpoint
    session = session_on(model, PROMPT_IDS)
    page = page_of(session)
    data = contributions_json(page.figure, page.scope, session.pieces)
    names = [c["name"] for c in data["components"]]
    assert names[0] == "embed" and names[-1] == "ln_f.bias"
    assert names[1:7] == ["L0H0", "L0H1", "L0H2", "L0H3", "L0.attn_bias", "L0.mlp"]
    assert len(names) == 1 + 3 * (4 + 2) + 1
    assert data["target"]["id"] == page.figure.attribution.target
    assert data["contrast"] is None
    assert sum(c["value"] for c in data["components"]) == pytest.approx(data["total"], rel=1e-6)
    assert data["total"] == pytest.approx(page.figure.attribution.model_value, rel=1e-4)
    assert SCREEN_BY_ID["attribution"].json is contributions_json


def test_twelve_by_twelve_fits_one_screenful_at_80x24(gpt2_small_shape):
    session = session_on(gpt2_small_shape, PROMPT_IDS, Settings(layer=5, head=7))
    page = page_of(session)
    drawn = render_contributions(page, *SCREEN)
    lines = [line.plain for line in drawn.lines]
    assert len(lines) <= SCREEN[1]
    assert all(cell_len(line) <= SCREEN[0] for line in lines)
    rows = [line for line in lines if line.startswith("L") and line[1].isdigit()]
    assert [row.split()[0] for row in rows] == [f"L{i}" for i in range(12)]
    # the strongest pusher reads as + and the densest glyph without colour
    f = page.figure
    layer, head = np.unravel_index(
        np.abs(np.concatenate([f.heads, f.mlps[:, None]], 1)).argmax(), (12, 13)
    )
    row = rows[layer]
    cell = row[4 + 3 * head : 4 + 3 * head + 2] if head < 12 else row[4 + 36 + 1 : 4 + 36 + 3]
    value = f.heads[layer, head] if head < 12 else f.mlps[layer]
    assert cell == ("+█" if value > 0 else "−█")
    assert "pushers" in "\n".join(lines) and "pullers" in "\n".join(lines)


def test_deep_models_scroll_to_the_selected_layer(tmp_path):
    write_checkpoint(tmp_path, 48, 4, 32, 32, VOCAB, scale=1.0, seed=2)
    model = load_model(tmp_path)
    session = session_on(model, PROMPT_IDS[:4], Settings(layer=40))
    drawn = render_contributions(page_of(session), *SCREEN)
    assert len(drawn.lines) > SCREEN[1]
    assert drawn.lines[drawn.focus].plain.startswith("L40 ")
    assert drawn.pinned and drawn.pinned < drawn.focus


def test_the_saliency_strip_ends_at_the_query_with_a_signed_glyph_per_token(checkpoint):
    _, model = checkpoint
    session = session_on(model, PROMPT_IDS, query=5)
    page = page_of(session)
    scores = page.figure.saliency
    assert len(scores) == 6
    lines = [line.plain for line in render_contributions(page, *SCREEN).lines]
    strip = next(line for line in lines if line.startswith("saliency"))
    signs = [cell[0] for cell in strip.split()[1:]]
    assert signs == ["+" if s > 0 else "−" if s < 0 else " " for s in scores]


def test_a_strip_cut_on_the_left_says_so(checkpoint):
    _, model = checkpoint
    whole = [
        line.plain
        for line in render_contributions(page_of(session_on(model, PROMPT_IDS)), *SCREEN).lines
    ]
    assert next(line for line in whole if line.startswith("tokens"))[:9] == "tokens   "
    long_ids = PROMPT_IDS * 3  # 30 tokens: more than 78 cells hold
    page = page_of(session_on(model, long_ids))
    lines = [line.plain for line in render_contributions(page, *SCREEN).lines]
    tokens = next(line for line in lines if line.startswith("tokens"))
    assert tokens[:9] == "tokens  …"
    glyphs = next(line for line in lines if line.startswith("saliency"))
    assert len(glyphs.split()) - 1 < len(long_ids)  # fewer cells than tokens, the last ones


def test_the_status_line_names_the_knock_outs(checkpoint):
    _, model = checkpoint
    session = session_on(model, PROMPT_IDS)
    assert "off:" not in "".join(t.plain for t in render_header(session.scope(), 160))
    session.set_ablation(Ablation(heads=frozenset({(2, 1), (0, 3)}), mlps=frozenset({1})))
    header = "".join(t.plain for t in render_header(session.scope(), 160))
    assert "off: L0H3 L1mlp L2H1 · zero" in header


def test_probabilities_show_intact_before_knocked_out_after_and_their_kl(checkpoint):
    hf, model = checkpoint
    ablation = Ablation(heads=frozenset({(0, 1), (1, 2)}))
    session = session_on(model, PROMPT_IDS, ablation=ablation)
    session.set_ablation(ablation)
    view = session.intact_wanted()
    assert view is not None and view.ablation == ablation
    with torch.no_grad():
        intact = hf(torch.tensor([PROMPT_IDS])).logits[0, -1]
    session.keep_intact(view.tokens, intact)
    assert session.intact_wanted() is None
    scope = session.scope()
    before = torch.softmax(intact.double(), -1)
    after = torch.softmax(view.logits.double(), -1)
    ids = [c.piece.token_id for c in scope.prediction.candidates]
    np.testing.assert_allclose(scope.shift.before, before[ids].numpy(), rtol=1e-4)
    kl = float((before * (before.log() - after.log())).sum()) / np.log(2)
    assert scope.shift.kl_bits == pytest.approx(kl, rel=1e-3)
    text = "\n".join(line.plain for line in render_probabilities(scope, 60, 20).lines)
    assert f"KL(intact‖now) {kl:.3f} bits" in text
    top = scope.prediction.candidates[0]
    assert f"{before[ids[0]] * 100:4.1f}→{top.prob * 100:4.1f}" in text


def test_an_intact_run_asks_for_no_intact_model(checkpoint):
    _, model = checkpoint
    session = session_on(model, PROMPT_IDS)
    assert session.intact_wanted() is None
    assert session.scope().shift is None
    text = "\n".join(line.plain for line in render_probabilities(session.scope(), 60, 20).lines)
    assert "intact" not in text


def test_pieces_name_the_target_in_the_drawing(checkpoint):
    _, model = checkpoint
    session = session_on(model, PROMPT_IDS)
    page = page_of(session)
    label = Pieces(gpt2_tokenizer())(page.figure.attribution.target).label
    assert f"target {label}" in render_contributions(page, *SCREEN).lines[1].plain
