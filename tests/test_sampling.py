from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt2scope.engine import SamplingParams, sample
from gpt2scope.engine.sampling import distributions

LOGITS = torch.tensor([4.0, 3.0, 2.5, 1.0, 0.0, -1.0, -3.0, -5.0])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_defaults_are_the_papers():
    assert SamplingParams() == SamplingParams(temperature=0.8, top_k=5, top_p=1.0)


@pytest.mark.parametrize("top_k", [0, 5])
def test_temperature_zero_is_argmax_and_one_hot(top_k):
    record = sample(LOGITS, SamplingParams(temperature=0.0, top_k=top_k), gen())
    assert record.token_id == 0 and record.rank == 0
    assert record.probability == 1.0
    assert record.candidate_probs_temperature[:2] == (1.0, 0.0)
    assert record.n_kept == 1  # only the argmax can come, whatever top-k would keep


def test_stages_are_softmax_then_temperature_then_cut():
    params = SamplingParams(temperature=2.0, top_k=3)
    dist = distributions(LOGITS, params)
    torch.testing.assert_close(dist.probs.float(), torch.softmax(LOGITS, -1))
    torch.testing.assert_close(dist.probs_temperature.float(), torch.softmax(LOGITS / 2, -1))
    top3 = torch.softmax(LOGITS[:3] / 2, -1)
    torch.testing.assert_close(dist.probs_filtered[:3].float(), top3)
    assert torch.all(dist.probs_filtered[3:] == 0)
    assert dist.n_kept == 3


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    probs = torch.softmax(LOGITS, -1)
    cumulative = torch.cumsum(probs, 0)
    dist = distributions(LOGITS, SamplingParams(temperature=1.0, top_k=0, top_p=0.9))
    expected = int((cumulative < 0.9).sum()) + 1
    assert dist.n_kept == expected
    assert cumulative[expected - 2] < 0.9 <= cumulative[expected - 1]


def test_top_p_zero_keeps_only_the_most_likely():
    assert distributions(LOGITS, SamplingParams(1.0, 0, 0.0)).n_kept == 1


def test_filters_off_keep_everything():
    assert distributions(LOGITS, SamplingParams(1.0, 0, 1.0)).n_kept == len(LOGITS)


def test_record_describes_the_choice():
    record = sample(LOGITS, SamplingParams(temperature=1.0, top_k=4), gen(5))
    probs = torch.softmax(LOGITS, -1)
    assert record.candidate_ids[: len(LOGITS)] == tuple(range(len(LOGITS)))
    assert record.rank == record.token_id  # logits are sorted descending
    assert record.model_probability == pytest.approx(float(probs[record.token_id]))
    expected_entropy = float(-(probs * torch.log2(probs)).sum())
    assert record.entropy == pytest.approx(expected_entropy)
    assert sum(record.candidate_probs_filtered[: record.n_kept]) == pytest.approx(1.0)
    kept = torch.softmax(LOGITS[:4], -1)
    assert record.sampled_entropy == pytest.approx(float(-(kept * torch.log2(kept)).sum()))


def test_same_seed_same_choices():
    params = SamplingParams(temperature=1.5, top_k=0)

    def choices(seed: int) -> list[int]:
        g = gen(seed)
        return [sample(LOGITS, params, g).token_id for _ in range(20)]

    assert choices(7) == choices(7)
    assert len(set(choices(7))) > 1  # a sequence that varies, so the seed has work to do
    assert choices(8) != choices(7)


def test_sampling_follows_the_filtered_distribution():
    params = SamplingParams(temperature=1.0, top_k=2)
    g = gen(0)
    counts = torch.zeros(len(LOGITS))
    for _ in range(2000):
        counts[sample(LOGITS, params, g).token_id] += 1
    expected = torch.softmax(LOGITS[:2], -1)
    assert counts[2:].sum() == 0
    assert abs(counts[0] / 2000 - expected[0]) < 0.04


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 5.01}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": -0.1}, "top_p"),
    ],
)
def test_out_of_range_parameters_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SamplingParams(**kwargs)


def test_top_k_above_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match="top_k must be in 0..8"):
        sample(LOGITS, SamplingParams(top_k=9), gen())


@settings(max_examples=60, deadline=None)
@given(
    logits=st.lists(st.floats(-30, 30), min_size=2, max_size=40),
    temperature=st.floats(0.0, 5.0),
    top_k=st.integers(0, 40),
    top_p=st.floats(0.0, 1.0),
)
def test_every_stage_is_a_finite_distribution(logits, temperature, top_k, top_p):
    logits = torch.tensor(logits)
    params = SamplingParams(temperature, min(top_k, len(logits)), top_p)
    dist = distributions(logits, params)
    for p in (dist.probs, dist.probs_temperature, dist.probs_filtered):
        assert torch.isfinite(p).all()
        assert math.isclose(float(p.sum()), 1.0, abs_tol=1e-5)
    record = sample(logits, params, gen())
    assert dist.probs_filtered[record.token_id] > 0
    assert 1 <= record.n_kept <= len(logits)
