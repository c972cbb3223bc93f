"""The deeper screens' figures against transformers' own activations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gpt2scope.engine import gpt2_tokenizer, load_model
from gpt2scope.engine.analysis import (
    HeadKind,
    HeadStats,
    attention_stages,
    block_internals,
    head_kind,
    head_stats,
    logit_lens_top,
)
from tests.conftest import write_checkpoint
from tools.train_demo import OUT_DIR

N_LAYER, N_HEAD, N_EMBD, VOCAB = 3, 4, 64, 300


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    directory = tmp_path_factory.mktemp("analysis")
    hf = write_checkpoint(directory, N_LAYER, N_HEAD, N_EMBD, 32, VOCAB, scale=8.0, seed=4)
    ids = torch.randint(0, VOCAB, (14,), generator=torch.Generator().manual_seed(9))
    run = load_model(directory).start(ids[:6].tolist())
    for t in ids[6:]:
        run.step(int(t))
    with torch.no_grad():
        out = hf(ids[None], output_attentions=True, output_hidden_states=True)
    return hf, out, run.view()


def test_stages_end_in_the_engines_head_output(pair):
    _, _, view = pair
    for layer, head, query in [(0, 0, 0), (1, 3, 7), (2, 1, 13)]:
        stages = attention_stages(view, layer, head, query)
        z = view.get("z", layer)[query, head].numpy()
        np.testing.assert_allclose(stages.row.z, z, atol=1e-5, rtol=0)


def test_stages_match_transformers_numbers(pair):
    hf, out, view = pair
    layer, head, query = 1, 2, 9
    stages = attention_stages(view, layer, head, query)
    block = hf.transformer.h[layer]
    with torch.no_grad():
        normalized = block.ln_1(out.hidden_states[layer][0, query])
    np.testing.assert_allclose(stages.normalized, normalized.numpy(), atol=1e-4, rtol=0)
    hf_pattern = out.attentions[layer][0, head, query].numpy()
    np.testing.assert_allclose(stages.row.pattern, hf_pattern, atol=1e-4, rtol=0)
    assert np.isneginf(stages.row.scores[query + 1 :]).all()
    visible = stages.row.raw_scores[: query + 1] / math.sqrt(N_EMBD // N_HEAD)
    np.testing.assert_allclose(stages.row.scores[: query + 1], visible, rtol=1e-6)
    row = out.hidden_states[layer][0, query]
    assert stages.ln_mean == pytest.approx(float(row.mean()), abs=1e-5)
    assert stages.ln_std == pytest.approx(float(row.std(unbiased=False)), rel=1e-4)


def test_logit_lens_reads_each_blocks_output(pair):
    hf, out, view = pair
    position = 10
    lens = logit_lens_top(view, position, k=5)
    rows = lens.rows
    assert [r.layer for r in rows] == list(range(N_LAYER))
    for layer, row in enumerate(rows):
        hidden = out.hidden_states[layer + 1][0, position]
        if layer < N_LAYER - 1:  # transformers' last hidden state already has ln_f applied
            hidden = hf.transformer.ln_f(hidden)
        with torch.no_grad():
            probs = torch.softmax(hidden @ hf.transformer.wte.weight.T, -1)
        expected = probs.topk(5)
        assert row.top_ids == tuple(expected.indices.tolist())
        assert row.top_probs == pytest.approx(expected.values.tolist(), abs=1e-5)
        assert row.target_prob == pytest.approx(float(probs[lens.target]), abs=1e-5)
    final = torch.softmax(out.logits[0, position], -1).topk(5)
    assert rows[-1].top_ids == tuple(final.indices.tolist())


def test_block_internals_add_up(tmp_path):
    hf = write_checkpoint(tmp_path, N_LAYER, N_HEAD, N_EMBD, 32, VOCAB, scale=8.0, seed=4)
    ids = torch.randint(0, VOCAB, (8,), generator=torch.Generator().manual_seed(2))
    layer, position = 1, 5
    block = hf.transformer.h[layer]
    captured = {}
    block.attn.register_forward_hook(lambda m, i, o: captured.update(attn=o[0][0, position]))
    block.mlp.act.register_forward_hook(lambda m, i, o: captured.update(mlp=o[0, position]))
    with torch.no_grad():
        out = hf(ids[None], output_hidden_states=True)
    view = load_model(tmp_path).start(ids.tolist()).view()
    internals = block_internals(view, layer, position)
    resid_pre = out.hidden_states[layer][0, position]
    resid_post = out.hidden_states[layer + 1][0, position]
    assert internals.resid_pre_norm == pytest.approx(float(resid_pre.norm()), rel=1e-5)
    assert internals.resid_post_norm == pytest.approx(float(resid_post.norm()), rel=1e-5)
    assert internals.attn_out_norm == pytest.approx(float(captured["attn"].norm()), rel=1e-4)
    mlp_out = resid_post - resid_pre - captured["attn"]
    assert internals.mlp_out_norm == pytest.approx(float(mlp_out.norm()), rel=1e-4)
    torch.testing.assert_close(internals.mlp_post, captured["mlp"], atol=1e-4, rtol=0)
    assert internals.mlp_post.shape == (4 * N_EMBD,)
    index, value = internals.top_neurons[0]
    assert index == int(captured["mlp"].argmax())
    assert value == pytest.approx(float(captured["mlp"].max()), abs=1e-4)


def reference_head(pattern: np.ndarray, tokens: list[int]) -> dict[str, float | None]:
    """One head's statistics by loops over its [T, T] pattern, as the docs define them."""
    T = len(tokens)
    rest = [1 - pattern[q, 0] for q in range(T)]
    entropy = [-(p * np.log2(np.clip(p, 1e-30, None))).sum() for p in pattern[1:]]

    def repeat(targets) -> float | None:
        rows = [(q, [j for j in range(1, q - 1) if targets(q, j)]) for q in range(1, T)]
        rows = [(q, js) for q, js in rows if js]
        if len(rows) < 3:
            return None
        return float(np.mean([pattern[q, js].sum() / rest[q] for q, js in rows]))

    return {
        "first_token": float(pattern[1:, 0].mean()),
        "previous_token": float(np.mean([pattern[q, q - 1] for q in range(1, T)])),
        "self_token": float(np.mean([pattern[q, q] for q in range(1, T)])),
        "sink_free_previous": float(np.mean([pattern[q, q - 1] / rest[q] for q in range(2, T)])),
        "sink_free_self": float(np.mean([pattern[q, q] / rest[q] for q in range(2, T)])),
        "entropy": float(np.mean(entropy)),
        "spread": float(np.mean([h / np.log2(q + 1) for q, h in enumerate(entropy, 1)])),
        "duplicate": repeat(lambda q, j: tokens[j] == tokens[q]),
        "induction": repeat(lambda q, j: tokens[j - 1] == tokens[q]),
    }


