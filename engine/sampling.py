"""Turning next-token logits into a choice, keeping every intermediate distribution."""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_TEMPERATURE = 5.0
N_CANDIDATES = 64


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 means argmax; top_k 0 and top_p 1 switch those filters off."""

    temperature: float = 0.8
    top_k: int = 5
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.temperature <= MAX_TEMPERATURE):
            raise ValueError(f"temperature must be in 0..{MAX_TEMPERATURE}, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be 0 (off) or a positive count, got {self.top_k}")
        if not (0.0 <= self.top_p <= 1.0):
            raise ValueError(f"top_p must be in 0..1, got {self.top_p}")


@dataclass(frozen=True)
class Distributions:
    """Full-vocabulary probabilities at each stage of sampling."""

    probs: torch.Tensor  # softmax(logits): the model's own distribution
    probs_temperature: torch.Tensor  # softmax(logits / temperature)
    probs_filtered: torch.Tensor  # after top-k and top-p, renormalised: sampled from
    n_kept: int  # tokens that survived top-k/top-p


@dataclass(frozen=True)
class SampleRecord:
    """One choice and the distributions behind it, over the N most likely candidates.

    Candidates are sorted by logit, which temperature does not reorder, so the tokens kept
    by top-k/top-p are always the first `n_kept` of them.
    """

    token_id: int
    rank: int  # 0 = the model's most likely token
    probability: float  # in the distribution it was sampled from
    model_probability: float  # in the model's own distribution (temperature 1, no filter)
    entropy: float  # bits, of the model's own distribution
    sampled_entropy: float  # bits, of the distribution it was sampled from
    n_kept: int  # tokens that survived top-k/top-p
    candidate_ids: tuple[int, ...]
    candidate_probs: tuple[float, ...]
    candidate_probs_temperature: tuple[float, ...]
    candidate_probs_filtered: tuple[float, ...]
    params: SamplingParams


def entropy_bits(probs: torch.Tensor) -> float:
    logp = torch.log2(probs.clamp_min(1e-45))
    return float(-(probs * logp).sum())


def keep_mask(sorted_probs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Which of the probabilities (sorted descending) survive top-k, then top-p."""
    keep = torch.ones_like(sorted_probs, dtype=torch.bool)
    if top_k:
        keep[top_k:] = False
    if top_p < 1.0:
        kept = sorted_probs * keep
        kept = kept / kept.sum()
        mass_before = torch.cumsum(kept, 0) - kept
        keep &= mass_before < top_p
        keep[0] = True
    return keep


def distributions(logits: torch.Tensor, params: SamplingParams) -> Distributions:
    # float64 so that any temperature the range allows, however small, stays representable.
    logits = logits.double()
    if params.top_k > logits.shape[-1]:
        raise ValueError(f"top_k must be in 0..{logits.shape[-1]}, got {params.top_k}")
    probs = torch.softmax(logits, -1)
    if params.temperature == 0:
        probs_temperature = torch.zeros_like(probs)
        probs_temperature[int(torch.argmax(logits))] = 1.0
    else:
        # Shifting by the max first keeps tiny temperatures from overflowing to inf - inf.
        probs_temperature = torch.softmax((logits - logits.max()) / params.temperature, -1)
    sorted_probs, order = torch.sort(probs_temperature, descending=True, stable=True)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order] = keep_mask(sorted_probs, params.top_k, params.top_p)
    filtered = probs_temperature * keep
    return Distributions(probs, probs_temperature, filtered / filtered.sum(), int(keep.sum()))


def sample(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> SampleRecord:
    """Choose the next token; temperature 0 is argmax and draws nothing from the generator."""
    dist = distributions(logits, params)
    if params.temperature == 0:
        token_id = int(torch.argmax(dist.probs_filtered))
    else:
        token_id = int(torch.multinomial(dist.probs_filtered.cpu(), 1, generator=generator))
    return describe_choice(logits, dist, token_id, params)


def choose(logits: torch.Tensor, params: SamplingParams, token_id: int) -> SampleRecord:
    """The record of a token the user picked instead of one drawn, e.g. to branch history."""
    if not 0 <= token_id < logits.shape[-1]:
        raise ValueError(f"token id must be in 0..{logits.shape[-1] - 1}, got {token_id}")
    return describe_choice(logits, distributions(logits, params), token_id, params)


def describe_choice(
    logits: torch.Tensor, dist: Distributions, token_id: int, params: SamplingParams
) -> SampleRecord:
    order = torch.sort(logits, descending=True, stable=True).indices
    top = order[:N_CANDIDATES]
    return SampleRecord(
        token_id=token_id,
        rank=int((order == token_id).nonzero()[0, 0]),
        probability=float(dist.probs_filtered[token_id]),
        model_probability=float(dist.probs[token_id]),
        entropy=entropy_bits(dist.probs),
        sampled_entropy=entropy_bits(dist.probs_filtered),
        n_kept=dist.n_kept,
        candidate_ids=tuple(top.tolist()),
        candidate_probs=tuple(dist.probs[top].tolist()),
        candidate_probs_temperature=tuple(dist.probs_temperature[top].tolist()),
        candidate_probs_filtered=tuple(dist.probs_filtered[top].tolist()),
        params=params,
    )
