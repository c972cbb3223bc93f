"""Finding and opening GPT-2 checkpoint files: tensors and config, no model maths."""

from pathlib import Path

from gpt2scope.weights.checkpoint import Checkpoint, WeightsError, load_checkpoint
from gpt2scope.weights.hub import (
    DEMO_DIR,
    MODEL_NAMES,
    DownloadCancelled,
    HubModel,
    ProgressFn,
    Resolved,
    download,
    fetch_notice,
    hub_model,
    is_cached,
    resolve,
)

TOKENIZER_FILE = Path(__file__).resolve().parent / "gpt2.tiktoken"

__all__ = [
    "DEMO_DIR",
    "MODEL_NAMES",
    "TOKENIZER_FILE",
    "Checkpoint",
    "DownloadCancelled",
    "HubModel",
    "ProgressFn",
    "Resolved",
    "WeightsError",
    "download",
    "fetch_notice",
    "hub_model",
    "is_cached",
    "load_checkpoint",
    "resolve",
]