def test_head_stats_from_transformers_attentions(pair):
    _, out, view = pair
    tokens = list(view.tokens)
    stats = head_stats(view)
    assert len(stats) == N_LAYER * N_HEAD
    for s in stats:
        expected = reference_head(out.attentions[s.layer][0, s.head].numpy(), tokens)
        for name, value in expected.items():
            got = getattr(s, name)
            assert got == (None if value is None else pytest.approx(value, abs=1e-4)), name


def test_repeats_are_scored_on_the_tokens_after_earlier_occurrences(tmp_path):
    """A text with repeats, so that the duplicate and induction scores are defined."""
    write_checkpoint(tmp_path, N_LAYER, N_HEAD, N_EMBD, 32, VOCAB, scale=8.0, seed=4)
    first = torch.randint(0, VOCAB, (9,), generator=torch.Generator().manual_seed(5)).tolist()
    tokens = first + first
    view = load_model(tmp_path).start(tokens).view()
    for s in head_stats(view):
        pattern = view.get("pattern", s.layer)[s.head].numpy()
        expected = reference_head(pattern, tokens)
        assert expected["induction"] is not None
        assert s.induction == pytest.approx(expected["induction"], abs=1e-5)
        assert s.duplicate == pytest.approx(expected["duplicate"], abs=1e-5)


