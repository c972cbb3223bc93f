"""Direct logit attribution, knock-outs, head effects and saliency against transformers'
GPT-2 with forward hooks, on a random checkpoint whose attention is peaked (see
test_engine.test_the_checkpoint_gives_the_engine_numbers_far_from_zero), so that a wrong
index moves the numbers by order one."""

from __future__ import annotations

import math

import pytest
import torch

from gpt2scope.engine import gpt2_tokenizer, load_model
from gpt2scope.engine.ablation import NO_ABLATION
from gpt2scope.engine.attribution import (
    Ablation,
    AblationMode,
    ablated,
    attribution,
    default_target,
    head_effects,
    saliency,
)
from gpt2scope.weights import DEMO_DIR
from tests.conftest import write_checkpoint

TOL = 1e-4
N_LAYER, N_HEAD, N_EMBD, N_CTX, VOCAB = 3, 4, 64, 48, 512
D_HEAD = N_EMBD // N_HEAD


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    directory = tmp_path_factory.mktemp("attribution")
    hf = write_checkpoint(directory, N_LAYER, N_HEAD, N_EMBD, N_CTX, VOCAB, scale=8.0, seed=1)
    return hf, load_model(directory)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (20,), generator=torch.Generator().manual_seed(3)).tolist()


def close(ours, theirs, rtol=TOL):
    """Within rtol of the oracle, relative to its largest magnitude."""
    ours = torch.as_tensor(ours, dtype=torch.float64)
    theirs = torch.as_tensor(theirs, dtype=torch.float64).detach()
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=rtol * float(theirs.abs().max()))


class Hooked:
    """transformers' GPT-2 with the knock-outs as hooks, recording each block's z (the input
    of attn.c_proj), each MLP's output and the final residual stream (the input of ln_f)."""

    def __init__(self, hf, ablation: Ablation = NO_ABLATION):
        self.hf, self.ablation = hf, ablation
        self.z, self.mlp, self.final = {}, {}, None

    def __call__(self, ids=None, inputs_embeds=None):
        t = self.hf.transformer
        handles = [t.ln_f.register_forward_pre_hook(self._keep_final)]
        for layer, block in enumerate(t.h):
            handles.append(block.attn.c_proj.register_forward_pre_hook(self._z_hook(layer)))
            handles.append(block.mlp.register_forward_hook(self._mlp_hook(layer)))
        try:
            ids = None if ids is None else torch.tensor([ids])
            return self.hf(input_ids=ids, inputs_embeds=inputs_embeds).logits[0]
        finally:
            for h in handles:
                h.remove()

    def _keep_final(self, module, args):
        self.final = args[0][0].detach()

    def _z_hook(self, layer):
        def hook(module, args):
            z = args[0].clone()
            for head in self.ablation.heads_at(layer):
                part = z[..., head * D_HEAD : (head + 1) * D_HEAD]
                if self.ablation.mode == AblationMode.ZERO:
                    part[:] = 0
                else:  # the mean over positions 0..t at each t
                    counts = torch.arange(1, z.shape[1] + 1)[:, None]
                    part[:] = part.cumsum(1) / counts
            self.z[layer] = z[0].detach()
            return (z,)

        return hook

    def _mlp_hook(self, layer):
        def hook(module, args, out):
            out = torch.zeros_like(out) if layer in self.ablation.mlps else out
            self.mlp[layer] = out[0].detach()
            return out

        return hook


def oracle_attribution(hf, hooked: Hooked, ids, position, target, contrast=None):
    """Every write at `position` from the hooks, through ln_f frozen, in float64."""
    t = hf.transformer
    with torch.no_grad():
        writes = [t.wte.weight[ids[position]] + t.wpe.weight[position]]
        for layer, block in enumerate(t.h):
            z, W = hooked.z[layer][position], block.attn.c_proj.weight  # Conv1D: [in, out]
            for h in range(N_HEAD):
                rows = slice(h * D_HEAD, (h + 1) * D_HEAD)
                writes.append(z[rows] @ W[rows])
            writes += [block.attn.c_proj.bias, hooked.mlp[layer][position]]
        writes = torch.stack(writes).double()
        u = t.wte.weight[target].double()
        if contrast is not None:
            u = u - t.wte.weight[contrast].double()
        x = hooked.final[position].double()
        sigma = (x.var(unbiased=False) + t.ln_f.eps).sqrt()
        g = t.ln_f.weight.double() * u
        values = ((writes - writes.mean(-1, keepdim=True)) @ g) / sigma
        return torch.cat([values, (t.ln_f.bias.double() @ u)[None]])


