"""Turning next-token logits into a choice, keeping every intermediate distribution."""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_TEMPERATURE = 5.0
N_CANDIDATES = 64


class BadParam(ValueError):
    """A sampling parameter out of its range; `name`, `value` and `rule` let a front end
    word it its own way (the command line names its flags)."""

    def __init__(self, name: str, value: float, rule: str) -> None:
        super().__init__(f"{name} must be {rule}, got {value}")
        self.name, self.value, self.rule = name, value, rule


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 means argmax; top_k 0 and top_p 1 switch those filters off."""

    temperature: float = 0.8
    top_k: int = 5
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.temperature <= MAX_TEMPERATURE):
            raise BadParam("temperature", self.temperature, f"in 0..{MAX_TEMPERATURE:g}")
        if self.top_k < 0:
            raise BadParam("top_k", self.top_k, "0 (off) or a count of tokens")
        if not (0.0 <= self.top_p <= 1.0):
            raise BadParam("top_p", self.top_p, "in 0..1 (1 = off)")


@dataclass(frozen=True)
class Distributions:
    """Full-vocabulary probabilities at each stage of sampling."""

    probs: torch.Tensor  # softmax(logits): the model's own distribution
    probs_temperature: torch.Tensor  # softmax(logits / temperature)
    probs_filtered: torch.Tensor  # after top-k and top-p, renormalised: sampled from
    n_kept: int  # tokens that survived top-k/top-p
    kept_ids: torch.Tensor | None  # those tokens, most likely first; None: nothing filtered


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
    return max(0.0, float(-(probs * logp).sum()))  # one certain token gives -0.0


def stable_top(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k of `torch.sort(values, descending=True, stable=True)`: values and indices.

    Sorting the whole vocabulary every token costs milliseconds; top-k finds the k-th value,
    and only the values at or above it (k, plus any ties) are sorted, stably, so that ties
    still come in index order.
    """
    if k >= values.shape[-1]:
        top, order = torch.sort(values, descending=True, stable=True)
        return top, order
    threshold = torch.topk(values, k, sorted=False).values.min()
    candidates = (values >= threshold).nonzero().squeeze(-1)
    top, order = torch.sort(values[candidates], descending=True, stable=True)
    return top[:k], candidates[order[:k]]


def n_surviving(head: torch.Tensor, top_k: int, top_p: float, mass: torch.Tensor) -> int:
    """How many of the most likely tokens survive top-k, then top-p. `head` holds the first
    probabilities in descending order and `mass` the whole distribution's sum; what
    survives is always a prefix, since top-p keeps tokens while the mass before them < p."""
    if top_k:
        head = head[:top_k]
        mass = head.sum()
    if top_p >= 1.0:
        return head.shape[-1]
    share = head / mass
    mass_before = torch.cumsum(share, 0) - share
    return max(1, int((mass_before < top_p).sum()))


def surviving_ids(
    logits: torch.Tensor, probs_temperature: torch.Tensor, params: SamplingParams
) -> torch.Tensor:
    """The ids top-k and top-p keep, most likely first. Temperature does not reorder tokens,
    so they are the head of the logits' order (tokens whose probabilities tie only by
    underflowing to 0 may come in another order than a sort of the probabilities gives,
    which changes neither the filtered distribution nor the count); without top-k, the
    head grows until top-p cuts inside it."""
    vocab = logits.shape[-1]
    n_head = params.top_k or min(N_CANDIDATES, vocab)
    mass = probs_temperature.sum()
    while True:
        _, ids = stable_top(logits, n_head)
        n = n_surviving(probs_temperature[ids], params.top_k, params.top_p, mass)
        if n < n_head or params.top_k or n_head == vocab:
            return ids[:n]
        n_head = min(4 * n_head, vocab)


def distributions(logits: torch.Tensor, params: SamplingParams) -> Distributions:
    # float64 so that any temperature the range allows, however small, stays representable.
    logits = logits.double()
    vocab = logits.shape[-1]
    if params.top_k > vocab:
        raise ValueError(f"top_k must be in 0..{vocab}, got {params.top_k}")
    probs = torch.softmax(logits, -1)
    if params.temperature == 0:  # argmax: one token can come, whatever top-k and top-p keep
        argmax = torch.argmax(logits)
        one_hot = torch.zeros_like(probs)
        one_hot[argmax] = 1.0
        return Distributions(probs, one_hot, one_hot, 1, argmax[None])
    # Shifting by the max first keeps tiny temperatures from overflowing to inf - inf.
    probs_temperature = torch.softmax((logits - logits.max()) / params.temperature, -1)
    if params.top_k == 0 and params.top_p >= 1.0:
        return Distributions(probs, probs_temperature, probs_temperature, vocab, None)
    kept = surviving_ids(logits, probs_temperature, params)
    filtered = torch.zeros_like(probs)
    filtered[kept] = probs_temperature[kept]
    return Distributions(probs, probs_temperature, filtered / filtered.sum(), kept.shape[-1], kept)


def filtered_support(dist: Distributions) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(ids, probabilities) of the tokens the filtered distribution can give: the kept ones,
    or the whole vocabulary (ids None) when nothing was filtered. A draw or an entropy over
    a handful of kept tokens skips a pass over 50k zeros, a millisecond a token."""
    if dist.kept_ids is None:
        return None, dist.probs_filtered
    return dist.kept_ids, dist.probs_filtered[dist.kept_ids]


def sample(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> SampleRecord:
    """Choose the next token; temperature 0 is argmax and draws nothing from the generator."""
    dist = distributions(logits, params)
    if params.temperature == 0:
        token_id = int(torch.argmax(dist.probs_filtered))
    else:
        ids, probs = filtered_support(dist)
        drawn = torch.multinomial(probs.cpu(), 1, generator=generator)
        token_id = int(drawn if ids is None else ids.cpu()[drawn])
    return describe_choice(logits, dist, token_id, params)


def choose(logits: torch.Tensor, params: SamplingParams, token_id: int) -> SampleRecord:
    """The record of a token the user picked instead of one drawn, e.g. to branch history."""
    if not 0 <= token_id < logits.shape[-1]:
        raise ValueError(f"token id must be in 0..{logits.shape[-1] - 1}, got {token_id}")
    return describe_choice(logits, distributions(logits, params), token_id, params)


def preview_record(logits: torch.Tensor, params: SamplingParams) -> SampleRecord:
    """The record of the argmax, for the distribution alone: what a draw would come from."""
    return describe_choice(logits, distributions(logits, params), int(logits.argmax()), params)


def describe_choice(
    logits: torch.Tensor, dist: Distributions, token_id: int, params: SamplingParams
) -> SampleRecord:
    _, top = stable_top(logits, N_CANDIDATES)
    return SampleRecord(
        token_id=token_id,
        rank=stable_rank(logits, token_id),
        probability=float(dist.probs_filtered[token_id]),
        model_probability=float(dist.probs[token_id]),
        entropy=entropy_bits(dist.probs),
        sampled_entropy=entropy_bits(filtered_support(dist)[1]),
        n_kept=dist.n_kept,
        candidate_ids=tuple(top.tolist()),
        candidate_probs=tuple(dist.probs[top].tolist()),
        candidate_probs_temperature=tuple(dist.probs_temperature[top].tolist()),
        candidate_probs_filtered=tuple(dist.probs_filtered[top].tolist()),
        params=params,
    )


def stable_rank(logits: torch.Tensor, token_id: int) -> int:
    """The token's place in the stable descending sort of the logits, without sorting."""
    value = logits[token_id]
    return int((logits > value).sum()) + int((logits[:token_id] == value).sum())
