"""The engine's GPT-2 against transformers' GPT2LMHeadModel on random checkpoints."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from gpt2scope.engine import EngineError, load_model
from gpt2scope.engine.run import PER_LAYER, PER_MODEL
from tests.conftest import hub_tensors, write_checkpoint

TOL = 1e-4
N_LAYER, N_HEAD, N_EMBD, N_CTX, VOCAB = 3, 4, 64, 48, 512


@pytest.fixture(scope="module", params=["save_pretrained", "hub"])
def pair(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    hf = write_checkpoint(directory, N_LAYER, N_HEAD, N_EMBD, N_CTX, VOCAB, scale=8.0, seed=1)
    if request.param == "hub":
        save_file(hub_tensors(directory, N_LAYER, N_CTX), directory / "model.safetensors")
    return hf, load_model(directory)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (20,), generator=torch.Generator().manual_seed(3))


def oracle(hf, ids):
    with torch.no_grad():
        return hf(ids[None], output_attentions=True, output_hidden_states=True)


def oracle_qkv(hf, hidden_in, layer):
    """q, k, v [n_head, T, d_head] of one block from transformers' own modules."""
    block = hf.transformer.h[layer]
    with torch.no_grad():
        qkv = block.attn.c_attn(block.ln_1(hidden_in))[0]
    return [t.unflatten(-1, (N_HEAD, -1)).transpose(0, 1) for t in qkv.split(N_EMBD, -1)]


def test_the_checkpoint_gives_the_engine_numbers_far_from_zero(pair, ids):
    """transformers initialises weights with std 0.02: its logits then sit near zero and
    every attention row is nearly uniform, so a wrong step in the engine's maths could still
    agree with the oracle within TOL. The fixture scales the weights up to prevent that;
    this checks, on the engine's own forward, that it did."""
    _, model = pair
    run = model.start(ids.tolist())
    assert run.logits.std() > 1.0
    uniform = (1 / torch.arange(2, len(ids) + 1)).mean()  # query i spreads 1/(i+1) per key
    view = run.view()
    for layer in range(N_LAYER):
        peaks = view.get("pattern", layer)[:, 1:].max(-1).values.mean(-1)
        assert (peaks > 1.5 * uniform).all(), (layer, peaks)


def test_kv_cached_steps_match_full_forward_at_every_step(pair, ids):
    hf, model = pair
    out = oracle(hf, ids)
    run = model.start(ids[:5].tolist())
    torch.testing.assert_close(run.logits, out.logits[0, 4], atol=TOL, rtol=0)
    for t in range(5, len(ids)):
        run.step(int(ids[t]))
        torch.testing.assert_close(run.logits, out.logits[0, t], atol=TOL, rtol=0)
    assert run.tokens == ids.tolist()


@pytest.mark.parametrize("threads", [1, 3, 4])
def test_decode_steps_match_whatever_the_thread_count(pair, ids, threads):
    """A one-row product is split into one block of weight rows per thread; with 3 threads
    the widths 64 and 256 and the vocabulary of 512 leave rows over, which take a product
    of their own. The logits must not depend on any of that."""
    hf, model = pair
    out = oracle(hf, ids)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run = model.start(ids[:5].tolist())
        for t in range(5, len(ids)):
            run.step(int(ids[t]))
            torch.testing.assert_close(run.logits, out.logits[0, t], atol=TOL, rtol=0)
    finally:
        torch.set_num_threads(before)


def test_attention_pattern_matches_and_is_causal(pair, ids):
    hf, model = pair
    out = oracle(hf, ids)
    run = model.start(ids[:7].tolist())
    for t in range(7, len(ids)):
        run.step(int(ids[t]))
    T, view = len(ids), run.view()
    for layer in range(N_LAYER):
        pattern = view.get("pattern", layer)
        torch.testing.assert_close(pattern, out.attentions[layer][0], atol=TOL, rtol=0)
        assert pattern.shape == (N_HEAD, T, T)
        torch.testing.assert_close(pattern.sum(-1), torch.ones(N_HEAD, T), atol=1e-6, rtol=0)
        assert torch.all(pattern.triu(1) == 0)