def expected_names():
    names = ["embed"]
    for layer in range(N_LAYER):
        names += [f"L{layer}H{h}" for h in range(N_HEAD)]
        names += [f"L{layer}.attn_bias", f"L{layer}.mlp"]
    return names + ["ln_f.bias"]


@pytest.mark.parametrize("contrast", [None, 7])
@pytest.mark.parametrize("position", [0, 11, 19])
def test_dla_matches_transformers_hooks_term_by_term(pair, ids, position, contrast):
    hf, model = pair
    hooked = Hooked(hf)
    logits = hooked(ids)
    target = 101
    ours = attribution(model.start(ids).view(), position, target, contrast)
    assert [c.name for c in ours.components] == expected_names()
    close(
        [c.value for c in ours.components],
        oracle_attribution(hf, hooked, ids, position, target, contrast),
    )
    theirs = logits[position, target] - (0 if contrast is None else logits[position, contrast])
    close(ours.model_value, theirs)
    close(ours.total, theirs)


def test_components_sum_to_the_total_and_name_their_layer_and_head(pair, ids):
    _, model = pair
    a = attribution(model.start(ids).view(), 19, 5, 9)
    assert a.total == pytest.approx(sum(c.value for c in a.components), rel=1e-12)
    assert a.total == pytest.approx(a.model_value, rel=TOL)
    by_name = {c.name: c for c in a.components}
    assert (by_name["L2H3"].layer, by_name["L2H3"].head) == (2, 3)
    assert (by_name["L1.mlp"].layer, by_name["L1.mlp"].head) == (1, None)
    assert (by_name["embed"].layer, by_name["ln_f.bias"].head) == (None, None)
    # On this checkpoint the heads write numbers of order one: a test of sums over zeros
    # could not tell a wrong head from a right one.
    assert max(abs(by_name[f"L{layer}H{h}"].value) for layer in range(3) for h in range(4)) > 0.1


@pytest.mark.parametrize(
    "mode, heads, mlps",
    [
        ("zero", {(0, 1), (2, 3)}, set()),
        ("zero", set(), {1}),
        ("mean", {(1, 2), (0, 0)}, {2}),
    ],
)
def test_dla_of_a_knocked_out_model_matches_the_hooked_oracle(pair, ids, mode, heads, mlps):
    hf, model = pair
    ablation = Ablation(AblationMode(mode), frozenset(heads), frozenset(mlps))
    hooked = Hooked(hf, ablation)
    logits = hooked(ids)
    view = model.start(ids, ablation).view()
    close(view.logits, logits[-1])
    ours = attribution(view, 15, 33)
    close([c.value for c in ours.components], oracle_attribution(hf, hooked, ids, 15, 33))
    close(ours.model_value, logits[15, 33])
    by_name = {c.name: c.value for c in ours.components}
    for layer in mlps:
        assert by_name[f"L{layer}.mlp"] == 0.0
    if mode == "zero":
        assert all(by_name[f"L{layer}H{h}"] == 0.0 for layer, h in heads)


def test_default_target_is_the_next_token_then_the_top_prediction(pair, ids):
    _, model = pair
    view = model.start(ids).view()
    assert default_target(view, 4) == ids[5]
    assert default_target(view, len(ids) - 1) == int(view.logits.argmax())


@pytest.mark.parametrize("mode", ["zero", "mean"])
@pytest.mark.parametrize("position", [0, 9, 19])
def test_saliency_matches_autograd_through_transformers(pair, ids, position, mode):
    hf, model = pair
    ablation = Ablation(AblationMode(mode), frozenset({(1, 0)}), frozenset({0}))
    t = hf.transformer
    prefix = ids[: position + 1]
    wte = t.wte.weight.detach()[prefix].clone().requires_grad_()
    log_p = torch.log_softmax(Hooked(hf, ablation)(inputs_embeds=wte[None]), -1)
    (grad,) = torch.autograd.grad(log_p[position, 42], wte)
    e = t.wte.weight[prefix] + t.wpe.weight[: position + 1]
    theirs = (grad * e).sum(-1).detach()
    ours = saliency(model.start(ids, ablation).view(), position, 42)
    assert len(ours) == position + 1
    close(ours, theirs)


