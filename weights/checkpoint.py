"""Open a Hugging Face GPT-2 safetensors checkpoint as tensors under canonical names."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

PREFIX = "transformer."
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")


class WeightsError(Exception):
    """A checkpoint that cannot be used, with a one-line message naming the file."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    tensors: dict[str, torch.Tensor]
    config: dict = field(default_factory=dict)


def canonical_name(name: str) -> str | None:
    """`transformer.h.0.attn.c_attn.weight` and `h.0.attn.c_attn.weight` both become the latter."""
    name = name.removeprefix(PREFIX)
    if name.endswith(MASK_BUFFERS) or name == "lm_head.weight":
        return None
    return name


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    file = path / "model.safetensors" if path.is_dir() else path
    if not path.exists():
        raise WeightsError(f"{path}: no such file or directory")
    if not file.exists():
        raise WeightsError(f"{path}: directory holds no model.safetensors")
    tensors = {}
    try:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                key = canonical_name(name)
                if key is not None:
                    tensors[key] = f.get_tensor(name)
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{file}: not a readable safetensors file ({e})") from e
    config_file = file.parent / "config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    return Checkpoint(path=file, tensors=tensors, config=config)
