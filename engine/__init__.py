"""GPT-2 as plain tensor math with every intermediate value the views show, plus sampling
and the background runner. Imports nothing from the UI."""

from gpt2scope.engine.attribution import (
    Ablation,
    AblationMode,
    Attribution,
    Component,
    ablated,
    attribution,
    default_target,
    head_effects,
    saliency,
)
from gpt2scope.engine.errors import EngineError
from gpt2scope.engine.gpt2 import GPT2Config
from gpt2scope.engine.model import DEVICES, Model, check_gpt2, load_model, pick_device
from gpt2scope.engine.run import Run, RunView
from gpt2scope.engine.runner import (
    Done,
    Event,
    Failed,
    Finished,
    FinishReason,
    Prefilled,
    Reran,
    Runner,
    Sampler,
    State,
    StateChanged,
    Stepped,
)
from gpt2scope.engine.sampling import SampleRecord, SamplingParams, sample
from gpt2scope.engine.tokenizer import Tokenizer, gpt2_tokenizer

__all__ = [
    "Ablation",
    "AblationMode",
    "Attribution",
    "Component",
    "ablated",
    "check_gpt2",
    "attribution",
    "default_target",
    "head_effects",
    "saliency",
    "DEVICES",
    "Done",
    "EngineError",
    "Event",
    "Failed",
    "Finished",
    "FinishReason",
    "Prefilled",
    "Reran",
    "Runner",
    "SampleRecord",
    "Sampler",
    "SamplingParams",
    "State",
    "StateChanged",
    "Stepped",
    "sample",
    "GPT2Config",
    "Model",
    "Run",
    "RunView",
    "Tokenizer",
    "gpt2_tokenizer",
    "load_model",
    "pick_device",
]