def test_saliency_leaves_no_graph_behind(pair, ids):
    _, model = pair
    view = model.start(ids).view()
    saliency(view, 19, 42)
    assert not view.get("resid_post", 2).requires_grad
    assert all(math.isfinite(s) for s in saliency(view, 19, 42))


@pytest.mark.parametrize("position, token", [(20, 1), (-1, 1), (3, VOCAB), (3, -1)])
def test_attribution_refuses_positions_and_tokens_outside_the_run(pair, ids, position, token):
    _, model = pair
    view = model.start(ids).view()
    with pytest.raises(ValueError, match="is not in|outside the vocabulary"):
        attribution(view, position, token)
    with pytest.raises(ValueError, match="is not in|outside the vocabulary"):
        saliency(view, position, token)


def test_parse_reads_heads_and_mlps_and_labels_them_by_layer(pair):
    _, model = pair
    ablation = Ablation.parse(["L2mlp", "l1h3", "L2H0"], "mean", model.config)
    assert ablation == Ablation(AblationMode.MEAN, frozenset({(1, 3), (2, 0)}), frozenset({2}))
    assert ablation.label() == "L1H3 L2H0 L2mlp"
    assert ablation.first_layer() == 1
    assert Ablation().empty and Ablation().first_layer() is None


@pytest.mark.parametrize("spec", ["L99H0", "L0H4", "L3X", "H1", "L-1H0", ""])
def test_parse_refuses_in_one_line_with_the_forms_and_ranges(pair, spec):
    _, model = pair
    with pytest.raises(ValueError) as e:
        Ablation.parse([spec], "zero", model.config)
    message = str(e.value)
    assert "\n" not in message
    assert "L<layer>H<head>" in message and "L<layer>mlp" in message
    assert "layer 0..2" in message and "head 0..3" in message


def test_parse_refuses_an_unknown_mode(pair):
    _, model = pair
    with pytest.raises(ValueError, match="zero or mean"):
        Ablation.parse([], "half", model.config)


def knocked(mode="zero", heads=(), mlps=()):
    return Ablation(AblationMode(mode), frozenset(heads), frozenset(mlps))


ABLATIONS = [
    knocked("zero", {(1, 2)}),
    knocked("zero", {(0, 3), (2, 0)}, {1}),
    knocked("mean", {(1, 1), (2, 2)}),
    knocked("mean", set(), {2}),
]


@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda a: f"{a.mode}:{a.label()}")
def test_a_knocked_out_run_matches_the_hooked_oracle_at_every_step(pair, ids, ablation):
    hf, model = pair
    logits = Hooked(hf, ablation)(ids)
    run = model.start(ids[:6], ablation)
    close(run.logits, logits[5])
    for t in range(6, len(ids)):
        run.step(ids[t])
        close(run.logits, logits[t])


@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda a: f"{a.mode}:{a.label()}")
def test_ablated_reuses_the_view_and_equals_a_fresh_knocked_out_run(pair, ids, ablation):
    _, model = pair
    fresh = model.start(ids, ablation).view()
    for source in (model.start(ids).view(), model.start(ids, ABLATIONS[1]).view()):
        view = ablated(source, ablation)
        assert view.ablation == ablation and view.tokens == fresh.tokens
        close(view.logits, fresh.logits)
        for layer in range(N_LAYER):
            for name in ("z", "resid_mid", "resid_post"):
                close(view.get(name, layer), fresh.get(name, layer))


def test_knocking_out_nothing_changes_nothing(pair, ids):
    _, model = pair
    view = model.start(ids).view()
    same = ablated(view, Ablation())
    assert torch.equal(same.logits, view.logits)
    for layer in range(N_LAYER):
        assert torch.equal(same.get("resid_post", layer), view.get("resid_post", layer))
    assert attribution(same, 12, 3) == attribution(view, 12, 3)
    assert torch.equal(model.start(ids, Ablation()).logits, view.logits)


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_head_effects_match_one_hooked_forward_per_head(pair, ids, mode):
    hf, model = pair
    position, target, contrast = 13, 21, 5
    view = model.start(ids).view()
    rows = []
    effects = head_effects(
        view, position, target, contrast, AblationMode(mode), lambda layer, row: rows.append(row)
    )
    base = Hooked(hf)(ids)[position]
    base = base[target] - base[contrast]
    expected = torch.zeros(N_LAYER, N_HEAD)
    for layer in range(N_LAYER):
        for h in range(N_HEAD):
            out = Hooked(hf, knocked(mode, {(layer, h)}))(ids)[position]
            expected[layer, h] = out[target] - out[contrast] - base
    close(effects, expected, rtol=1e-3)
    assert expected.abs().max() > 0.1
    assert len(rows) == N_LAYER


