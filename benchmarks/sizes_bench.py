"""GPT-2 medium and xl at full size (issue 28), on random weights of their shapes.

The parent streams a float32 checkpoint to disk tensor by tensor (never the whole model in
memory), then measures each size and dtype in a fresh process, `python -m
benchmarks.sizes_bench WEIGHTS --dtype D`, which prints one JSON line: reading the file
with plain reads against loading it, the peak RSS of loading against the file's size, a
decode step (sample and step, as the app does), one prefill of the whole context, and the
app's pane renders and key-to-repaint while generating (`ui_bench.app_timings`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.checkpoint import SIZES, Size
from benchmarks.memory import peak_rss_bytes
from benchmarks.plan import PLANS, Plan

SHAPES = {
    "medium": Size(n_layer=24, n_head=16, n_embd=1024, n_positions=1024),
    "large": Size(n_layer=36, n_head=20, n_embd=1280, n_positions=1024),
    "xl": Size(n_layer=48, n_head=25, n_embd=1600, n_positions=1024),
    "tiny": SIZES["tiny"],  # for the smoke test
}
DTYPES = ("float32", "bfloat16")
CONTEXT = 128  # tokens before the timed decode steps
STEPS = 8  # timed decode steps; the median is reported
CHUNK = 1 << 24  # bytes per read when timing a plain read of the file


def tensor_shapes(size: Size) -> dict[str, tuple[int, ...]]:
    """The hub file's tensors (openai-community/gpt2-xl's names, no LM head)."""
    d = size.n_embd
    shapes = {"wte.weight": (size.vocab_size, d), "wpe.weight": (size.n_positions, d)}
    for i in range(size.n_layer):
        for ln in ("ln_1", "ln_2"):
            shapes[f"h.{i}.{ln}.weight"] = shapes[f"h.{i}.{ln}.bias"] = (d,)
        for name, n_in, n_out in [
            ("attn.c_attn", d, 3 * d),
            ("attn.c_proj", d, d),
            ("mlp.c_fc", d, 4 * d),
            ("mlp.c_proj", 4 * d, d),
        ]:
            shapes[f"h.{i}.{name}.weight"] = (n_in, n_out)
            shapes[f"h.{i}.{name}.bias"] = (n_out,)
    shapes["ln_f.weight"] = shapes["ln_f.bias"] = (d,)
    return shapes


def random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """GPT-2's initialisation: N(0, 0.02) matrices, LayerNorm scales 1, biases 0."""
    if len(shape) == 2:
        return torch.randn(shape, generator=generator) * 0.02
    return torch.ones(shape) if "ln_" in name and name.endswith("weight") else torch.zeros(shape)


def write_random(directory: Path, size: Size, seed: int = 0) -> Path:
    """model.safetensors (float32) and config.json of a random GPT-2 of `size`'s shapes."""
    shapes, header, offset = tensor_shapes(size), {}, 0
    for name, shape in shapes.items():
        n_bytes = math.prod(shape) * 4
        header[name] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [offset, offset + n_bytes],
        }
        offset += n_bytes
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    generator = torch.Generator().manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "model.safetensors").open("wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for name, shape in shapes.items():
            f.write(random_tensor(name, shape, generator).numpy().tobytes())
    config = {"model_type": "gpt2", **{k: getattr(size, k) for k in Size.__dataclass_fields__}}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def read_seconds(file: Path) -> float:
    """Reading the file with plain reads into one reused buffer: the least a load can take."""
    buffer = bytearray(CHUNK)
    start = time.perf_counter()
    with file.open("rb", buffering=0) as f:
        while f.readinto(buffer):
            pass
    return time.perf_counter() - start


def params_bytes(model) -> int:
    return sum(t.untyped_storage().nbytes() for t in model.tensors)


def measure_child(weights: Path, dtype: str, plan: Plan) -> dict:
    """In this process: read, load, decode, prefill, then the app on the loaded model (at
    `plan`'s run length and key presses); the figures of one size and dtype."""
    from benchmarks.engine_bench import prefill_in_chunks, random_ids, weight_bytes_per_token
    from gpt2scope.engine import SamplingParams, load_model, sample
    from gpt2scope.tui.heap import return_freed_memory

    return_freed_memory()  # as the gpt2scope command does
    file = weights / "model.safetensors"
    before = peak_rss_bytes()
    read_s = read_seconds(file)
    start = time.perf_counter()
    model = load_model(weights, dtype=getattr(torch, dtype))
    load_s = time.perf_counter() - start
    load_peak = peak_rss_bytes()
    vocab, n_ctx = model.config.vocab_size, model.config.n_ctx
    context = min(CONTEXT, n_ctx // 2)
    run = prefill_in_chunks(model, random_ids(context, vocab, seed=1))
    params, generator, steps = SamplingParams(), torch.Generator().manual_seed(0), []
    for token in random_ids(STEPS + 1, vocab, seed=2):
        start = time.perf_counter()
        sample(run.logits, params, generator)
        run.step(token)
        steps.append(time.perf_counter() - start)
    del run
    ids = random_ids(n_ctx, vocab, seed=3)
    start = time.perf_counter()
    model.start(ids)
    prefill_s = time.perf_counter() - start
    run_peak = peak_rss_bytes()  # before the app's own run adds to it
    return {
        "dtype": dtype,
        "file_bytes": file.stat().st_size,
        "params_bytes": params_bytes(model),
        "rss_before_load_bytes": before,
        "read_s": read_s,
        "load_s": load_s,
        "load_peak_rss_bytes": load_peak,
        "context": context,
        "decode_ms": sorted(steps[1:])[len(steps[1:]) // 2] * 1e3,  # the first warms up
        "weight_bytes_per_token": weight_bytes_per_token(model),
        "prefill_tokens": n_ctx,
        "prefill_s": prefill_s,
        "run_peak_rss_bytes": run_peak,
        "ui": app_timings(model, plan),
    }


def app_timings(model, plan: Plan) -> dict:
    # Imported only now: Textual and the app are no part of the RSS measured before loading.
    from benchmarks import ui_bench

    return asyncio.run(ui_bench.app_timings(model, plan))


def measure(
    sizes: list[str], directory: Path, bandwidth: float, threads: int, plan: str
) -> list[dict]:
    """Every size in `sizes` (keys of SHAPES) in every dtype of DTYPES, each in its own
    process, with its decode step over the bandwidth floor (its weights / `bandwidth`);
    `plan` (a key of PLANS) sets the app's run and key presses."""
    rows = []
    for name in sizes:
        start = time.perf_counter()
        weights = write_random(directory / name, SHAPES[name])
        write_s = time.perf_counter() - start
        for dtype in DTYPES:
            command = [sys.executable, "-m", "benchmarks.sizes_bench", str(weights)]
            command += ["--dtype", dtype, "--threads", str(threads), "--plan", plan]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"sizes child for {name} {dtype} failed:\n{done.stderr[-2000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            floor_ms = row["weight_bytes_per_token"] / bandwidth * 1e3
            rows.append({"size": name, **row, "write_s": write_s, "floor_ms": floor_ms})
        (weights / "model.safetensors").unlink()  # gpt2-xl's is 6.4 GB
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sizes_bench")
    parser.add_argument("weights", type=Path)
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--plan", choices=PLANS, default="full")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with torch.no_grad():
        print(json.dumps(measure_child(args.weights, args.dtype, PLANS[args.plan])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
