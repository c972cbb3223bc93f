"""Property tests over prompts and parameters: the tokenizer round-trips through the editor,
every sampling record is a finite distribution, attention rows sum to 1 with the causal mask
exact, and every view draws at any size within its width."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.cells import cell_len

from gpt2scope.engine import SamplingParams, gpt2_tokenizer, sample
from gpt2scope.engine.sampling import N_CANDIDATES, distributions
from gpt2scope.tui.session import HeadData
from gpt2scope.tui.text import Pieces, editable, from_editable
from gpt2scope.tui.views import PANES
from tests.reliability import COMBINING_IDS, NASTY_PROMPT, WIDE_TEXT, session_of, unsafe_in

tok = gpt2_tokenizer()
EOT = tok.eot_id
# Any text a str can hold and UTF-8 can encode: lone surrogates cannot be typed or pasted.
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
fixture_settings = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@settings(max_examples=200, deadline=None)
@given(texts)
def test_a_prompt_round_trips_through_the_editor_and_the_tokenizer(text):
    prompt = from_editable(editable(text))
    ids = tok.encode(prompt)
    assert all(0 <= i < EOT for i in ids)  # typed text never becomes end-of-text
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")
    assert tok.decode(ids) == text


def prompt_ids(text: str, n: int = 32) -> list[int]:
    """The prompt's last `n` tokens: enough for logits shaped like a real model's."""
    return (tok.encode(text) or [EOT])[-n:]


@fixture_settings
@given(
    text=texts,
    temperature=st.one_of(st.just(0.0), st.floats(1e-6, 5.0), st.just(5.0)),
    top_k=st.one_of(st.integers(0, 100), st.just(50257)),
    top_p=st.one_of(st.just(0.0), st.floats(0.0, 1.0), st.just(1.0)),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),  # flat, as the model gives, very peaked
    seed=st.integers(0, 2**32),
)
@pytest.mark.slow
def test_every_sampling_record_is_a_finite_distribution(
    tiny_model, text, temperature, top_k, top_p, scale, seed
):
    logits = tiny_model.start(prompt_ids(text)).logits * scale
    params = SamplingParams(temperature, top_k, top_p)
    dist = distributions(logits, params)
    for probs in (dist.probs, dist.probs_temperature, dist.probs_filtered):
        assert torch.isfinite(probs).all() and (probs >= 0).all()
        assert math.isclose(float(probs.sum()), 1.0, abs_tol=1e-9)
    record = sample(logits, params, torch.Generator().manual_seed(seed))
    for column in ("candidate_probs", "candidate_probs_temperature", "candidate_probs_filtered"):
        values = np.array(getattr(record, column))
        assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()
    if record.n_kept <= N_CANDIDATES:
        kept = record.candidate_probs_filtered[: record.n_kept]
        assert math.isclose(sum(kept), 1.0, abs_tol=1e-9)
    assert 0 < record.probability <= 1 and math.isfinite(record.entropy)
    assert record.entropy >= 0 and 0 <= record.rank < tiny_model.config.vocab_size


@fixture_settings
@given(
    ids=st.lists(st.integers(0, EOT), min_size=1, max_size=128),
    layer=st.integers(0, 1),
    head=st.integers(0, 3),
)
@pytest.mark.slow
def test_attention_rows_sum_to_one_with_the_mask_exact(tiny_model, ids, layer, head):
    view = tiny_model.start(ids).view()
    pattern = view.get("pattern", layer)[head]
    assert torch.isfinite(pattern).all() and (pattern >= 0).all()
    torch.testing.assert_close(pattern.sum(-1), torch.ones(len(ids)), atol=1e-5, rtol=0)
    assert (torch.triu(pattern, 1) == 0).all()
    scores = view.get("attn_scores", layer)[head]
    assert (scores[torch.triu(torch.ones_like(scores, dtype=torch.bool), 1)] == -math.inf).all()
    shown = HeadData.of(view, layer, head, Pieces(gpt2_tokenizer())).pattern  # as drawn
    assert (np.triu(shown, 1) == 0).all()
    np.testing.assert_allclose(shown.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(shown, pattern.numpy(), atol=1e-5)


@pytest.fixture(scope="module")
def awkward_session(tiny_model):
    """Controls, escapes, bidi, zero-width, wide and combining characters, and a run."""
    ids = tok.encode(NASTY_PROMPT)[-80:] + tok.encode(WIDE_TEXT) + COMBINING_IDS + [EOT]
    return session_of(tiny_model, ids, 4)


@settings(max_examples=100, deadline=None)
@given(
    width=st.integers(1, 250),
    height=st.integers(1, 80),
    query=st.one_of(st.none(), st.integers(0, 200)),
    layer=st.integers(0, 1),
    head=st.integers(0, 3),
)
@pytest.mark.slow
def test_every_view_draws_at_any_size_within_its_width(
    awkward_session, width, height, query, layer, head
):
    awkward_session.update(query=query, layer=layer, head=head)
    scope = awkward_session.scope()
    for view in PANES:
        for line in view.render(scope, width, height).lines:
            assert cell_len(line.plain) <= width, view.id
            assert not unsafe_in(line.plain), view.id
