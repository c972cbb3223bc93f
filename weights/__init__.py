"""Finding and opening GPT-2 checkpoint files: tensors and config, no model maths."""

from pathlib import Path

from weights.checkpoint import Checkpoint, WeightsError, load_checkpoint

TOKENIZER_FILE = Path(__file__).resolve().parent / "gpt2.tiktoken"

__all__ = ["TOKENIZER_FILE", "Checkpoint", "WeightsError", "load_checkpoint"]