def test_value_weighted_stats_are_the_stats_of_the_value_weighted_pattern(pair):
    hf, out, view = pair
    d = N_EMBD // N_HEAD
    for s in head_stats(view, weighted=True):
        pattern = out.attentions[s.layer][0, s.head].numpy()
        norms = value_norms_by_hand(hf, out, s.layer, s.head, d)
        weighted = pattern * norms[None, :]
        weighted /= weighted.sum(-1, keepdims=True)
        expected = reference_head(weighted, list(view.tokens))
        assert s.first_token == pytest.approx(expected["first_token"], abs=1e-4)
        assert s.sink_free_previous == pytest.approx(expected["sink_free_previous"], abs=1e-4)
        assert s.entropy == pytest.approx(expected["entropy"], abs=1e-3)


def value_norms_by_hand(hf, out, layer: int, head: int, d: int) -> np.ndarray:
    """||v_j @ W_O[h]|| from transformers' ln_1 output, c_attn and c_proj (Conv1D, [in, out])."""
    attn = hf.transformer.h[layer].attn
    with torch.no_grad():
        x = hf.transformer.h[layer].ln_1(out.hidden_states[layer][0])
        v = attn.c_attn(x)[:, 2 * N_EMBD :][:, head * d : (head + 1) * d]
        written = v @ attn.c_proj.weight[head * d : (head + 1) * d]
    return written.norm(dim=-1).numpy()


def head(**numbers: float | None) -> HeadStats:
    base = dict(entropy=1.0, first_token=0.0, previous_token=0.0, self_token=0.0)
    base |= dict(sink_free_previous=0.0, sink_free_self=0.0, induction=None, duplicate=None)
    base |= dict(spread=0.3)
    return HeadStats(0, 0, **(base | numbers), kind=HeadKind.OTHER)


@pytest.mark.parametrize(
    ("numbers", "kind"),
    [
        ({"first_token": 0.9}, "first-token sink"),
        ({"sink_free_previous": 0.8}, "previous-token"),
        ({"sink_free_self": 0.7}, "self"),
        ({"induction": 0.6, "first_token": 0.9}, "induction"),  # named for the rest, not the sink
        ({"duplicate": 0.55}, "duplicate-token"),
        ({"first_token": 0.95, "sink_free_previous": 0.7}, "previous-token"),
        ({"first_token": 0.5}, "first-token sink"),  # half is enough
        ({"sink_free_previous": 0.499, "first_token": 0.3}, "other"),  # just short is not
        ({"first_token": 0.45, "spread": 0.8}, "broad"),
        ({"first_token": 0.3, "spread": 0.59}, "other"),  # sharp, somewhere else
        ({"sink_free_previous": 0.45, "sink_free_self": 0.45, "spread": 0.7}, "broad"),
    ],
)
def test_a_head_is_named_for_what_its_weight_does_apart_from_position_0(numbers, kind):
    assert head_kind(head(**numbers)) == kind


def test_the_demo_models_heads_are_named_after_their_own_statistics():
    """On the demo model heads of every kind but duplicate form over a sentence typed twice;
    a head's figures handed to the naming in the wrong order would name one wrongly."""
    demo = load_model(OUT_DIR)
    text = "The cat sat on the mat because the dog was asleep. " * 2
    stats = head_stats(demo.start(gpt2_tokenizer().encode(text)).view())
    named = {
        "previous-token": "sink_free_previous",
        "self": "self_token",
        "induction": "induction",
        "first-token sink": "first_token",
        "broad": "spread",
    }
    for s in stats:
        assert s.mass == getattr(s, {**named, "self": "sink_free_self"}[s.kind]), s
    kinds = {(s.layer, s.head): s.kind for s in stats}
    assert kinds[0, 2] == "previous-token" and kinds[0, 0] == kinds[0, 3] == "self"
    assert kinds[3, 0] == kinds[3, 2] == "induction"
    assert {s.kind for s in stats} >= set(named)


def test_single_token_stats_are_defined(tiny_model):
    stats = head_stats(tiny_model.start([464]).view())
    assert all(s.first_token == pytest.approx(1.0) and s.previous_token == 0.0 for s in stats)
