"""Activation patching: copy one activation of a clean run into a corrupted run of a prompt
with as many tokens, and measure the logit difference LD = logit(answer) - logit(contrast)
at the last position. A cell's effect is (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt):
1 restores the clean answer, 0 does nothing.

Sites, TransformerLens's names: `resid_pre` and `attn_out` and `mlp_out` at (layer,
position), and `z`, one head's z at every position, at (layer, head). Both runs are of the
intact model.

Exact cells rerun the corrupted run from the patched layer on, and only the positions the
patch can reach: causality keeps every position before the patched one (and before the
first token the prompts differ in) as it was, so those rows are read from the corrupted run's
cache, never recomputed, and the patches of one layer run as one batch of packed rows. The
estimate is attribution patching, (a_clean - a_corrupt) . dLD/da, from one forward and one
backward pass of the corrupted run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gpt2scope.engine import gpt2, kernels
from gpt2scope.engine.run import Run, RunView

SITES = ("resid_pre", "attn_out", "mlp_out", "z")
MAX_ROWS = 4096  # packed rows per batch: bounds the memory of a sweep at long prompts
# Below this |LD_clean - LD_corrupt| the normalised effect is noise, not a measurement.
MIN_SPREAD = 1e-3


@dataclass(frozen=True)
class Patch:
    site: str  # one of SITES
    layer: int
    index: int  # the position, or for `z` the head

    @property
    def label(self) -> str:
        if self.site == "z":
            return f"L{self.layer}H{self.index} z"
        return f"L{self.layer} {self.site} @{self.index}"


@dataclass(frozen=True)
class Pair:
    """A clean and a corrupted run of prompts with as many tokens, and the tokens whose
    logit difference is the metric."""

    clean: RunView
    corrupt: RunView
    answer: int
    contrast: int
    clean_metric: float = field(init=False)
    corrupt_metric: float = field(init=False)

    def __post_init__(self) -> None:
        if self.clean.n_tokens != self.corrupt.n_tokens:
            raise ValueError(
                f"the prompts have {self.clean.n_tokens} and {self.corrupt.n_tokens} tokens; "
                "patching needs as many in both"
            )
        vocab = self.clean.config.vocab_size
        for token in (self.answer, self.contrast):
            if not 0 <= token < vocab:
                raise ValueError(f"token id {token} is outside the vocabulary (0..{vocab - 1})")
        object.__setattr__(self, "clean_metric", self._ld(self.clean.logits))
        object.__setattr__(self, "corrupt_metric", self._ld(self.corrupt.logits))

    @property
    def n_tokens(self) -> int:
        return self.clean.n_tokens

    @property
    def first_difference(self) -> int:
        """The first position whose token differs: before it the two runs are the same."""
        pairs = zip(self.clean.tokens, self.corrupt.tokens, strict=True)
        return next((i for i, (a, b) in enumerate(pairs) if a != b), self.n_tokens)

    @property
    def spread(self) -> float:
        return self.clean_metric - self.corrupt_metric

    @property
    def meaningful(self) -> bool:
        """Whether the prompts' LDs differ enough for a normalised effect to mean anything."""
        return abs(self.spread) >= MIN_SPREAD

    def normalised(self, ld: float) -> float:
        # + 0.0: a cell the patch cannot reach is 0, never -0.
        return (ld - self.corrupt_metric) / self.spread + 0.0 if self.meaningful else 0.0

    def shape(self, site: str) -> tuple[int, int]:
        config = self.clean.config
        return config.n_layer, config.n_head if site == "z" else self.n_tokens

    def _ld(self, logits: torch.Tensor) -> float:
        return float(logits[self.answer] - logits[self.contrast])


def default_tokens(clean: RunView, corrupt: RunView) -> tuple[int, int]:
    """The answer and contrast when none are given: the clean run's top prediction and the
    corrupted run's (its runner-up when both runs predict the same token)."""
    answer = int(clean.logits.argmax())
    contrast = int(corrupt.logits.argmax())
    if contrast == answer:
        contrast = int(corrupt.logits.topk(2).indices[1])
    return answer, contrast


