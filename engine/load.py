"""Turn a checkpoint's tensors into GPT-2 parameters, checking every shape against the config."""

from __future__ import annotations

import re

import torch

from gpt2scope.engine.errors import EngineError
from gpt2scope.engine.gpt2 import Block, GPT2Config, LayerNorm, Linear, Params, compute_dtype
from gpt2scope.weights import Checkpoint

LAYER_NAME = re.compile(r"^h\.(\d+)\.")
BLOCK_TENSORS = {
    "ln_1": ("ln_1.weight", "ln_1.bias"),
    "c_attn": ("attn.c_attn.weight", "attn.c_attn.bias"),
    "c_proj": ("attn.c_proj.weight", "attn.c_proj.bias"),
    "ln_2": ("ln_2.weight", "ln_2.bias"),
    "c_fc": ("mlp.c_fc.weight", "mlp.c_fc.bias"),
    "mlp_proj": ("mlp.c_proj.weight", "mlp.c_proj.bias"),
}
LINEARS = ("c_attn", "c_proj", "c_fc", "mlp_proj")


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
    """Every tensor read into memory of its own (see `Checkpoint.read`) on `device`, the
    Conv1D weights held transposed (see `Linear`). The matrices of the products (wte and the
    Conv1D weights, all but a sliver of the model) are held in `dtype`, the rest in the
    dtype the maths runs in (see `compute_dtype`)."""
    names = expected_shapes(config)
    weights = conv1d_weights(config.n_layer)
    largest = max((ckpt.tensors[name].nbytes for name in weights), default=0)
    buffer = torch.empty(largest, dtype=torch.uint8)

    def tensor(name: str) -> torch.Tensor:
        if name in weights:
            return read_transposed(ckpt, name, buffer, device, dtype)
        held = dtype if name == "wte.weight" else compute_dtype(dtype)
        t = ckpt.read(name).to(device=device, dtype=held).contiguous()
        check_finite(ckpt, name, t)
        return t

    return assemble({name: tensor(name) for name in names}, config.n_layer)


def conv1d_weights(n_layer: int) -> set[str]:
    return {f"h.{i}.{BLOCK_TENSORS[field][0]}" for i in range(n_layer) for field in LINEARS}


def read_transposed(
    ckpt: Checkpoint, name: str, buffer: torch.Tensor, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """A Conv1D weight [in, out] as the transpose of an [out, in] row-major matrix.

    The file is read through one buffer shared by every weight: a fresh copy each time
    would leave the freed copies behind as holes in the heap."""
    stored = ckpt.tensors[name]
    part = ckpt.read(name, buffer[: stored.nbytes].view(stored.dtype).view(stored.shape))
    held = torch.empty(stored.shape[::-1], device=device, dtype=dtype)
    held.copy_(part.T)
    check_finite(ckpt, name, held)
    return held.T


def check_finite(ckpt: Checkpoint, name: str, t: torch.Tensor) -> None:
    # min and max are NaN if any value is, and infinite if any is: one pass and no
    # tensor of flags the size of t, whose freed memory lingers as holes in the heap.
    low, high = torch.aminmax(t)
    if not (torch.isfinite(low) and torch.isfinite(high)):
        raise EngineError(f"{ckpt.path}: {name} holds NaN or infinite values")


def assemble(tensors: dict[str, torch.Tensor], n_layer: int) -> Params:
    """GPT-2's parameters from tensors under the checkpoint's names and in its layout:
    the very tensors given, the Conv1D weights as views of their transposes (see `Linear`)."""

    def block(i: int) -> Block:
        parts = {
            field: (tensors[f"h.{i}.{w}"], tensors[f"h.{i}.{b}"])
            for field, (w, b) in BLOCK_TENSORS.items()
        }
        linears = {field: Linear(parts[field][0].T, parts[field][1]) for field in LINEARS}
        return Block(ln_1=LayerNorm(*parts["ln_1"]), ln_2=LayerNorm(*parts["ln_2"]), **linears)

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
