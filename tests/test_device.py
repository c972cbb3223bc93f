"""`--device auto`, the default: CUDA when torch sees a GPU, else Apple's MPS, else the CPU;
the status line says which. Neither GPU is on the machines these tests run on, so the choice
is tested with torch's own availability checks patched, and the CPU fallback for real."""

from __future__ import annotations

import pytest
import torch

from gpt2scope.engine import pick_device
from gpt2scope.tui.cli import main, opened
from tests.driver import make_app, options, settle


def sees(monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(
    "cuda, mps, chosen",
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_the_cpu(monkeypatch, cuda, mps, chosen):
    sees(monkeypatch, cuda, mps)
    assert pick_device("auto") == chosen


@pytest.mark.parametrize("named", ["cpu", "cuda", "mps", "cuda:1"])
def test_a_named_device_is_taken_as_it_is(monkeypatch, named):
    sees(monkeypatch, cuda=True, mps=True)
    assert pick_device(named) == named


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_auto_is_the_command_lines_default():
    assert options().device == "auto"


@pytest.mark.anyio
async def test_without_a_gpu_auto_runs_on_the_cpu_and_the_status_line_says_so(
    monkeypatch, tiny_checkpoint
):
    sees(monkeypatch, cuda=False, mps=False)
    _, model, info = opened(options(weights=str(tiny_checkpoint)))
    assert model.params.wte.device.type == "cpu" and info.device == "cpu"
    app = make_app(model, prompt="Hello")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert f"tiny {info.size} (path) on cpu" in str(app.query_one("#status").render())


def test_inspect_names_the_device_it_ran_on(monkeypatch, capsys, tiny_checkpoint):
    sees(monkeypatch, cuda=False, mps=False)
    code = main(["inspect", "--weights", str(tiny_checkpoint), "--prompt", "Hi", "--length", "0"])
    out = capsys.readouterr().out
    assert code == 0 and " on cpu" in out.splitlines()[0]
