"""The full-size benchmark (`python -m benchmarks --sizes`), run on the tiny shapes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.sizes_bench import SHAPES, tensor_shapes, write_random
from gpt2scope.engine import load_model

ROOT = Path(__file__).resolve().parent.parent


def test_the_written_checkpoint_is_a_gpt2_of_its_shapes(tmp_path):
    size = SHAPES["tiny"]
    model = load_model(write_random(tmp_path, size))
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.n_ctx) == (2, 2, 64, 128)
    # Every byte after the header is a float32 of some tensor: nothing left out or doubled.
    file = tmp_path / "model.safetensors"
    header = 8 + int.from_bytes(file.read_bytes()[:8], "little")
    n_values = sum(math.prod(shape) for shape in tensor_shapes(size).values())
    assert file.stat().st_size - header == 4 * n_values
    assert model.n_params == n_values


@pytest.mark.slow
def test_the_sizes_rows_come_out_for_each_dtype(tmp_path):
    out = tmp_path / "bench.json"
    skips = [f"--skip-{s}" for s in ("decode", "prefill", "memory", "ui", "why", "patching")]
    command = [sys.executable, "-m", "benchmarks", "--quick", *skips, "--sizes", "tiny"]
    done = subprocess.run(
        [*command, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["sizes"]
    assert [r["dtype"] for r in rows] == ["float32", "bfloat16"]
    f32, bf16 = rows
    assert bf16["params_bytes"] < 0.51 * f32["params_bytes"]
    assert all(r["load_peak_rss_bytes"] >= r["rss_before_load_bytes"] for r in rows)
    assert all(r["ui"]["presses"] >= 1 and r["ui"]["key_repaint_ms"] > 0 for r in rows)
    for label in ("tiny float32: load", "tiny bfloat16: peak RSS", "tiny float32: prefill 128"):
        assert label in done.stdout
    assert "tiny bfloat16: key press to repaint while generating" in done.stdout