def sweep(
    pair: Pair,
    site: str,
    on_row: Callable[[int, list[float]], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> list[list[float]]:
    """[n_layer][positions, or heads for `z`]: the normalised effect of patching each cell.
    Layers go last to first, the cheapest first; `on_row(layer, row)` follows each, and once
    `cancelled()` is true the layers not done are left as empty rows."""
    _check_site(site)
    rows: list[list[float]] = [[] for _ in range(pair.clean.config.n_layer)]
    for layer in reversed(range(pair.clean.config.n_layer)):
        if cancelled():
            break
        with torch.no_grad():
            lds = _patched_lds(pair, site, layer)
        rows[layer] = [pair.normalised(ld) for ld in lds.tolist()]
        if on_row is not None:
            on_row(layer, rows[layer])
    return rows


def estimate(pair: Pair) -> dict[str, list[list[float]]]:
    """Every site's map by attribution patching: the first-order change of LD when the
    corrupted activation is replaced by the clean one, normalised as `sweep`'s cells."""
    grads, corrupt = _gradients(pair.corrupt, pair.answer, pair.contrast)
    maps = {}
    for site in SITES:
        delta = _activations(pair.clean, site) - corrupt[site]
        products = delta * grads[site]
        # z: [n_layer, T, n_head, d_head] summed over positions and d_head, one per head.
        cells = products.sum((1, 3)) if site == "z" else products.sum(-1)
        maps[site] = [
            [c / pair.spread + 0.0 if pair.meaningful else 0.0 for c in row]
            for row in cells.tolist()
        ]
    return maps


def patched(pair: Pair, patch: Patch) -> RunView:
    return patched_run(pair, patch).view()


def patched_run(pair: Pair, patch: Patch) -> Run:
    """The corrupted run with one clean activation copied in: a whole run, so that every
    view reads it and generation can go on from it. The layers before the patch are the
    corrupted run's."""
    _check_patch(pair, patch)
    corrupt = pair.corrupt
    with torch.no_grad():
        if patch.site == "resid_pre":
            first, resid = patch.layer, corrupt.get("resid_pre", patch.layer).clone()
            resid[patch.index] = pair.clean.get("resid_pre", patch.layer, patch.index)
        else:
            first, resid = patch.layer + 1, _patched_post(pair, patch)
    return Run.from_layer(corrupt, first, resid, patch=f"{patch.label} ← clean")


def _patched_post(pair: Pair, patch: Patch) -> torch.Tensor:
    """[T, n_embd] resid_post of the patch's layer in the corrupted run with the patch."""
    corrupt, layer = pair.corrupt, patch.layer
    block = corrupt.params.blocks[layer]
    mid = corrupt.get("resid_mid", layer).clone()
    post = corrupt.get("resid_post", layer).clone()
    if patch.site == "mlp_out":
        p = patch.index
        post[p] = mid[p] + _mlp_out(pair.clean, layer, p)
        return post
    if patch.site == "attn_out":
        rows = slice(patch.index, patch.index + 1)
        mid[rows] += _attn_out(pair.clean, layer, rows) - _attn_out(corrupt, layer, rows)
        post[rows] = mid[rows] + gpt2.mlp(mid[rows], block, kernels.CPU)
        return post
    mid += _head_write(pair, layer, [patch.index])[0]
    return mid + gpt2.mlp(mid, block, kernels.CPU)


def _attn_out(view: RunView, layer: int, rows: slice) -> torch.Tensor:
    return view.get("resid_mid", layer)[rows] - view.get("resid_pre", layer)[rows]


def _mlp_out(view: RunView, layer: int, position: int) -> torch.Tensor:
    return view.get("resid_post", layer, position) - view.get("resid_mid", layer, position)


def _head_write(pair: Pair, layer: int, heads: list[int]) -> torch.Tensor:
    """[len(heads), T, n_embd]: what copying each head's clean z adds to resid_mid."""
    H, d = pair.clean.config.n_head, pair.clean.config.d_head
    dz = (pair.clean.get("z", layer) - pair.corrupt.get("z", layer))[:, heads]  # [T, h, d]
    c_proj = pair.clean.params.blocks[layer].c_proj.weight.to(dz.dtype)
    W_O = c_proj.view(-1, H, d)[:, heads]  # [C, h, d]
    return torch.einsum("thd,chd->htc", dz, W_O)


def _patched_lds(pair: Pair, site: str, layer: int) -> torch.Tensor:
    """LD of every cell of `layer`'s row: positions (or heads) the patch cannot change keep
    LD_corrupt without being run."""
    clean, corrupt = pair.clean, pair.corrupt
    T, first = pair.n_tokens, pair.first_difference
    n_cells = pair.shape(site)[1]
    lds = torch.full((n_cells,), pair.corrupt_metric, dtype=torch.float64)
    if first == T:
        return lds
    if site == "z":
        block = corrupt.params.blocks[layer]
        mid = (
            corrupt.get("resid_mid", layer)[first:]
            + _head_write(pair, layer, list(range(n_cells)))[:, first:]
        )
        post = mid + gpt2.mlp(mid, block, kernels.CPU)  # [H, T - first, C]
        starts = [first] * n_cells
        lds[:] = _lds_from(pair, layer + 1, starts, post.reshape(-1, post.shape[-1]))
        return lds
    positions = list(range(first, T))
    if site == "resid_pre":
        start_layer, source = layer, corrupt.get("resid_pre", layer)
        patched_rows = clean.get("resid_pre", layer)[first:]
    else:
        start_layer, source = layer + 1, corrupt.get("resid_post", layer)
        patched_rows = _patched_rows(pair, site, layer, first)
    packed = []
    for i, p in enumerate(positions):
        rows = source[p:].clone()
        rows[0] = patched_rows[i]
        packed.append(rows)
    lds[first:] = _lds_from(pair, start_layer, positions, torch.cat(packed))
    return lds


def _patched_rows(pair: Pair, site: str, layer: int, first: int) -> torch.Tensor:
    """[T - first, n_embd]: resid_post of row p when attn_out or mlp_out is patched at p."""
    clean, corrupt = pair.clean, pair.corrupt
    rows = slice(first, pair.n_tokens)
    mid = corrupt.get("resid_mid", layer)[rows]
    if site == "mlp_out":
        return mid + (clean.get("resid_post", layer) - clean.get("resid_mid", layer))[rows]
    mid = mid + _attn_out(clean, layer, rows) - _attn_out(corrupt, layer, rows)
    return mid + gpt2.mlp(mid, corrupt.params.blocks[layer], kernels.CPU)


def _lds_from(pair: Pair, layer: int, starts: list[int], packed: torch.Tensor) -> torch.Tensor:
    """LD at the last position for each batch element b, whose residual stream entering
    `layer` differs from the corrupted run's from position starts[b] on; `packed` holds
    those rows, starts[b]..T-1, element after element. Batches of at most MAX_ROWS rows."""
    T = pair.n_tokens
    out, b, offset = [], 0, 0
    while b < len(starts):
        end, n_rows = b, 0
        while end < len(starts) and (end == b or n_rows + T - starts[end] <= MAX_ROWS):
            n_rows += T - starts[end]
            end += 1
        out.append(_run_rows(pair, layer, starts[b:end], packed[offset : offset + n_rows]))
        b, offset = end, offset + n_rows
    return torch.cat(out)


def _run_rows(pair: Pair, layer: int, starts: list[int], resid: torch.Tensor) -> torch.Tensor:
    """`_lds_from` for one batch: row-wise maths on the packed rows; attention scatters them
    over the corrupted run's keys and values, which stand for the rows not recomputed."""
    corrupt, T = pair.corrupt, pair.n_tokens
    params, H = corrupt.params, corrupt.config.n_head
    batch = torch.cat([torch.full((T - s,), b) for b, s in enumerate(starts)])
    position = torch.cat([torch.arange(s, T) for s in starts])
    for block_index in range(layer, corrupt.config.n_layer):
        block = params.blocks[block_index]
        x_ln = gpt2.layer_norm(resid, block.ln_1)
        q, k, v = (
            t.unflatten(-1, (H, -1)) for t in kernels.linear(x_ln, block.c_attn).chunk(3, -1)
        )
        keys = corrupt._k[block_index].expand(len(starts), -1, -1, -1).clone()
        values = corrupt._v[block_index].expand(len(starts), -1, -1, -1).clone()
        queries = torch.zeros_like(keys)
        keys[batch, :, position] = k
        values[batch, :, position] = v
        queries[batch, :, position] = q
        z = kernels.attend(queries, keys, values)[batch, :, position]  # [rows, H, d_head]
        resid = resid + kernels.linear(z.flatten(-2), block.c_proj)
        resid = resid + gpt2.mlp(resid, block, kernels.CPU)
    last = resid[position == T - 1]
    answer, contrast = params.wte[[pair.answer, pair.contrast]].to(params.dtype)
    u = answer - contrast
    return (gpt2.layer_norm(last, params.ln_f) @ u).double()


def _activations(view: RunView, site: str) -> torch.Tensor:
    """[n_layer, T, ...] of one site, read from a run: z as [n_layer, T, n_head, d_head]."""
    layers = range(view.config.n_layer)
    match site:
        case "resid_pre":
            return torch.stack([view.get("resid_pre", layer) for layer in layers])
        case "attn_out":
            return torch.stack([_attn_out(view, layer, slice(None)) for layer in layers])
        case "mlp_out":
            mid = torch.stack([view.get("resid_mid", layer) for layer in layers])
            post = torch.stack([view.get("resid_post", layer) for layer in layers])
            return post - mid
        case _:
            return torch.stack([view.get("z", layer) for layer in layers])


def _gradients(
    view: RunView, answer: int, contrast: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """dLD/da of every site of the run's tokens, and the activations themselves: one forward
    pass that keeps the sites as graph nodes, and one backward pass."""
    params, H = view.params, view.config.n_head
    kept: dict[str, list[torch.Tensor]] = {site: [] for site in SITES}
    with torch.enable_grad():
        ids = torch.tensor(view.tokens, device=params.wte.device)
        # The weights need no gradient: the graph starts at the embedding.
        resid = gpt2.embed(params, ids, torch.arange(len(ids), device=ids.device))
        resid.requires_grad_()
        for block in params.blocks:
            kept["resid_pre"].append(resid)
            q, k, v = gpt2.project_qkv(gpt2.layer_norm(resid, block.ln_1), block, H, kernels.CPU)
            z = kernels.attend(q, k, v).transpose(0, 1)  # [T, H, d_head]
            kept["z"].append(z)
            attn_out = kernels.linear(z.flatten(-2), block.c_proj)
            kept["attn_out"].append(attn_out)
            mlp_out = gpt2.mlp(resid + attn_out, block, kernels.CPU)
            kept["mlp_out"].append(mlp_out)
            resid = resid + attn_out + mlp_out
        unembed = params.wte[[answer, contrast]].to(params.dtype)
        logits = gpt2.layer_norm(resid[-1], params.ln_f) @ unembed.T
        nodes = [t for site in SITES for t in kept[site]]
        grads = torch.autograd.grad(logits[0] - logits[1], nodes)
    L = view.config.n_layer
    by_site = {site: torch.stack(grads[i * L : (i + 1) * L]) for i, site in enumerate(SITES)}
    values = {site: torch.stack(kept[site]).detach() for site in SITES}
    return by_site, values


def _check_site(site: str) -> None:
    if site not in SITES:
        raise ValueError(f"no patching site {site!r}: {', '.join(SITES)}")


def _check_patch(pair: Pair, patch: Patch) -> None:
    _check_site(patch.site)
    n_layer, n_index = pair.shape(patch.site)
    if not 0 <= patch.layer < n_layer or not 0 <= patch.index < n_index:
        raise ValueError(f"{patch.label} is outside the {n_layer} x {n_index} map")