def test_head_effects_add_to_the_views_own_knock_outs(pair, ids):
    hf, model = pair
    own = knocked("zero", {(2, 1)}, {0})
    effects = head_effects(model.start(ids, own).view(), 19, 8, None, AblationMode.ZERO)
    base = Hooked(hf, own)(ids)[19, 8]
    for layer, h in [(0, 2), (1, 0), (2, 3)]:
        both = knocked("zero", own.heads | {(layer, h)}, own.mlps)
        close(effects[layer][h], Hooked(hf, both)(ids)[19, 8] - base, rtol=1e-3)
    assert effects[2][1] == pytest.approx(0.0, abs=1e-5)  # already knocked out


def test_head_effects_report_each_layer_and_stop_when_cancelled(pair, ids):
    _, model = pair
    seen = []
    effects = head_effects(
        model.start(ids).view(),
        19,
        8,
        None,
        AblationMode.ZERO,
        on_row=lambda layer, row: seen.append((layer, row)),
        cancelled=lambda: len(seen) == 1,
    )
    assert [layer for layer, _ in seen] == [N_LAYER - 1]
    assert effects[N_LAYER - 1] == seen[0][1] and len(seen[0][1]) == N_HEAD
    assert effects[: N_LAYER - 1] == [[]] * (N_LAYER - 1)


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_everything_knocked_out_still_gives_finite_numbers(pair, ids, mode):
    _, model = pair
    every = knocked(mode, {(i, h) for i in range(N_LAYER) for h in range(N_HEAD)}, range(N_LAYER))
    view = ablated(model.start(ids).view(), every)
    a = attribution(view, 19, 3, 4)
    assert all(math.isfinite(c.value) for c in a.components)
    assert a.total == pytest.approx(a.model_value, rel=TOL, abs=TOL)
    assert all(math.isfinite(s) for s in saliency(view, 19, 3))
    effects = head_effects(view, 19, 3, 4, AblationMode(mode))
    assert all(math.isfinite(e) for row in effects for e in row)


def test_mean_mode_gives_the_same_numbers_prefilled_or_generated(pair, ids):
    _, model = pair
    ablation = knocked("mean", {(0, 1), (2, 3)})
    prefilled = model.start(ids, ablation)
    stepped = model.start(ids[:1], ablation)
    for token in ids[1:]:
        stepped.step(token)
    close(stepped.logits, prefilled.logits)
    close(stepped.view().get("z", 2), prefilled.view().get("z", 2))


def test_knocking_out_the_demo_models_previous_token_head_breaks_induction():
    """L0H2 of the demo model attends to the previous token; an induction head needs it to
    find what followed the current token last time. Without it the second copy of a
    sentence is predicted much worse, while the first copy, with nothing to copy from,
    barely changes."""
    model = load_model(DEMO_DIR)
    sentence = gpt2_tokenizer().encode(" The old man sold a small blue teapot to my sister.", False)
    tokens = sentence + sentence
    n = len(sentence)

    def losses(view):
        log_p = []
        for p in range(len(tokens) - 1):
            x = view.get("resid_post", model.config.n_layer - 1, p)
            logits = (
                torch.nn.functional.layer_norm(
                    x, x.shape, model.params.ln_f.weight, model.params.ln_f.bias
                )
                @ model.params.wte.T
            )
            log_p.append(-torch.log_softmax(logits, -1)[tokens[p + 1]])
        log_p = torch.stack(log_p)
        return float(log_p[: n - 1].mean()), float(log_p[n:].mean())

    intact = model.start(tokens).view()
    first, second = losses(intact)
    first_off, second_off = losses(ablated(intact, knocked("zero", {(0, 2)})))
    assert second < first - 2.0  # the intact model copies (8.1 nats, 5.0 on the second copy)
    assert second_off > second + 1.5  # 7.9 without L0H2
    assert abs(first_off - first) < second_off - second
