"""Turn a checkpoint's tensors into GPT-2 parameters, checking every shape against the config."""

from __future__ import annotations

import re

import torch

from engine.errors import EngineError
from engine.gpt2 import Block, GPT2Config, LayerNorm, Linear, Params
from weights import Checkpoint

LAYER_NAME = re.compile(r"^h\.(\d+)\.")
WTE_ROWS_PER_READ = 4096
BLOCK_TENSORS = {
    "ln_1": ("ln_1.weight", "ln_1.bias"),
    "c_attn": ("attn.c_attn.weight", "attn.c_attn.bias"),
    "c_proj": ("attn.c_proj.weight", "attn.c_proj.bias"),
    "ln_2": ("ln_2.weight", "ln_2.bias"),
    "c_fc": ("mlp.c_fc.weight", "mlp.c_fc.bias"),
    "mlp_proj": ("mlp.c_proj.weight", "mlp.c_proj.bias"),
}


def infer_config(ckpt: Checkpoint) -> GPT2Config:
    """config.json where present, else the shapes of wte, wpe and the numbered blocks."""
    t, cfg = ckpt.tensors, ckpt.config
    model_type = cfg.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise EngineError(
            f"{ckpt.path}: config.json says model_type {model_type!r}; only GPT-2 runs here"
        )
    missing = [name for name in ("wte.weight", "wpe.weight") if name not in t]
    if missing:
        found = ", ".join(sorted(t)[:3]) or "none"
        raise EngineError(
            f"{ckpt.path}: not a GPT-2 checkpoint, missing {', '.join(missing)} "
            f"(found tensors: {found})"
        )
    for name in ("wte.weight", "wpe.weight"):
        if t[name].dim() != 2:
            raise EngineError(f"{ckpt.path}: {name} has shape {list(t[name].shape)}, not 2-D")
    vocab_size, n_embd = t["wte.weight"].shape
    n_ctx = t["wpe.weight"].shape[0]
    layers = {int(m.group(1)) for name in t if (m := LAYER_NAME.match(name))}

    def setting(key: str, inferred: int) -> int:
        if key not in cfg:
            return inferred
        try:
            value = int(cfg[key])
        except (TypeError, ValueError):
            value = 0
        if value <= 0:
            raise EngineError(
                f"{ckpt.path}: config.json gives {key} {cfg[key]!r}, not a positive integer"
            )
        return value

    return GPT2Config(
        n_layer=setting("n_layer", max(layers, default=-1) + 1),
        # GPT-2 heads are 64 wide; tiny files narrower than that get one head.
        n_head=setting("n_head", max(n_embd // 64, 1)),
        n_embd=setting("n_embd", n_embd),
        n_ctx=setting("n_positions", setting("n_ctx", n_ctx)),
        vocab_size=setting("vocab_size", vocab_size),
    )


def expected_shapes(c: GPT2Config) -> dict[str, tuple[int, ...]]:
    d, shapes = c.n_embd, {}
    shapes["wte.weight"] = (c.vocab_size, d)
    shapes["wpe.weight"] = (c.n_ctx, d)
    shapes["ln_f.weight"] = shapes["ln_f.bias"] = (d,)
    block = {
        "ln_1.weight": (d,),
        "ln_1.bias": (d,),
        "attn.c_attn.weight": (d, 3 * d),
        "attn.c_attn.bias": (3 * d,),
        "attn.c_proj.weight": (d, d),
        "attn.c_proj.bias": (d,),
        "ln_2.weight": (d,),
        "ln_2.bias": (d,),
        "mlp.c_fc.weight": (d, 4 * d),
        "mlp.c_fc.bias": (4 * d,),
        "mlp.c_proj.weight": (4 * d, d),
        "mlp.c_proj.bias": (d,),
    }
    for i in range(c.n_layer):
        shapes.update({f"h.{i}.{name}": shape for name, shape in block.items()})
    return shapes


def check_tensors(ckpt: Checkpoint, config: GPT2Config) -> None:
    if config.n_embd % config.n_head:
        raise EngineError(
            f"{ckpt.path}: n_embd {config.n_embd} is not divisible by n_head {config.n_head}"
        )
    shapes = expected_shapes(config)
    missing = [name for name in shapes if name not in ckpt.tensors]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise EngineError(f"{ckpt.path}: tensors missing: {', '.join(missing[:3])}{more}")
    for name, shape in shapes.items():
        actual = tuple(ckpt.tensors[name].shape)
        if actual != shape:
            raise EngineError(
                f"{ckpt.path}: {name} has shape {list(actual)}, the config says {list(shape)}"
            )


def to_params(
    ckpt: Checkpoint, config: GPT2Config, device: torch.device, dtype: torch.dtype
) -> Params:
    """Every tensor read into memory of its own (see `Checkpoint.read`), in `dtype` on
    `device`, with wte stored in the LM head's layout (see `read_wte`)."""

    def tensor(name: str) -> torch.Tensor:
        t = ckpt.read(name).to(device=device, dtype=dtype).contiguous()
        check_finite(ckpt, name, t)
        return t

    tensors = {name: tensor(name) for name in expected_shapes(config) if name != "wte.weight"}
    tensors["wte.weight"] = read_wte(ckpt, device, dtype)
    return assemble(tensors, config.n_layer)


def read_wte(ckpt: Checkpoint, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """wte as the transpose of an [n_embd, vocab] row-major matrix.

    A decode step multiplies one row by wte.T, a third of GPT-2 small's weights, and the
    BLAS kernel streams this layout at close to the memory bandwidth; over a row-major wte
    it runs about 1.7x slower. Looking up a token's embedding then reads strided memory,
    microseconds once per token. Read a slice of rows at a time, so that the load never
    holds a second whole copy (154 MB for GPT-2 small)."""
    wte = ckpt.tensors["wte.weight"]
    vocab_size, n_embd = wte.shape
    head = torch.empty(n_embd, vocab_size, device=device, dtype=dtype)
    # One buffer for every slice: a fresh one each time left the freed slices behind as
    # holes in the heap, 90 MB of resident memory that was never given back.
    buffer = torch.empty(WTE_ROWS_PER_READ, n_embd, dtype=wte.dtype)
    for start in range(0, vocab_size, WTE_ROWS_PER_READ):
        rows = slice(start, min(start + WTE_ROWS_PER_READ, vocab_size))
        part = ckpt.read("wte.weight", rows, buffer[: rows.stop - start])
        part = part.to(device=device, dtype=dtype)
        check_finite(ckpt, "wte.weight", part)
        head[:, rows] = part.T
    return head.T


def check_finite(ckpt: Checkpoint, name: str, t: torch.Tensor) -> None:
    # min and max are NaN if any value is, and infinite if any is: one pass and no
    # tensor of flags the size of t, whose freed memory lingers as holes in the heap.
    low, high = torch.aminmax(t)
    if not (torch.isfinite(low) and torch.isfinite(high)):
        raise EngineError(f"{ckpt.path}: {name} holds NaN or infinite values")


def assemble(tensors: dict[str, torch.Tensor], n_layer: int) -> Params:
    """GPT-2's parameters from tensors under the checkpoint's names, the very tensors given."""

    def block(i: int) -> Block:
        parts = {
            field: (tensors[f"h.{i}.{w}"], tensors[f"h.{i}.{b}"])
            for field, (w, b) in BLOCK_TENSORS.items()
        }
        return Block(
            ln_1=LayerNorm(*parts["ln_1"]),
            c_attn=Linear(*parts["c_attn"]),
            c_proj=Linear(*parts["c_proj"]),
            ln_2=LayerNorm(*parts["ln_2"]),
            c_fc=Linear(*parts["c_fc"]),
            mlp_proj=Linear(*parts["mlp_proj"]),
        )

    return Params(
        wte=tensors["wte.weight"],
        wpe=tensors["wpe.weight"],
        blocks=tuple(block(i) for i in range(n_layer)),
        ln_f=LayerNorm(tensors["ln_f.weight"], tensors["ln_f.bias"]),
    )


def available_memory() -> int | None:
    """Bytes the kernel says a new allocation can have (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_memory(ckpt: Checkpoint, dtype: torch.dtype, device: torch.device) -> None:
    """Refuse up front a model that cannot fit, rather than dying in the kernel's OOM killer."""
    if device.type != "cpu":
        return
    needed = sum(t.numel() for t in ckpt.tensors.values()) * dtype.itemsize
    free = available_memory()
    if free is not None and needed > free:
        raise EngineError(
            f"{ckpt.path}: out of memory: the weights need {needed / 2**30:.1f} GiB "
            f"as {str(dtype).removeprefix('torch.')}, only {free / 2**30:.1f} GiB is free"
        )
