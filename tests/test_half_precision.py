"""`--dtype float16|bfloat16`: the product matrices held in half precision, the maths in
float32. Checked against transformers in float32 on the same rounded weights (the only
difference left is float32's own rounding), against the float32 model (the weights' rounding
alone), and by the bytes the parameters hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gpt2scope.engine import gpt2, kernels, load_model
from gpt2scope.engine.gpt2 import Linear
from gpt2scope.tui.cli import main, opened
from tests.conftest import write_checkpoint
from tests.driver import make_app, options, settle

HALVES = [torch.float16, torch.bfloat16]
# Unit roundoff: a weight rounded to the dtype is off by at most this, relatively.
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
TOL = 1e-4  # float32 against float32, as tests/test_engine.py checks the engine
PROMPT = list(range(100, 140))
N_LAYER = 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("half")
    write_checkpoint(directory, n_layer=N_LAYER, n_head=4, n_embd=64, n_positions=64, scale=4.0)
    return directory


def matrices(hf) -> list[torch.Tensor]:
    """The tensors `--dtype` holds in half precision: wte (tied to the LM head) and the
    Conv1D weights; LayerNorms, biases and wpe stay float32."""
    t = hf.transformer
    weights = [t.wte.weight]
    for block in t.h:
        weights += [block.attn.c_attn.weight, block.attn.c_proj.weight]
        weights += [block.mlp.c_fc.weight, block.mlp.c_proj.weight]
    return weights


@pytest.fixture(scope="module", params=HALVES, ids=str)
def rounded(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.dtype, Path, object]:
    """A float32 checkpoint whose matrices are exactly representable in the dtype, and
    transformers' model of it: held in that dtype, it is the very same model."""
    dtype, directory = request.param, tmp_path_factory.mktemp("rounded")
    hf = write_checkpoint(directory, n_layer=N_LAYER, n_head=4, n_embd=64, n_positions=64, scale=4)
    with torch.no_grad():
        for w in matrices(hf):
            w.copy_(w.to(dtype).float())
    hf.save_pretrained(directory)
    return dtype, directory, hf


def test_half_precision_computes_what_float32_computes_on_the_rounded_weights(rounded):
    dtype, directory, hf = rounded
    run = load_model(directory, dtype=dtype).start(PROMPT)
    with torch.no_grad():
        theirs = hf(torch.tensor([PROMPT])).logits[0, -1]
    assert run.logits.dtype == torch.float32
    torch.testing.assert_close(run.logits, theirs, atol=TOL, rtol=0)
    # The views read the same float32 numbers: the embedding rows and an attention pattern.
    view = run.view()
    assert view.get("embed", None, 3).dtype == torch.float32
    torch.testing.assert_close(view.get("embed", None, 3), hf.transformer.wte.weight[PROMPT[3]])


@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_half_precision_logits_are_close_to_float32s(checkpoint, dtype):
    """Each held weight is off by at most u (the unit roundoff) relatively, so a product,
    and so a logit, moves by about u of its size; the errors of independent roundings partly
    cancel, those of earlier layers feed later ones. Measured: 1 to 1.5 u max|logit| over
    these 4 layers; allowed: 4 u max|logit|."""
    full = load_model(checkpoint).start(PROMPT).logits
    half = load_model(checkpoint, dtype=dtype).start(PROMPT).logits
    bound = 4 * UNIT_ROUNDOFF[dtype] * float(full.abs().max())
    assert float((half - full).abs().max()) <= bound
    assert not torch.equal(half, full)  # the weights really were rounded


def parameter_bytes(model) -> int:
    return sum(t.untyped_storage().nbytes() for t in model.tensors)


@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_half_precision_halves_the_parameters_memory(checkpoint, dtype):
    full, half = load_model(checkpoint), load_model(checkpoint, dtype=dtype)
    assert half.n_params == full.n_params
    # All but wpe, the LayerNorms and the biases (1% of this model, under 0.1% of GPT-2's).
    assert 0.5 <= parameter_bytes(half) / parameter_bytes(full) < 0.51


@pytest.mark.parametrize("rows", [1, 5])
def test_a_half_weight_is_upcast_block_by_block_to_the_same_product(monkeypatch, rows):
    """Blocks of 3 rows of weight (the size the products upcast at a time) make several
    blocks and a ragged last one; the answer is float32's on the upcast weight."""
    monkeypatch.setattr(gpt2, "BLOCK_ELEMENTS", 3 * 16)
    weight = torch.randn(11, 16).bfloat16()
    lin = Linear(weight, torch.randn(11))
    x = torch.randn(rows, 16)
    expected = x @ weight.float().T
    for product in (gpt2.matmul, kernels.matmul):
        torch.testing.assert_close(product(x, weight), expected, atol=1e-5, rtol=0)
    for linear in (gpt2.linear, kernels.linear):
        torch.testing.assert_close(linear(x, lin), expected + lin.bias, atol=1e-5, rtol=0)


def test_every_view_and_screen_reads_as_float32_on_the_rounded_weights(rounded, capsys):
    """inspect with every deeper figure, the knock-outs, head effects and patching: the
    same JSON, to its printed precision, held in half precision as in float32."""
    dtype, directory, _ = rounded
    args = ["inspect", "--weights", str(directory), "--prompt", "The cat sat on the mat"]
    args += ["--temperature", "0", "--length", "3", "--format", "json", "--head-effects"]
    args += ["--corrupt", "The dog sat on the mat"]

    def run(*more: str) -> dict:
        assert main([*args, *more]) == 0
        return json.loads(capsys.readouterr().out)

    name = str(dtype).removeprefix("torch.")
    half, full = run("--dtype", name), run()
    assert (half["model"].pop("dtype"), full["model"].pop("dtype")) == (name, "float32")
    assert close(half, full, path="run")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("dtype", ["float32", *(str(d).removeprefix("torch.") for d in HALVES)])
async def test_the_status_line_says_when_the_weights_are_in_half_precision(checkpoint, dtype):
    """Half precision moves every number on screen a little: the model's label says so, and
    what float32 is, as it was before --dtype, goes unsaid."""
    _, model, info = opened(options(weights=str(checkpoint), dtype=dtype, device="cpu"))
    app = make_app(model, prompt="Hello")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        status = str(app.query_one("#status").render())
    said = f"tiny {info.size} (path) on cpu · {dtype}"
    assert (said in status) == (dtype != "float32")
    assert f"tiny {info.size} (path) on cpu" in status


def close(a: object, b: object, path: str) -> bool:
    """Equal JSON, numbers within 1e-3 (float32's rounding through every figure)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        return all(close(a[k], b[k], f"{path}.{k}") for k in a)
    if isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        return all(close(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True)))
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-3, abs=1e-3), path
        return True
    assert a == b, path
    return True
