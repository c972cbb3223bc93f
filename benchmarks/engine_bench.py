"""Decode, prefill and the memory-bandwidth floor: our engine against transformers' GPT-2,
in one process, on the same weights and the same tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from benchmarks.timing import Comparison, alternate, timed
from gpt2scope.engine import Model, Run, SamplingParams, sample
from gpt2scope.engine.runner import PREFILL_CHUNK

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel


def random_ids(n: int, vocab: int, seed: int) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def hf_step(hf: GPT2LMHeadModel, ids: list[int], past=None):
    """One forward pass of transformers' GPT-2 as a viewer would call it: through the KV
    cache, returning every attention pattern."""
    device = hf.device
    return hf(
        torch.tensor([ids], device=device),
        past_key_values=past,
        use_cache=True,
        output_attentions=True,
    )


def decode(
    model: Model, hf: GPT2LMHeadModel, context: int, pairs: int, warmup: int, device: str
) -> Comparison:
    """One token each: ours samples from the logits (the full record the probabilities view
    shows) and steps the run, which stores q, k, v and the residual streams; transformers
    steps through its cache with output_attentions=True. Both see the same token ids."""
    vocab = model.config.vocab_size
    prompt = random_ids(context, vocab, seed=1)
    tokens = random_ids(warmup + pairs, vocab, seed=2)
    params, generator = SamplingParams(), torch.Generator().manual_seed(0)
    run = model.start(prompt)
    past = hf_step(hf, prompt).past_key_values

    def ours(i: int) -> None:
        sample(run.logits, params, generator)
        run.step(tokens[i])

    def theirs(i: int) -> None:
        nonlocal past
        past = hf_step(hf, [tokens[i]], past).past_key_values

    alternate(ours, theirs, warmup, device)
    return alternate(lambda i: ours(warmup + i), lambda i: theirs(warmup + i), pairs, device)


def prefill(model: Model, hf: GPT2LMHeadModel, length: int, pairs: int, device: str) -> Comparison:
    """`model.start(ids)`, one pass over the prompt, against transformers with attentions."""
    ids = random_ids(length, model.config.vocab_size, seed=length)
    ours, theirs = (lambda i: model.start(ids)), (lambda i: hf_step(hf, ids))
    alternate(ours, theirs, 1, device)
    return alternate(ours, theirs, pairs, device)


def prefill_in_chunks(model: Model, ids: list[int]) -> Run:
    """The runner's path: the prompt in PREFILL_CHUNK pieces, so that a stop lands quickly."""
    run = model.new_run()
    for i in range(0, len(ids), PREFILL_CHUNK):
        run.extend(ids[i : i + PREFILL_CHUNK])
    return run


def chunked_prefill_ms(model: Model, length: int, repeats: int, device: str) -> float:
    ids = random_ids(length, model.config.vocab_size, seed=length)
    prefill_in_chunks(model, ids)
    return min(timed(lambda: prefill_in_chunks(model, ids), device) for _ in range(repeats)) * 1e3


def weight_bytes_per_token(model: Model) -> int:
    """Every block's parameters, the final LayerNorm and the whole token embedding (read
    again as the LM head); of the position embedding only one row."""
    p = model.params
    tensors = [p.wte, p.ln_f.weight, p.ln_f.bias, p.wpe[0]]
    for block in p.blocks:
        for part in vars(block).values():
            tensors += [part.weight, part.bias]
    return sum(t.numel() * t.element_size() for t in tensors)


def stream_bandwidth(n_bytes: int, repeats: int, device: str) -> float:
    """Bytes per second of the fastest of several full reads of a buffer far larger than
    any cache: the most a decode step can hope to stream its weights at."""
    x = torch.ones(n_bytes // 4, device=device)
    x.sum()
    return n_bytes / min(timed(x.sum, device) for _ in range(repeats))
