"""Random GPT-2 checkpoints of a given size, written the way published ones are, so that
the benchmark needs no download and both sides read the very same weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Size:
    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int
    vocab_size: int = 50257


SIZES = {
    "small": Size(n_layer=12, n_head=12, n_embd=768, n_positions=1024),
    # Keeps the real vocabulary so prompts tokenize as with GPT-2; everything else is tiny.
    "tiny": Size(n_layer=2, n_head=2, n_embd=64, n_positions=128),
}


def write_checkpoint(directory: Path, size: Size, seed: int = 0):
    """Save a randomly initialised GPT2LMHeadModel (eager attention, so that it can return
    attention patterns) with save_pretrained, and return it."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.disable_progress_bar()
    torch.manual_seed(seed)
    config = GPT2Config(**asdict(size), attn_implementation="eager")
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(directory)
    return model


def load_transformers(directory: Path, device: str, dtype: torch.dtype):
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging

    logging.disable_progress_bar()
    model = GPT2LMHeadModel.from_pretrained(directory, attn_implementation="eager")
    return model.to(device=device, dtype=dtype).eval()
