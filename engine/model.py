"""A loaded GPT-2: its config, its parameters, and runs over token sequences."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gpt2scope.engine.ablation import NO_ABLATION, Ablation
from gpt2scope.engine.errors import EngineError
from gpt2scope.engine.gpt2 import GPT2Config, Params
from gpt2scope.engine.load import check_memory, check_tensors, infer_config, to_params
from gpt2scope.engine.run import Run
from gpt2scope.weights import Checkpoint, WeightsError, load_checkpoint


@dataclass(frozen=True)
class Model:
    config: GPT2Config
    params: Params
    source: Path

    @property
    def tensors(self) -> list[torch.Tensor]:
        """Every parameter tensor."""
        p = self.params
        tensors = [p.wte, p.wpe, p.ln_f.weight, p.ln_f.bias]
        for block in p.blocks:
            for part in vars(block).values():
                tensors += [part.weight, part.bias]
        return tensors

    @property
    def n_params(self) -> int:
        return sum(t.numel() for t in self.tensors)

    @property
    def device(self) -> str:
        """Where the weights live: cpu, cuda or mps."""
        return self.params.wte.device.type

    @property
    def weights_dtype(self) -> torch.dtype:
        """What the weight matrices are held in (`load_model`'s dtype); the maths may run
        in another (see `compute_dtype`)."""
        return self.params.wte.dtype

    def start(self, token_ids: list[int], ablation: Ablation = NO_ABLATION) -> Run:
        """A new run with the tokens prefilled through the KV cache."""
        run = self.new_run(ablation)
        run.extend(list(token_ids))
        return run

    def new_run(self, ablation: Ablation = NO_ABLATION) -> Run:
        """An empty run of this model with `ablation`'s knock-outs."""
        return Run(self.config, self.params, ablation)


DEVICES = ("auto", "cpu", "cuda", "mps")


def mps_available() -> bool:
    # torch.backends.mps exists on every build since 1.12; it is only true on Apple silicon.
    return torch.backends.mps.is_available()


def pick_device(device: str = "auto") -> str:
    """`auto`: CUDA when torch sees a GPU, else Apple's MPS, else the CPU; any other name as
    it is."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if mps_available() else "cpu"


def check_device(device: str) -> None:
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"device {device}: this torch build sees no CUDA GPU; use cpu")
    if kind == "mps" and not mps_available():
        raise EngineError(f"device {device}: this torch build sees no Apple MPS GPU; use cpu")


def check_gpt2(path: str | Path) -> GPT2Config:
    """The config of the GPT-2 checkpoint at `path`, its tensors' names and shapes checked
    against it without reading them; raises EngineError in one line if it is no GPT-2."""
    return checked_checkpoint(path)[1]


def checked_checkpoint(path: str | Path) -> tuple[Checkpoint, GPT2Config]:
    """The checkpoint at `path` and its config, its tensors' names and shapes checked."""
    try:
        ckpt = load_checkpoint(path)
    except WeightsError as e:
        raise EngineError(str(e)) from e
    config = infer_config(ckpt)
    check_tensors(ckpt, config)
    return ckpt, config


def load_model(path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Model:
    """Load a GPT-2 of any size from a directory holding model.safetensors or from the file,
    onto `device` (see `pick_device`)."""
    device = pick_device(device)
    check_device(device)
    ckpt, config = checked_checkpoint(path)
    check_memory(ckpt, dtype, torch.device(device))
    try:
        params = to_params(ckpt, config, torch.device(device), dtype)
    except WeightsError as e:
        raise EngineError(str(e)) from e
    except MemoryError as e:
        raise EngineError(f"{ckpt.path}: out of memory while loading the weights") from e
    except (RuntimeError, AssertionError) as e:
        raise EngineError(f"{ckpt.path}: cannot place the weights on {device}: {e}") from e
    return Model(config=config, params=params, source=ckpt.path)
