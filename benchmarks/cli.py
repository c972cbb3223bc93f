"""`python -m benchmarks`: run every section in one process, print the table, write JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from benchmarks import engine_bench, lens, memory
from benchmarks.checkpoint import SIZES, write_checkpoint
from benchmarks.plan import PLANS, Plan
from benchmarks.report import table
from gpt2scope.engine import Model, load_model

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel

DEFAULT_JSON = Path("out/bench.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Decode, prefill, memory and UI timings of gpt2scope against transformers, "
        "and the why-this-token maths against TransformerLens (when installed), on random "
        "weights of GPT-2 small's shapes.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few iterations")
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch's (default: all)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help=f"default {DEFAULT_JSON}"
    )
    for section in ("decode", "prefill", "memory", "ui", "why", "patching", "heads"):
        parser.add_argument(f"--skip-{section}", action="store_true")
    parser.add_argument(
        "--sizes",
        type=lambda text: text.split(","),
        default=[],
        metavar="medium,xl",
        help="also load and run these GPT-2 sizes at full scale, in float32 and bfloat16 "
        "(minutes each; xl needs about 8 GB of memory and 7 GB of disk)",
    )
    return parser.parse_args(argv)


def machine(args: argparse.Namespace) -> dict:
    import textual
    import transformers

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "transformer_lens": lens.version(),  # None when not installed
        "textual": textual.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "dtype": args.dtype,
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@torch.no_grad()
def decode_section(args: argparse.Namespace, plan: Plan, model: Model, hf: GPT2LMHeadModel) -> dict:
    decode = engine_bench.decode(
        model, hf, plan.decode_context, plan.decode_pairs, plan.decode_warmup, args.device
    )
    n_bytes = engine_bench.weight_bytes_per_token(model)
    bandwidth = engine_bench.stream_bandwidth(plan.stream_bytes, plan.stream_repeats, args.device)
    floor_ms = n_bytes / bandwidth * 1e3
    return {
        **decode.as_json(),
        "context": plan.decode_context,
        "bandwidth": {
            "weight_bytes_per_token": n_bytes,
            "stream_bytes_per_s": bandwidth,
            "floor_ms": floor_ms,
            "ours_over_floor": decode.a_ms / floor_ms,
        },
    }


@torch.no_grad()
def prefill_section(
    args: argparse.Namespace, plan: Plan, model: Model, hf: GPT2LMHeadModel
) -> list[dict]:
    rows = []
    for fraction in plan.prefill_fractions:
        length = model.config.n_ctx // fraction
        comparison = engine_bench.prefill(model, hf, length, plan.prefill_pairs, args.device)
        chunked = engine_bench.chunked_prefill_ms(model, length, plan.prefill_pairs, args.device)
        rows.append({"tokens": length, **comparison.as_json(), "ours_chunked_ms": chunked})
    return rows


def memory_section(args: argparse.Namespace, model_dir: Path) -> dict:
    """Prompt half the context, then generation to the limit, each side in a fresh process."""
    config = json.loads((model_dir / "config.json").read_text())
    n_ctx = config["n_positions"]
    prompt = engine_bench.random_ids(n_ctx // 2, config["vocab_size"], seed=n_ctx)
    report = {"tokens": n_ctx, "prompt": len(prompt)}
    children = memory.measure(model_dir, prompt, args.device, args.dtype, args.threads)
    for side, child in children.items():
        report[f"{side}_peak_rss_bytes"] = child["peak_rss_bytes"]
        report[f"{side}_load_peak_rss_bytes"] = child["load_peak_rss_bytes"]
        if "peak_cuda_bytes" in child:
            report[f"{side}_peak_cuda_bytes"] = child["peak_cuda_bytes"]
    report["ratio"] = report["ours_peak_rss_bytes"] / report["transformers_peak_rss_bytes"]
    return report


def why_section(args: argparse.Namespace, plan: Plan, model_dir: Path, model: Model) -> dict:
    """TransformerLens's bridge booted once over the same checkpoint (only now, so that the
    sections before it run without its copy of the weights), then the why figures; without
    transformer_lens installed, ours alone."""
    from benchmarks import why_bench

    start = time.perf_counter()
    bridge = lens.boot(model_dir, args.device, getattr(torch, args.dtype))
    boot_s = time.perf_counter() - start
    figures = why_bench.measure(
        model,
        bridge,
        plan.why_tokens,
        plan.effect_tokens,
        plan.why_pairs,
        plan.effect_pairs,
        args.device,
    )
    return {**figures, "lens_boot_s": None if bridge is None else boot_s}


def patching_section(args: argparse.Namespace, plan: Plan, model_dir: Path, model: Model) -> dict:
    from benchmarks import patch_bench

    bridge = lens.boot(model_dir, args.device, getattr(torch, args.dtype))
    return patch_bench.measure(
        model, bridge, plan.patch_tokens, plan.patch_pairs, args.device, plan.ui_presses
    )


def sections(
    args: argparse.Namespace, plan: Plan, model_dir: Path, model: Model, hf: GPT2LMHeadModel
) -> list[tuple[str, Callable[[], object]]]:
    """The sections to run, in order, each as a name and a function measuring it."""
    from benchmarks import heads_bench, ui_bench

    chosen = {
        "decode": lambda: decode_section(args, plan, model, hf),
        "prefill": lambda: prefill_section(args, plan, model, hf),
        "memory": lambda: memory_section(args, model_dir),
        "ui": lambda: ui_bench.measure(model, model_dir, plan, args.device),
        "why": lambda: why_section(args, plan, model_dir, model),
        "patching": lambda: patching_section(args, plan, model_dir, model),
        "heads": lambda: heads_bench.measure(model, model.config.n_ctx, plan.why_pairs),
    }
    picked = [(name, fn) for name, fn in chosen.items() if not getattr(args, f"skip_{name}")]
    if args.sizes:
        picked.append(("sizes", lambda: sizes_section(args, plan, model_dir)))
    return picked


def sizes_section(args: argparse.Namespace, plan: Plan, model_dir: Path) -> list[dict]:
    from benchmarks import sizes_bench

    bandwidth = engine_bench.stream_bandwidth(plan.stream_bytes, plan.stream_repeats, args.device)
    directory, named = model_dir / "sizes", "quick" if args.quick else "full"
    return sizes_bench.measure(args.sizes, directory, bandwidth, args.threads, named)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    plan = PLANS["quick" if args.quick else "full"]
    size, dtype = SIZES[plan.size], getattr(torch, args.dtype)
    results: dict = {"machine": machine(args), "model": {"size": plan.size, **asdict(size)}}
    seconds = results["seconds"] = {}
    with tempfile.TemporaryDirectory(prefix="gpt2scope-bench-") as tmp:
        model_dir = Path(tmp)
        start = time.perf_counter()
        hf = write_checkpoint(model_dir, size).to(device=args.device, dtype=dtype)
        model = load_model(model_dir, device=args.device, dtype=dtype)
        seconds["setup"] = time.perf_counter() - start
        for name, measure in sections(args, plan, model_dir, model, hf):
            start = time.perf_counter()
            results[name] = measure()
            seconds[name] = time.perf_counter() - start
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0
