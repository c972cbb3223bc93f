"""What the patching screen draws, on the demo model and its built-in examples: the map's
columns name what is patched in, the legend says what each mode shows, and a pair the
model does not separate is flagged with its spread."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpt2scope.engine import gpt2_tokenizer, load_model
from gpt2scope.engine.patching import estimate
from gpt2scope.tui.text import Pieces
from gpt2scope.tui.views.patching import EXAMPLES, pair_of, patching, render_patching
from gpt2scope.weights import DEMO_DIR

WIDTH = 78  # the sheet at 80 columns


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_DIR), gpt2_tokenizer()


def ld(model, ids: list[int], answer: int, contrast: int) -> float:
    logits = model.start(ids).logits
    return float(logits[answer] - logits[contrast])


def shown_pair(demo, name: str, mode: str = "exact"):
    model, tok = demo
    example = next(e for e in EXAMPLES if e.name == name)
    ids = [tok.encode(text) for text in (example.clean, example.corrupt)]
    chosen = [tok.encode(t)[0] for t in (example.answer, example.contrast)]
    pieces = Pieces(tok)
    pair = pair_of(model.config, model.params, *ids, pieces, *chosen)
    return patching(pair, pieces, estimate(pair), mode=mode), ids, chosen


def lines(p) -> list[str]:
    return [line.plain for line in render_patching(p, WIDTH, 30).lines]


def test_the_columns_name_the_clean_tokens_and_mark_where_the_corrupted_differ(demo):
    p, (clean, corrupt), _ = shown_pair(demo, "induction")
    tok = demo[1]
    drawn = render_patching(p, WIDTH, 30).lines
    labels = next(line for line in drawn if line.plain.lstrip().startswith("The"))
    differing = [i for i, (a, b) in enumerate(zip(clean, corrupt, strict=True)) if a != b]
    assert differing  # the example changes some words
    for i in differing:
        clean_label = tok.decode([clean[i]]).replace(" ", "␣")
        corrupt_label = tok.decode([corrupt[i]]).replace(" ", "␣")
        assert f"*{clean_label}" in labels.plain and corrupt_label not in labels.plain
        # reversed, as the differing tokens in the prompt lines above
        at = labels.plain.index(f"*{clean_label}")
        assert any(s.start <= at < s.end and s.style.reverse for s in labels.spans)
    assert "*clean ≠ corrupted" in "\n".join(lines(p))


def test_the_legend_says_what_each_mode_shows(demo):
    p, _, _ = shown_pair(demo, "induction")
    for mode in ("exact", "estimate"):
        assert any("1 = clean restored" in line for line in lines(replace(p, mode=mode)))
    legend = [line for line in lines(replace(p, mode="difference")) if "−█" in line]
    assert legend and "estimate − exact" in legend[0] and "clean restored" not in legend[0]


def test_a_pair_the_model_does_not_separate_is_flagged_with_its_spread(demo):
    """On the demo model the indirect-object pair has LD_clean < LD_corrupt."""
    model = demo[0]
    p, (clean, corrupt), (answer, contrast) = shown_pair(demo, "indirect object")
    spread = ld(model, clean, answer, contrast) - ld(model, corrupt, answer, contrast)
    assert spread < 0
    flagged = [line for line in lines(p) if "does not separate the answer" in line]
    assert len(flagged) == 1 and f"LD_clean − LD_corrupt = {spread:+.2f}" in flagged[0]
    assert len(flagged[0]) <= WIDTH
    swapped, _, _ = shown_pair(demo, "induction")
    assert not any("does not separate" in line for line in lines(swapped))


def test_the_first_example_x_loads_is_one_the_demo_model_separates(demo):
    model, tok = demo
    first = EXAMPLES[0]
    answer, contrast = tok.encode(first.answer)[0], tok.encode(first.contrast)[0]
    clean, corrupt = tok.encode(first.clean), tok.encode(first.corrupt)
    assert ld(model, clean, answer, contrast) - ld(model, corrupt, answer, contrast) > 1.0
