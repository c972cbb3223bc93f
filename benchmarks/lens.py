"""The TransformerLens side of the why-this-token and patching benchmarks: what a researcher
would run in a notebook instead, on the very same checkpoint, booted offline with
`TransformerBridge.boot_transformers`. Optional (the `bench` extra installs it)."""

from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path
from typing import Any

import torch


def boot(model_dir: Path, device: str, dtype: torch.dtype = torch.float32) -> Any | None:
    """The bridge over the checkpoint, in TransformerLens's compatibility mode (its classic
    hook names and cache helpers), or None when transformer_lens is not installed.

    Compatibility mode processes the weights as HookedTransformer does (LayerNorm folded,
    writing weights and the unembedding centred, value biases folded into the output bias):
    logits are unchanged, but a head's DLA leaves out its value bias's write and is of the
    centred logit, so it differs from ours by those terms (equal to ours to 1e-7 with
    center_unembed=False, fold_value_biases=False). The work timed is the same."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(str(model_dir), device=device, dtype=dtype)
        bridge.enable_compatibility_mode(disable_warnings=True)
    return bridge


def version() -> str | None:
    """The installed distribution's version (the module has no __version__), or None."""
    try:
        return importlib.metadata.version("transformer-lens")
    except importlib.metadata.PackageNotFoundError:
        return None


@torch.no_grad()
def dla(bridge: Any, ids: list[int], target: int) -> torch.Tensor:
    """Every head's direct logit attribution at the last position, the documented way."""
    _, cache = bridge.run_with_cache(torch.tensor([ids]))
    heads = cache.stack_head_results(layer=-1, pos_slice=-1)
    return cache.logit_attrs(heads, tokens=torch.tensor([target]), pos_slice=-1)


def _zero_head(head: int):
    def hook(z: torch.Tensor, hook: Any) -> torch.Tensor:
        z[:, :, head] = 0
        return z

    return hook


@torch.no_grad()
def knocked_out(bridge: Any, ids: list[int], layer: int, head: int) -> torch.Tensor:
    """Logits with one head's z zeroed by a hook: one full hooked forward."""
    hook = (f"blocks.{layer}.attn.hook_z", _zero_head(head))
    return bridge.run_with_hooks(torch.tensor([ids]), fwd_hooks=[hook])


def every_head_knocked_out(bridge: Any, ids: list[int], n_layer: int, n_head: int) -> None:
    for layer in range(n_layer):
        for head in range(n_head):
            knocked_out(bridge, ids, layer, head)


def saliency(bridge: Any, ids: list[int], target: int) -> torch.Tensor:
    """Gradient x input at blocks.0.hook_resid_pre (token plus position embedding) for
    log p(target) at the last position: one forward and one backward."""
    kept: dict[str, torch.Tensor] = {}

    def leaf(e: torch.Tensor, hook: Any) -> torch.Tensor:
        kept["e"] = e.detach().requires_grad_()
        return kept["e"]

    with torch.enable_grad():
        logits = bridge.run_with_hooks(
            torch.tensor([ids]), fwd_hooks=[("blocks.0.hook_resid_pre", leaf)]
        )
        log_p = torch.log_softmax(logits[0, -1], -1)[target]
        (grad,) = torch.autograd.grad(log_p, kept["e"])
    return (grad * kept["e"]).sum(-1)


@torch.no_grad()
def patch_sweep(
    bridge: Any, clean: list[int], corrupt: list[int], name: str, answer: int, contrast: int
) -> torch.Tensor:
    """[n_layer, T]: LD of the corrupted run with the clean activation `name` (a per-block
    hook such as 'hook_resid_pre') copied in at one (layer, position), one hooked forward per
    cell, the notebook loop of TransformerLens's patching tutorials."""
    _, cache = bridge.run_with_cache(torch.tensor([clean]))
    n_layer, T = bridge.cfg.n_layers, len(clean)
    out = torch.empty(n_layer, T)
    for layer in range(n_layer):
        hook_name = f"blocks.{layer}.{name}"
        for position in range(T):

            def patch(x: torch.Tensor, hook: Any, position: int = position) -> torch.Tensor:
                x[:, position] = cache[hook.name][:, position]
                return x

            logits = bridge.run_with_hooks(torch.tensor([corrupt]), fwd_hooks=[(hook_name, patch)])
            out[layer, position] = logits[0, -1, answer] - logits[0, -1, contrast]
    return out


@torch.no_grad()
def head_patch_sweep(
    bridge: Any, clean: list[int], corrupt: list[int], answer: int, contrast: int
) -> torch.Tensor:
    """[n_layer, n_head]: LD with one head's clean z copied in at every position."""
    _, cache = bridge.run_with_cache(torch.tensor([clean]))
    n_layer, n_head = bridge.cfg.n_layers, bridge.cfg.n_heads
    out = torch.empty(n_layer, n_head)
    for layer in range(n_layer):
        for head in range(n_head):

            def patch(z: torch.Tensor, hook: Any, head: int = head) -> torch.Tensor:
                z[:, :, head] = cache[hook.name][:, :, head]
                return z

            logits = bridge.run_with_hooks(
                torch.tensor([corrupt]), fwd_hooks=[(f"blocks.{layer}.attn.hook_z", patch)]
            )
            out[layer, head] = logits[0, -1, answer] - logits[0, -1, contrast]
    return out


def forward_backward(bridge: Any, ids: list[int], answer: int, contrast: int) -> None:
    """One forward and one backward of LD: what the patching estimate is held against."""
    with torch.enable_grad():
        logits = bridge(torch.tensor([ids]))
        (logits[0, -1, answer] - logits[0, -1, contrast]).backward()
    bridge.zero_grad(set_to_none=True)
