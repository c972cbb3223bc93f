"""GPT-2 as plain tensor math with every intermediate value the views show, plus sampling
and the background runner. Imports nothing from the UI."""

from engine.errors import EngineError
from engine.gpt2 import GPT2Config
from engine.model import Model, load_model
from engine.run import Run, RunView
from engine.runner import Event, Failed, Finished, Prefilled, Runner, StateChanged, Stepped
from engine.sampling import SampleRecord, SamplingParams, sample
from engine.tokenizer import Tokenizer, gpt2_tokenizer

__all__ = [
    "EngineError",
    "Event",
    "Failed",
    "Finished",
    "Prefilled",
    "Runner",
    "SampleRecord",
    "SamplingParams",
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
]
