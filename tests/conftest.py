"""Shared fixtures: random GPT-2 checkpoints written the way real ones are."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel

from engine import Model, load_model


def write_checkpoint(
    directory: Path,
    n_layer: int = 2,
    n_head: int = 4,
    n_embd: int = 64,
    n_positions: int = 64,
    vocab_size: int = 50257,
    scale: float = 1.0,
    seed: int = 0,
) -> GPT2LMHeadModel:
    """Save a random GPT2LMHeadModel with save_pretrained and return it as the oracle.

    `scale` multiplies the matrices so activations are of order one, where a mismatch
    in the maths shows up instead of hiding under tiny numbers.
    """
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        n_positions=n_positions,
        vocab_size=vocab_size,
        attn_implementation="eager",
    )
    hf = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() > 1:
                p.mul_(scale)
    hf.save_pretrained(directory)
    return hf


def hub_tensors(directory: Path, n_layer: int, n_ctx: int) -> dict[str, torch.Tensor]:
    """A save_pretrained file's tensors laid out as the hub's openai-community/gpt2 file: no
    `transformer.` prefix, no LM head, and the attention mask buffers saved with the weights."""
    tensors = load_file(directory / "model.safetensors")
    hub = {k.removeprefix("transformer."): v.contiguous() for k, v in tensors.items()}
    hub.pop("lm_head.weight", None)
    for i in range(n_layer):
        hub[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, n_ctx, n_ctx))
        hub[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return hub


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small GPT-2 with the real vocabulary, so prompts tokenize as with GPT-2."""
    directory = tmp_path_factory.mktemp("tiny")
    write_checkpoint(directory, n_layer=2, n_head=4, n_embd=64, n_positions=128, scale=4.0)
    return directory


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path) -> Model:
    return load_model(tiny_checkpoint)
