"""Peak resident memory of a run to the end of the context, each side in its own process.

The parent runs `python -m benchmarks.memory SIDE WEIGHTS --prompt IDS` and reads one JSON
line. The child reads its own high-water mark (VmHWM): a child's ru_maxrss can include the
parent's memory, which the kernel carries across the fork and exec that start it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

SIDES = ("ours", "transformers")


def peak_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    # Kilobytes on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def run_ours(weights: str, prompt: list[int], device: str, dtype: torch.dtype) -> int:
    """As the app's runner does: prefill in its chunks, then sample and step to the context
    limit, keeping the latest view. Returns the peak RSS of loading alone."""
    from benchmarks.engine_bench import prefill_in_chunks
    from gpt2scope.engine import SamplingParams, load_model, sample
    from gpt2scope.tui.heap import return_freed_memory

    return_freed_memory()  # as the gpt2scope command does

    model = load_model(weights, device=device, dtype=dtype)
    loaded = peak_rss_bytes()
    params, generator = SamplingParams(), torch.Generator().manual_seed(0)
    run = prefill_in_chunks(model, prompt)
    while run.n_tokens < model.config.n_ctx:
        run.step(sample(run.logits, params, generator).token_id)
        run.view()
    return loaded


def run_transformers(weights: str, prompt: list[int], device: str, dtype: torch.dtype) -> int:
    """The same run through transformers' GPT-2 with the attention patterns returned."""
    from benchmarks.checkpoint import load_transformers
    from benchmarks.engine_bench import hf_step

    hf = load_transformers(Path(weights), device, dtype)
    loaded = peak_rss_bytes()
    generator = torch.Generator().manual_seed(0)
    out = hf_step(hf, prompt)
    for _ in range(len(prompt), hf.config.n_positions):
        probs = torch.softmax(out.logits[0, -1].float().cpu(), -1)
        token = int(torch.multinomial(probs, 1, generator=generator))
        out = hf_step(hf, [token], out.past_key_values)
    return loaded


def measure(weights: Path, prompt: list[int], device: str, dtype: str, threads: int) -> dict:
    """Run both sides' children at once, sharing the threads (a peak does not depend on
    speed), and return what each reports, by side."""
    share = max(threads // len(SIDES), 1)
    children = {}
    for side in SIDES:
        command = [sys.executable, "-m", "benchmarks.memory", side, str(weights)]
        command += ["--prompt", ",".join(map(str, prompt))]
        command += ["--device", device, "--dtype", dtype, "--threads", str(share)]
        children[side] = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    reports = {}
    for side, child in children.items():
        out, err = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"memory child for {side} failed:\n{err[-2000:]}")
        reports[side] = json.loads(out.strip().splitlines()[-1])
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("side", choices=SIDES)
    parser.add_argument("weights")
    parser.add_argument("--prompt", required=True, help="token ids, comma-separated")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    prompt = [int(t) for t in args.prompt.split(",")]
    runner = run_ours if args.side == "ours" else run_transformers
    with torch.no_grad():
        loaded = runner(args.weights, prompt, args.device, getattr(torch, args.dtype))
    report = {"side": args.side, "peak_rss_bytes": peak_rss_bytes(), "load_peak_rss_bytes": loaded}
    if args.device.startswith("cuda"):
        report["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
