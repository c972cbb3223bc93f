"""Activation patching against transformers' GPT-2 with hooks on the blocks, `attn`, `mlp`
and `attn.c_proj`, on a random checkpoint whose attention is peaked, so that a wrong index
or a wrong position moves the numbers by order one."""

from __future__ import annotations

import pytest
import torch

from gpt2scope.engine import load_model
from gpt2scope.engine.patching import SITES, Pair, Patch, estimate, patched, sweep
from tests.conftest import write_checkpoint

N_LAYER, N_HEAD, N_EMBD, N_CTX, VOCAB = 3, 4, 64, 48, 512
D_HEAD = N_EMBD // N_HEAD
T = 12
DIFFER = (4, 7)  # the positions whose tokens the corrupted prompt changes


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("patching")
    hf = write_checkpoint(directory, N_LAYER, N_HEAD, N_EMBD, N_CTX, VOCAB, scale=8.0, seed=5)
    return hf, load_model(directory)


@pytest.fixture(scope="module")
def prompts():
    clean = torch.randint(0, VOCAB, (T,), generator=torch.Generator().manual_seed(8)).tolist()
    corrupt = list(clean)
    for p in DIFFER:
        corrupt[p] = (clean[p] + 17) % VOCAB
    return clean, corrupt


def make_pair(model, clean, corrupt) -> Pair:
    clean_view, corrupt_view = model.start(clean).view(), model.start(corrupt).view()
    answer = int(clean_view.logits.argmax())
    contrast = int(corrupt_view.logits.argmax())
    if contrast == answer:
        contrast = int(clean_view.logits.topk(2).indices[1])
    return Pair(clean_view, corrupt_view, answer, contrast)


@pytest.fixture(scope="module")
def pair(checkpoint, prompts):
    return make_pair(checkpoint[1], *prompts)


class Oracle:
    """transformers' forward that records the four sites, or overwrites one of them with a
    recorded value: hidden_states entering a block, the attention's output (c_proj's bias
    included), the MLP's output, and the input of attn.c_proj (z, heads side by side)."""

    def __init__(self, hf):
        self.hf = hf

    def run(self, ids, patch: Patch | None = None, source: dict | None = None):
        kept, handles = {}, []
        for layer, block in enumerate(self.hf.transformer.h):
            hooks = (
                (block, "resid_pre", True),
                (block.attn, "attn_out", False),
                (block.mlp, "mlp_out", False),
                (block.attn.c_proj, "z", True),
            )
            for module, site, pre in hooks:
                hook = self._hook(layer, site, kept, patch, source)
                if pre:
                    handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
                else:
                    handles.append(module.register_forward_hook(hook))
        try:
            with torch.no_grad():
                logits = self.hf(torch.tensor([ids])).logits[0, -1]
        finally:
            for h in handles:
                h.remove()
        return logits, kept

    @staticmethod
    def _hook(layer, site, kept, patch, source):
        def replace(x):
            x = x.clone()
            if patch is not None and (patch.site, patch.layer) == (site, layer):
                value = source[site, layer]
                if site == "z":
                    part = slice(patch.index * D_HEAD, (patch.index + 1) * D_HEAD)
                    x[0, :, part] = value[0, :, part]
                else:
                    x[0, patch.index] = value[0, patch.index]
            kept[site, layer] = x
            return x

        def pre(module, args, kwargs):
            if args:
                return (replace(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": replace(kwargs["hidden_states"])}

        def post(module, args, output):
            if isinstance(output, tuple):
                return (replace(output[0]), *output[1:])
            return replace(output)

        return pre if site in ("resid_pre", "z") else post


def oracle_map(hf, pair, clean, corrupt, site):
    oracle = Oracle(hf)
    _, source = oracle.run(clean)
    n_layer, n_cells = pair.shape(site)
    u = [pair.answer, pair.contrast]
    out = torch.empty(n_layer, n_cells, dtype=torch.float64)
    for layer in range(n_layer):
        for index in range(n_cells):
            logits, _ = oracle.run(corrupt, Patch(site, layer, index), source)
            ld = float(logits[u[0]] - logits[u[1]])
            out[layer, index] = (ld - pair.corrupt_metric) / pair.spread
    return out


def test_the_metrics_are_the_models_logit_differences(checkpoint, pair, prompts):
    oracle = Oracle(checkpoint[0])
    for ids, ours in zip(prompts, (pair.clean_metric, pair.corrupt_metric), strict=True):
        logits, _ = oracle.run(ids)
        theirs = float(logits[pair.answer] - logits[pair.contrast])
        assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-5)
    # The checkpoint gives the test something to measure: the prompts' LDs are far apart.
    assert abs(pair.spread) > 0.5


@pytest.mark.parametrize("site", SITES)
def test_every_exact_cell_matches_hooked_transformers(checkpoint, pair, prompts, site):
    ours = torch.tensor(sweep(pair, site), dtype=torch.float64)
    theirs = oracle_map(checkpoint[0], pair, *prompts, site)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-3)
    # Not a map of zeros: the patches move LD by order one somewhere.
    assert theirs.abs().max() > 0.2


def test_patching_the_only_differing_position_at_layer_0_restores_the_clean_run(checkpoint):
    model = checkpoint[1]
    clean = torch.randint(0, VOCAB, (T,), generator=torch.Generator().manual_seed(9)).tolist()
    corrupt = list(clean)
    corrupt[5] = (clean[5] + 1) % VOCAB
    row = sweep(make_pair(model, clean, corrupt), "resid_pre")[0]
    assert row[5] == pytest.approx(1.0, abs=1e-5)
    assert all(row[p] == pytest.approx(0.0, abs=1e-5) for p in range(T) if p != 5)


