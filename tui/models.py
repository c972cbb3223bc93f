"""Which model to open, for the app and for inspect: `--weights` resolved and loaded."""

from __future__ import annotations

from gpt2scope.engine import EngineError, Model, load_model
from gpt2scope.tui.session import ModelInfo
from gpt2scope.weights import WeightsError
from gpt2scope.weights.hub import resolve

OpenError = (EngineError, WeightsError)


def open_model(spec: str | None, device: str = "cpu") -> tuple[Model, ModelInfo]:
    """Load the model `spec` names (a path, a GPT-2 size, or None for the default) onto
    `device` (`auto`: the GPU torch sees, else the CPU). Raises EngineError or WeightsError
    with a one-line message."""
    resolved = resolve(spec)
    model = load_model(resolved.path, device=device)
    return model, ModelInfo.of(model, resolved.name, resolved.origin, resolved.description)
