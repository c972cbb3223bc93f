"""The deeper views' numbers, as `inspect --format json` and the export write them, against
independent computations: transformers' own hidden states and attentions on a random
checkpoint, and numpy over the exported q, k and v."""

from __future__ import annotations

import json
import math
import queue
import unicodedata

import numpy as np
import pytest
import torch
from rich.cells import cell_len

from gpt2scope.engine import Finished, Runner, SamplingParams, gpt2_tokenizer, load_model
from gpt2scope.engine.analysis import HeadKind, HeadStats, head_kind
from gpt2scope.engine.sampling import distributions
from gpt2scope.tui.report import run_json
from gpt2scope.tui.session import ModelInfo, Session, Settings
from gpt2scope.tui.text import Pieces
from gpt2scope.tui.views import SCREEN_BY_ID, SCREENS
from gpt2scope.tui.views.page import Page
from gpt2scope.tui.views.stages import SOFTMAX
from tests.conftest import write_checkpoint
from tests.test_analysis import reference_head

N_LAYER, N_HEAD, N_EMBD, VOCAB = 3, 4, 64, 300
PROMPT_IDS = [11, 263, 42, 7, 199, 15, 88, 3]
STEPS = 6
LAYER, HEAD, QUERY = 1, 2, 5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small-vocabulary model (so its distributions are peaked enough to rank), run as
    the app runs it; the session at query QUERY, and transformers over the same tokens."""
    directory = tmp_path_factory.mktemp("deeper")
    hf = write_checkpoint(directory, N_LAYER, N_HEAD, N_EMBD, 32, VOCAB, scale=8.0, seed=3)
    model = load_model(directory)
    tokenizer = gpt2_tokenizer()
    params = SamplingParams(0.8, 5, 1.0)
    info = ModelInfo.of(model, "deeper", "path", "deeper")
    session = Session(info, tokenizer, Settings(layer=LAYER, head=HEAD, params=params))
    events: queue.Queue = queue.Queue()
    runner = Runner(model, events.put, params, 0, tokenizer)
    runner.start_tokens(PROMPT_IDS)
    runner.generate(STEPS)
    while not isinstance(event := events.get(timeout=60), Finished):
        session.apply(event)
    runner.close()
    session.update(query=QUERY)
    scope = session.scope()
    pieces = Pieces(tokenizer)
    data = json.loads(json.dumps(run_json(scope, pieces)))  # as written: no NaN, no inf
    ids = torch.tensor(scope.view.tokens)
    with torch.no_grad():
        out = hf(ids[None], output_attentions=True, output_hidden_states=True)
    return hf, out, scope, data, pieces


def test_stages_follow_the_formulas_and_end_in_the_engines_head_output(run):
    _, out, scope, data, _ = run
    s = data["stages"]
    assert (s["layer"], s["head"], s["query"]) == (LAYER, HEAD, QUERY)
    q, k, v = np.array(s["q"]), np.array(s["k"]), np.array(s["v"])
    raw = k @ q
    np.testing.assert_allclose(s["raw_scores"], raw, atol=1e-5)
    scaled = s["scaled_scores"]
    assert scaled[QUERY + 1 :] == [None] * (len(raw) - QUERY - 1)  # masked: -inf
    visible = raw[: QUERY + 1] / math.sqrt(len(q))
    np.testing.assert_allclose(scaled[: QUERY + 1], visible, atol=1e-5)
    weights = np.exp(visible - visible.max())
    weights /= weights.sum()
    np.testing.assert_allclose(s["pattern"][: QUERY + 1], weights, atol=1e-6)
    assert s["pattern"][QUERY + 1 :] == [0.0] * (len(raw) - QUERY - 1)
    np.testing.assert_allclose(s["z"], weights @ v[: QUERY + 1], atol=1e-5)
    engine_z = scope.view.get("z", LAYER)[QUERY, HEAD].numpy()
    np.testing.assert_allclose(s["z"], engine_z, atol=1e-5, rtol=0)
    hf_pattern = out.attentions[LAYER][0, HEAD, QUERY].numpy()
    np.testing.assert_allclose(s["pattern"], hf_pattern, atol=1e-5)


def test_stages_input_row_is_transformers_hidden_state_through_ln_1(run):
    hf, out, _, data, _ = run
    s = data["stages"]
    row = out.hidden_states[LAYER][0, QUERY]
    np.testing.assert_allclose(s["resid_pre"], row.numpy(), atol=1e-4)
    assert s["ln_mean"] == pytest.approx(float(row.mean()), abs=1e-5)
    assert s["ln_std"] == pytest.approx(float(row.std(unbiased=False)), rel=1e-4)
    with torch.no_grad():
        normalized = hf.transformer.h[LAYER].ln_1(row)
        q = hf.transformer.h[LAYER].attn.c_attn(normalized)[:N_EMBD]
    np.testing.assert_allclose(s["normalized"], normalized.numpy(), atol=1e-4)
    d = N_EMBD // N_HEAD
    np.testing.assert_allclose(s["q"], q[HEAD * d : (HEAD + 1) * d].numpy(), atol=1e-4)


def top_by_transformers(hf, out, layer: int) -> torch.Tensor:
    hidden = out.hidden_states[layer + 1][0, QUERY]
    if layer < N_LAYER - 1:  # transformers' last hidden state already has ln_f applied
        hidden = hf.transformer.ln_f(hidden)
    with torch.no_grad():
        return torch.softmax(hidden @ hf.transformer.wte.weight.T, -1)


def test_logit_lens_is_transformers_hidden_states_through_ln_f_and_wte(run):
    hf, out, scope, data, _ = run
    lens = data["logit_lens"]
    rows, target = lens["rows"], lens["target"]
    # the right column follows the token that comes next in the text
    assert lens["position"] == QUERY
    assert target["is_next"] and target["id"] == scope.view.tokens[QUERY + 1]
    assert [row["layer"] for row in rows] == list(range(N_LAYER))
    for layer, row in enumerate(rows):
        probs = top_by_transformers(hf, out, layer)
        listed = [t["model_probability"] for t in row["top"]]
        expected = probs[[t["id"] for t in row["top"]]].tolist()
        assert listed == pytest.approx(expected, abs=1e-5)
        assert listed == sorted(listed, reverse=True)
        assert min(listed) >= float(probs.topk(5).values[-1]) - 1e-5  # these are the top 5
        expected_target = float(probs[target["id"]])
        assert row["target_model_probability"] == pytest.approx(expected_target, abs=1e-5)
    final = torch.softmax(out.logits[0, QUERY], -1)
    assert rows[-1]["top"][0]["id"] == int(final.argmax())  # the last row is the output


def test_head_stats_from_transformers_attentions(run):
    _, out, scope, data, _ = run
    stats = data["head_stats"]
    assert [(h["layer"], h["head"]) for h in stats] == [
        (layer, head) for layer in range(N_LAYER) for head in range(N_HEAD)
    ]
    for h in stats:
        pattern = out.attentions[h["layer"]][0, h["head"]].numpy()
        expected = reference_head(pattern, list(scope.view.tokens))
        expected["entropy_bits"] = expected.pop("entropy")
        for name, value in expected.items():
            assert h[name] == (None if value is None else pytest.approx(value, abs=1e-4)), name
        numbers = {k: v for k, v in h.items() if k not in ("layer", "head", "kind")}
        numbers["entropy"] = numbers.pop("entropy_bits")
        named = HeadStats(h["layer"], h["head"], **numbers, kind=HeadKind.OTHER)
        assert h["kind"] == head_kind(named).value


def test_block_internals_from_transformers_hooks(run):
    hf, out, scope, data, _ = run
    block = hf.transformer.h[LAYER]
    captured = {}
    hooks = [
        block.attn.register_forward_hook(lambda m, i, o: captured.update(attn=o[0][0, QUERY])),
        block.mlp.act.register_forward_hook(lambda m, i, o: captured.update(mlp=o[0, QUERY])),
    ]
    with torch.no_grad():
        hf(torch.tensor(scope.view.tokens)[None])
    for hook in hooks:
        hook.remove()
    b = data["block"]
    assert (b["layer"], b["position"]) == (LAYER, QUERY)
    resid_pre = out.hidden_states[LAYER][0, QUERY]
    resid_post = out.hidden_states[LAYER + 1][0, QUERY]
    resid_mid = resid_pre + captured["attn"]
    assert b["resid_pre_norm"] == pytest.approx(float(resid_pre.norm()), rel=1e-4)
    assert b["attn_out_norm"] == pytest.approx(float(captured["attn"].norm()), rel=1e-4)
    assert b["resid_mid_norm"] == pytest.approx(float(resid_mid.norm()), rel=1e-4)
    assert b["mlp_out_norm"] == pytest.approx(float((resid_post - resid_mid).norm()), rel=1e-4)
    assert b["resid_post_norm"] == pytest.approx(float(resid_post.norm()), rel=1e-4)
    assert b["ln_2"]["std"] == pytest.approx(float(resid_mid.std(unbiased=False)), rel=1e-4)
    np.testing.assert_allclose(b["mlp_post"], captured["mlp"].numpy(), atol=1e-4)
    top = [n["index"] for n in b["top_neurons"]]
    assert top == torch.topk(captured["mlp"], len(top)).indices.tolist()


def test_history_is_every_step_against_transformers_logits(run):
    _, out, scope, data, _ = run
    history = data["history"]
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))
    generated = scope.view.tokens[len(PROMPT_IDS) :]
    assert [h["chosen"]["id"] for h in history] == list(generated)
    for i, h in enumerate(history):
        logits = out.logits[0, len(PROMPT_IDS) + i - 1]  # the position that predicted it
        probs = torch.softmax(logits.double(), -1)
        chosen = h["chosen"]["id"]
        assert h["argmax"]["id"] == int(logits.argmax())
        assert h["chosen"]["rank"] == int((logits > logits[chosen]).sum())
        assert h["chosen"]["model_probability"] == pytest.approx(float(probs[chosen]), abs=1e-5)
        sampled = distributions(logits, SamplingParams(0.8, 5, 1.0)).probs_filtered
        assert h["chosen"]["probability"] == pytest.approx(float(sampled[chosen]), abs=1e-4)
        kept = sampled[sampled > 0]
        sampled_entropy = float(-(kept * kept.log2()).sum())
        assert h["sampled_entropy_bits"] == pytest.approx(sampled_entropy, abs=1e-4)
        assert [t["id"] for t in h["top"]] == torch.topk(logits, 10).indices.tolist()


INVISIBLE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"}


@pytest.mark.parametrize("width, height", [(24, 8), (60, 20), (78, 20), (158, 44)])
@pytest.mark.parametrize("deeper", SCREENS, ids=lambda d: d.id)
def test_deeper_views_fit_the_width(run, deeper, width, height):
    _, _, scope, _, pieces = run
    figure = None if deeper.compute is None else deeper.compute(scope, pieces)
    for cursor in range(5):
        page = Page(scope, figure, scope, cursor)
        for line in deeper.render(page, width, height).lines:
            assert cell_len(line.plain) <= width
            assert not [c for c in line.plain if unicodedata.category(c) in INVISIBLE]


def test_step_through_keeps_the_heaviest_key_in_view_once_there_are_weights(run):
    """Before the softmax the query's own row is the one to follow; from it on, the key the
    query looks at most (at 80x24 the query's neighbours were often masked keys)."""
    _, _, scope, _, pieces = run
    stages = SCREEN_BY_ID["stages"]
    figure = stages.compute(scope, pieces)
    heaviest = int(np.argmax(figure.pattern))
    assert heaviest != QUERY  # else this test could not tell the two apart
    for cursor, focus in ((1, QUERY), (2, QUERY), (SOFTMAX, heaviest), (4, heaviest)):
        drawn = stages.render(Page(scope, figure, scope, cursor), 78, 20)
        assert drawn.focus - drawn.pinned == focus