def test_positions_before_the_first_difference_are_exactly_zero(pair):
    for site in ("resid_pre", "attn_out", "mlp_out"):
        for row in sweep(pair, site):
            assert row[: DIFFER[0]] == [0.0] * DIFFER[0]


def test_rows_arrive_last_layer_first_and_a_cancel_leaves_the_rest_empty(pair):
    seen = []
    rows = sweep(
        pair, "z", on_row=lambda layer, row: seen.append(layer), cancelled=lambda: len(seen) == 2
    )
    assert seen == [N_LAYER - 1, N_LAYER - 2]
    assert rows[0] == [] and len(rows[N_LAYER - 1]) == N_HEAD


def test_batches_split_across_max_rows_give_the_same_cells(pair, monkeypatch):
    whole = torch.tensor(sweep(pair, "resid_pre"))
    monkeypatch.setattr("gpt2scope.engine.patching.MAX_ROWS", 5)
    torch.testing.assert_close(torch.tensor(sweep(pair, "resid_pre")), whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("site", SITES)
def test_an_applied_patch_gives_a_run_with_the_cells_metric(checkpoint, pair, prompts, site):
    cells = sweep(pair, site)
    layer, index = 1, DIFFER[1] if site != "z" else 2
    view = patched(pair, Patch(site, layer, index))
    ld = float(view.logits[pair.answer] - view.logits[pair.contrast])
    assert pair.normalised(ld) == pytest.approx(cells[layer][index], abs=1e-4)
    assert view.tokens == pair.corrupt.tokens
    # The run is whole: its layers after the patch read the patched residual stream.
    logits, _ = Oracle(checkpoint[0]).run(
        prompts[1], Patch(site, layer, index), Oracle(checkpoint[0]).run(prompts[0])[1]
    )
    torch.testing.assert_close(view.logits, logits, rtol=1e-4, atol=1e-4)


def oracle_estimate(hf, pair, clean, corrupt, site):
    """(a_clean - a_corrupt) . dLD/da by autograd through transformers, from hooks that keep
    each site's tensor as a graph node."""
    _, source = Oracle(hf).run(clean)
    kept, handles = {}, []
    for layer, block in enumerate(hf.transformer.h):
        module = {
            "resid_pre": block,
            "attn_out": block.attn,
            "mlp_out": block.mlp,
            "z": block.attn.c_proj,
        }[site]
        if site in ("resid_pre", "z"):

            def hook(m, args, kwargs, layer=layer):
                x = args[0] if args else kwargs["hidden_states"]
                kept[layer] = x
        else:

            def hook(m, args, output, layer=layer):
                kept[layer] = output[0] if isinstance(output, tuple) else output

        if site in ("resid_pre", "z"):
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(hook))
    try:
        logits = hf(torch.tensor([corrupt])).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    ld = logits[pair.answer] - logits[pair.contrast]
    grads = torch.autograd.grad(ld, [kept[layer] for layer in range(N_LAYER)])
    rows = []
    for layer, grad in enumerate(grads):
        product = ((source[site, layer] - kept[layer]) * grad)[0].detach()
        if site == "z":
            rows.append(product.view(T, N_HEAD, D_HEAD).sum((0, 2)))
        else:
            rows.append(product.sum(-1))
    return torch.stack(rows).double() / pair.spread


@pytest.mark.parametrize("site", SITES)
def test_the_estimate_is_attribution_patching_by_autograd(checkpoint, pair, prompts, site):
    ours = torch.tensor(estimate(pair)[site], dtype=torch.float64)
    theirs = oracle_estimate(checkpoint[0], pair, *prompts, site)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


def test_unequal_lengths_are_refused_with_both_counts(checkpoint):
    model = checkpoint[1]
    with pytest.raises(ValueError, match="5 and 6 tokens"):
        Pair(model.start([1] * 5).view(), model.start([1] * 6).view(), 1, 2)


@pytest.fixture(scope="module")
def demo_induction():
    from gpt2scope.engine import gpt2_tokenizer
    from gpt2scope.tui.views.patching import EXAMPLES
    from gpt2scope.weights import DEMO_DIR

    tok, model = gpt2_tokenizer(), load_model(DEMO_DIR)
    example = EXAMPLES[0]
    clean, corrupt = (
        model.start(tok.encode(example.clean)),
        model.start(tok.encode(example.corrupt)),
    )
    answer, contrast = tok.encode(example.answer)[0], tok.encode(example.contrast)[0]
    return Pair(clean.view(), corrupt.view(), answer, contrast)


@pytest.mark.parametrize("site", SITES)
def test_on_the_demo_model_the_estimate_agrees_in_sign_on_the_largest_cells(demo_induction, site):
    exact = torch.tensor(sweep(demo_induction, site)).flatten()
    guess = torch.tensor(estimate(demo_induction)[site]).flatten()
    largest = exact.abs().topk(5).indices
    assert (exact[largest].sign() == guess[largest].sign()).all()
    assert torch.corrcoef(torch.stack([exact, guess]))[0, 1] > 0.9


def test_on_the_demo_model_a_copying_head_restores_the_induction_answer(demo_induction):
    """The README's copying heads are in layer 3: patching one of them brings back most of
    ' mat' over ' park'; and the earlier ' mat' position carries the answer at layer 0."""
    heads = torch.tensor(sweep(demo_induction, "z"))
    assert heads.argmax() // heads.shape[1] == 3 and heads.max() > 0.5
    resid = torch.tensor(sweep(demo_induction, "resid_pre"))
    assert resid[0].argmax() == 5 and resid[0, 5] > 0.8  # "mat" / "park", position 5
