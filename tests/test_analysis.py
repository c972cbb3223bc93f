"""The deeper screens' figures against transformers' own activations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gpt2scope.engine import gpt2_tokenizer, load_model
from gpt2scope.engine.analysis import (
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


def test_head_stats_from_transformers_attentions(pair):
    _, out, view = pair
    stats = head_stats(view)
    assert len(stats) == N_LAYER * N_HEAD
    for s in stats:
        pattern = out.attentions[s.layer][0, s.head]
        T = pattern.shape[0]
        assert s.first_token == pytest.approx(float(pattern[1:, 0].mean()), abs=1e-5)
        previous = torch.stack([pattern[i, i - 1] for i in range(1, T)]).mean()
        assert s.previous_token == pytest.approx(float(previous), abs=1e-5)
        own = torch.stack([pattern[i, i] for i in range(1, T)]).mean()
        assert s.self_token == pytest.approx(float(own), abs=1e-5)
        rows = pattern[1:]
        entropy = -(rows * torch.log2(rows.clamp_min(1e-30))).sum(-1).mean()
        assert s.entropy == pytest.approx(float(entropy), abs=1e-4)


@pytest.mark.parametrize(
    ("first", "previous", "own", "kind"),
    [
        (0.90, 0.05, 0.05, "first-token sink"),
        (0.10, 0.80, 0.10, "previous-token"),
        (0.20, 0.10, 0.70, "self"),
        (0.45, 0.45, 0.10, "other"),  # spread over two places, neither holds half
        (0.30, 0.20, 0.10, "other"),  # looking somewhere none of the three measure
        (0.50, 0.30, 0.20, "first-token sink"),  # half is enough
        (0.10, 0.499, 0.40, "other"),  # just short of half is not
    ],
)
def test_a_head_is_named_after_the_place_holding_half_its_attention(first, previous, own, kind):
    assert head_kind(first, previous, own) == kind


def test_the_demo_models_heads_are_named_after_their_own_statistics():
    """On the demo model heads of every kind form, so a head's figures handed to the naming
    in the wrong order would give some head a name its figures do not bear out."""
    demo = load_model(OUT_DIR)
    ids = gpt2_tokenizer().encode("The best thing about the truth is that it is short.")
    stats = head_stats(demo.start(ids).view())
    labels = {"first-token sink": "first_token", "previous-token": "previous_token"}
    labels["self"] = "self_token"
    for s in stats:
        best = max(labels, key=lambda label: getattr(s, labels[label]))
        assert s.kind == (best if getattr(s, labels[best]) >= 0.5 else "other"), s
        assert s.mass == (getattr(s, labels[s.kind]) if s.kind != "other" else None)
    assert {s.kind for s in stats} == {*labels, "other"}


def test_single_token_stats_are_defined(tiny_model):
    stats = head_stats(tiny_model.start([464]).view())
    assert all(s.first_token == pytest.approx(1.0) and s.previous_token == 0.0 for s in stats)