def test_qkv_match_transformers_projections(pair, ids):
    hf, model = pair
    out = oracle(hf, ids)
    run = model.start(ids[:3].tolist())
    for t in range(3, len(ids)):
        run.step(int(ids[t]))
    view = run.view()
    for layer in range(N_LAYER):
        expected = oracle_qkv(hf, out.hidden_states[layer], layer)
        for name, theirs in zip("qkv", expected, strict=True):
            ours = view.get(name, layer)
            assert ours.shape == (len(ids), N_HEAD, N_EMBD // N_HEAD)
            torch.testing.assert_close(ours, theirs.transpose(0, 1), atol=TOL, rtol=0)


def oracle_activations(hf, ids) -> dict[tuple[str, int | None], torch.Tensor]:
    """Every activation `RunView.get` names, read off transformers' GPT-2 with forward hooks
    (or, for attn_scores, worked out from its own q and k), in TransformerLens's shapes."""
    T, d_head = len(ids), N_EMBD // N_HEAD
    found = {
        ("embed", None): hf.transformer.wte.weight[ids].detach(),
        ("pos_embed", None): hf.transformer.wpe.weight[:T].detach(),
    }

    def keep(name, layer, tensor):
        found[name, layer] = tensor[0].detach()

    hooks = []
    for layer, block in enumerate(hf.transformer.h):
        hooks += [
            block.register_forward_pre_hook(lambda m, i, L=layer: keep("resid_pre", L, i[0])),
            block.ln_2.register_forward_pre_hook(lambda m, i, L=layer: keep("resid_mid", L, i[0])),
            block.attn.c_attn.register_forward_hook(lambda m, i, o, L=layer: keep("qkv", L, o)),
            block.attn.c_proj.register_forward_pre_hook(lambda m, i, L=layer: keep("z", L, i[0])),
            block.mlp.act.register_forward_hook(lambda m, i, o, L=layer: keep("mlp_post", L, o)),
            block.register_forward_hook(
                lambda m, i, o, L=layer: keep("resid_post", L, o[0] if isinstance(o, tuple) else o)
            ),
        ]
    out = oracle(hf, ids)
    for hook in hooks:
        hook.remove()
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    for layer in range(N_LAYER):
        heads = found.pop(("qkv", layer)).unflatten(-1, (3 * N_HEAD, d_head))
        q, k, v = heads.split(N_HEAD, dim=-2)  # [T, n_head, d_head]
        found["q", layer], found["k", layer], found["v", layer] = q, k, v
        found["z", layer] = found["z", layer].unflatten(-1, (N_HEAD, d_head))
        scores = q.transpose(0, 1) @ k.permute(1, 2, 0) / d_head**0.5
        found["attn_scores", layer] = scores.masked_fill(mask, float("-inf"))
        found["pattern", layer] = out.attentions[layer][0]
    return found


def test_get_reads_every_activation_as_transformers_computes_it(pair, ids):
    hf, model = pair
    view = model.start(ids[:5].tolist())
    for t in ids[5:]:
        view.step(int(t))
    view = view.view()
    expected = oracle_activations(hf, ids)
    assert {name for name, _ in expected} == set(PER_MODEL + PER_LAYER)
    for (name, layer), theirs in expected.items():
        ours = view.get(name, layer)
        assert ours.shape == theirs.shape, name
        torch.testing.assert_close(ours, theirs, atol=TOL, rtol=0, msg=f"{name} {layer}")


def test_get_at_a_position_is_that_row_of_the_whole(pair, ids):
    _, model = pair
    view = model.start(ids.tolist()).view()
    for name in PER_MODEL:
        torch.testing.assert_close(view.get(name, None, 7), view.get(name)[7], atol=0, rtol=0)
    for name in PER_LAYER:
        whole = view.get(name, 1)
        row = whole[:, 7] if name in ("attn_scores", "pattern") else whole[7]
        torch.testing.assert_close(view.get(name, 1, 7), row, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("name", "layer", "message"),
    [
        ("attention", 0, "no activation named 'attention'"),
        ("pattern", None, "layer None is not in 0..2"),
        ("resid_pre", N_LAYER, "layer 3 is not in 0..2"),
        ("embed", 0, "embed belongs to no layer"),
    ],
)
def test_get_names_what_it_cannot_read(pair, name, layer, message):
    _, model = pair
    with pytest.raises(ValueError, match=message):
        model.start([1, 2]).view().get(name, layer)


@pytest.mark.parametrize("position", [-1, 2])
def test_get_refuses_a_position_outside_the_run(pair, position):
    _, model = pair
    with pytest.raises(ValueError, match=r"position .* is not in 0\.\.1"):
        model.start([1, 2]).view().get("z", 0, position)


def test_logit_lens_last_layer_is_the_real_output(pair, ids):
    _, model = pair
    run = model.start(ids.tolist())
    lens = run.view().logit_lens(len(ids) - 1)
    assert lens.shape == (N_LAYER, VOCAB)
    torch.testing.assert_close(lens[-1], run.logits, atol=1e-5, rtol=0)


def test_views_stay_valid_while_the_run_grows(pair, ids):
    _, model = pair
    run = model.start(ids[:2].tolist())
    early = run.view()
    before = {name: early.get(name, 0).clone() for name in PER_LAYER}
    for t in range(2, len(ids)):  # crosses the cache's first reallocation
        run.step(int(ids[t]))
    assert early.n_tokens == 2
    for name, activation in before.items():
        torch.testing.assert_close(early.get(name, 0), activation, atol=0, rtol=0)


def test_config_read_from_file_and_inferred_without_it(tmp_path):
    write_checkpoint(tmp_path, n_layer=3, n_head=2, n_embd=128, n_positions=32, vocab_size=99)
    config = load_model(tmp_path).config
    assert (config.n_layer, config.n_head, config.n_embd, config.n_ctx) == (3, 2, 128, 32)
    (tmp_path / "config.json").unlink()
    inferred = load_model(tmp_path / "model.safetensors").config
    assert (inferred.n_layer, inferred.n_embd, inferred.n_ctx, inferred.vocab_size) == (
        3,
        128,
        32,
        99,
    )
    assert inferred.n_head == 128 // 64


def test_half_precision_files_compute_in_float32(tmp_path):
    hf = write_checkpoint(tmp_path, n_layer=1, n_head=2, n_embd=32, n_positions=16, vocab_size=64)
    hf.half().save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert model.params.wte.dtype == torch.float32
    assert model.start([1, 2, 3]).logits.dtype == torch.float32


def test_stepping_past_the_context_names_the_limit(pair):
    _, model = pair
    run = model.start([1] * N_CTX)
    with pytest.raises(EngineError, match=str(N_CTX)):
        run.step(2)


def test_prompt_longer_than_the_context_is_refused(pair):
    _, model = pair
    with pytest.raises(EngineError, match=f"{N_CTX + 1} tokens exceed the model's context"):
        model.start([1] * (N_CTX + 1))


def test_memory_grows_with_layers_times_tokens_times_width(pair, ids):
    """q, k, v and the residual stream entering each block (and leaving the last) per
    position: O(L x T x C), with no per-head T x T matrices kept."""
    _, model = pair
    run = model.start(ids.tolist())
    cached = [t for t in vars(run._cache).values() if isinstance(t, torch.Tensor)]
    stored = sum(t.numel() for t in [*cached, run.logits])
    capacity = run._cache.q.shape[-2]
    per_position = 3 * N_LAYER * N_EMBD + (N_LAYER + 1) * N_EMBD
    assert stored == per_position * capacity + VOCAB  # + the next-token logits
    assert len(ids) <= capacity <= max(64, 2 * len(ids))
