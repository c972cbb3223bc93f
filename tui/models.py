"""Which model to open, for the app and for inspect: `--weights` resolved and loaded."""

from __future__ import annotations

import torch

from gpt2scope.engine import EngineError, Model, load_model
from gpt2scope.tui.session import ModelInfo
from gpt2scope.weights import WeightsError
from gpt2scope.weights.hub import resolve

OpenError = (EngineError, WeightsError)


def open_model(
    spec: str | None, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Model, ModelInfo]:
    """Load the model `spec` names (a path, a hub model in the cache, or None for the
    default) onto `device` (`auto`: the GPU torch sees, else the CPU), its weights held in
    `dtype`. Raises EngineError or WeightsError with a one-line message."""
    resolved = resolve(spec)
    model = load_model(resolved.path, device=device, dtype=dtype)
    return model, ModelInfo.of(model, resolved.name, resolved.origin, resolved.description)
