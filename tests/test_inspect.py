"""`gpt2scope inspect`: the JSON equals the engine's numbers, the text shows every view, the
same seed gives the same output, and errors are one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gpt2scope.engine import (
    Ablation,
    AblationMode,
    SamplingParams,
    attribution,
    gpt2_tokenizer,
    load_model,
    saliency,
)
from gpt2scope.engine.patching import Pair, estimate, sweep
from gpt2scope.engine.sampling import distributions
from gpt2scope.tui.cli import main
from gpt2scope.tui.views import PANES

PROMPT = "The quick brown fox jumps over the lazy dog"


def inspect(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["inspect", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint)


@pytest.fixture
def inspected_json(capsys, tiny_checkpoint):
    args = ["--weights", str(tiny_checkpoint), "--prompt", PROMPT, "--format", "json"]
    code, out, err = inspect(capsys, *args, "--layer", "1", "--head", "2", "--length", "5")
    assert (code, err) == (0, "")
    return json.loads(out)


def test_json_has_every_field(inspected_json):
    data = inspected_json
    for name in ("model", "tokens", "continuation", "layer", "head", "query", "pattern"):
        assert name in data
    assert {"probabilities", "qkv"} <= set(data)
    assert data["bos"] is False
    assert (data["layer"], data["head"]) == (1, 2)
    n = len(data["tokens"])
    assert data["query"] == n - 1
    assert len(data["continuation"]) == 5
    assert data["prompt_tokens"] + 5 == n
    assert data["finish"] == "length"
    assert [t["id"] for t in data["tokens"][: data["prompt_tokens"]]] == gpt2_tokenizer().encode(
        PROMPT
    )
    assert data["model"]["n_layer"] == 2


def test_json_attention_equals_the_engines(inspected_json, model):
    data = inspected_json
    ids = [t["id"] for t in data["tokens"]]
    expected = model.start(ids).view().get("pattern", 1)[2]
    assert np.allclose(np.array(data["pattern"]), expected.numpy(), atol=1e-6)


def test_json_probabilities_equal_the_engines(inspected_json, model):
    data = inspected_json
    ids = [t["id"] for t in data["tokens"]]
    # The last token was sampled from these logits; the run computed them a token at a time
    # through the KV cache, this prefill all at once, so float32 rounding differs a little.
    logits = model.start(ids[:-1]).logits
    dist = distributions(logits, SamplingParams(0.8, 5, 1.0))
    p = data["probabilities"]
    assert p["step"] == 5 and p["chosen"] == ids[-1]
    for c in p["candidates"]:
        assert c["model_probability"] == pytest.approx(float(dist.probs[c["id"]]), rel=1e-4)
        assert c["probability"] == pytest.approx(
            float(dist.probs_filtered[c["id"]]), rel=1e-4, abs=1e-9
        )
    assert sum(c["kept"] for c in p["candidates"]) == p["n_kept"] == 5
    top = torch.topk(logits, 5).indices.tolist()
    assert [c["id"] for c in p["candidates"][:5]] == top


def test_json_qkv_is_the_query_row(inspected_json, model):
    data = inspected_json
    view = model.start([t["id"] for t in data["tokens"]]).view()
    q, k, v = (view.get(name, 1)[:, 2] for name in ("q", "k", "v"))
    query = data["query"]
    row = data["qkv"]
    assert np.allclose(row["q"], q[query].numpy(), atol=1e-6)
    weights = view.get("pattern", 1)[2, query]
    assert [key["index"] for key in row["keys"]] == torch.topk(weights, 5).indices.tolist()
    for key in row["keys"]:
        j = key["index"]
        assert np.allclose(key["k"], k[j].numpy(), atol=1e-6)
        assert np.allclose(key["v"], v[j].numpy(), atol=1e-6)
        assert key["dot"] == pytest.approx(float(q[query] @ k[j]), abs=1e-4)
        assert key["score"] == pytest.approx(key["dot"] / np.sqrt(q.shape[1]), abs=1e-5)
        assert key["weight"] == pytest.approx(float(weights[j]), abs=1e-6)


def test_same_seed_same_output(capsys, tiny_checkpoint):
    args = ["--weights", str(tiny_checkpoint), "--prompt", PROMPT, "--seed", "3"]
    outputs = [inspect(capsys, *args, "--format", "json")[1] for _ in range(2)]
    assert outputs[0] == outputs[1]
    other = inspect(capsys, *args[:-1], "4", "--format", "json")[1]
    assert json.loads(other)["continuation"] != json.loads(outputs[0])["continuation"]


def test_text_prints_every_view(capsys, tiny_checkpoint):
    code, out, _ = inspect(capsys, "--weights", str(tiny_checkpoint), "--prompt", PROMPT)
    assert code == 0
    for view in PANES:
        assert f"== {view.title} ==" in out
    assert "L0 H0" in out and "seed 0" in out
    assert all(len(line) <= 100 for line in out.splitlines())


def test_query_option_selects_the_query(capsys, tiny_checkpoint):
    args = ["--weights", str(tiny_checkpoint), "--prompt", PROMPT, "--length", "0"]
    code, out, _ = inspect(capsys, *args, "--query", "2", "--format", "json")
    assert code == 0
    assert json.loads(out)["query"] == 2
    assert "query 2 ␣brown" in inspect(capsys, *args, "--query", "2")[1]


def test_text_never_prints_control_characters(capsys, tiny_checkpoint):
    prompt = "bell\x07 esc\x1b[2J rlo\u202e nul\x00 end\r\n"
    code, out, _ = inspect(capsys, "--weights", str(tiny_checkpoint), "--prompt", prompt)
    assert code == 0
    allowed = {"\n"}
    assert not [c for c in out if (ord(c) < 32 or 0x7F <= ord(c) < 0xA0) and c not in allowed]
    assert "\u202e" not in out
    code, out, _ = inspect(
        capsys, "--weights", str(tiny_checkpoint), "--prompt", prompt, "--format", "json"
    )
    assert code == 0 and out.isascii() and json.loads(out)["prompt"] == prompt


@pytest.mark.parametrize(
    "args, message",
    [
        (["--weights", "/nonexistent/model"], "/nonexistent/model"),
        (["--temperature", "9"], "temperature"),
        (["--layer", "7"], "--layer 7"),
        (["--query", "500"], "--query 500"),
        (["--prompt", " "], "empty"),
        pytest.param(
            ["--device", "cuda"],
            "sees no CUDA GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here"),
        ),
        pytest.param(
            ["--device", "mps"],
            "sees no Apple MPS GPU",
            marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is here"),
        ),
    ],
)
def test_errors_are_one_line(capsys, tiny_checkpoint, args, message):
    weights = [] if "--weights" in args else ["--weights", str(tiny_checkpoint)]
    code, out, err = inspect(capsys, *weights, *args)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_bos_puts_end_of_text_first(capsys, tiny_checkpoint):
    args = ["--weights", str(tiny_checkpoint), "--prompt", PROMPT, "--length", "0"]
    code, out, _ = inspect(capsys, *args, "--bos", "--format", "json")
    tok = gpt2_tokenizer()
    data = json.loads(out)
    ids = [t["id"] for t in data["tokens"]]
    assert code == 0 and ids == [tok.eot_id, *tok.encode(PROMPT)]
    assert data["bos"] is True  # the export says how the tokens began, to run it again


# --- why this token: attribution, saliency, knock-outs (issue 24) -------------------------


def why_json(capsys, checkpoint, *args):
    base = ["--weights", str(checkpoint), "--prompt", PROMPT, "--format", "json"]
    code, out, err = inspect(capsys, *base, "--length", "3", "--temperature", "0", *args)
    assert (code, err) == (0, "")
    return json.loads(out)


def test_json_attribution_and_saliency_are_the_engines(capsys, tiny_checkpoint, model):
    data = why_json(capsys, tiny_checkpoint, "--query", "3", "--contrast", "#11")
    ids = [t["id"] for t in data["tokens"]]
    view = model.start(ids).view()
    a = data["attribution"]
    assert a["position"] == 3 and a["target"]["id"] == ids[4]
    assert a["contrast"] == {"id": 11, "text": ","}
    expected = attribution(view, 3, ids[4], 11)
    assert a["total"] == pytest.approx(expected.model_value, rel=1e-4)
    assert [c["name"] for c in a["components"]] == [c.name for c in expected.components]
    assert a["components"][1] == {
        "name": "L0H0",
        "layer": 0,
        "head": 0,
        "value": a["components"][1]["value"],
    }
    s = data["saliency"]
    assert s["method"] == "gradient_x_input" and s["target"] == a["target"]
    assert s["scores"] == pytest.approx(saliency(view, 3, ids[4]), rel=1e-4, abs=1e-6)
    assert "ablation" not in data and "head_effects" not in data


def test_json_with_ablate_is_the_knocked_out_models(capsys, tiny_checkpoint, model):
    data = why_json(
        capsys,
        tiny_checkpoint,
        "--ablate",
        "L1H2",
        "--ablate",
        "L0mlp",
        "--ablation",
        "mean",
        "--target",
        " fox",
        "--head-effects",
    )
    assert data["ablation"] == {"mode": "mean", "heads": [[1, 2]], "mlps": [0]}
    ids = [t["id"] for t in data["tokens"]]
    off = Ablation(AblationMode.MEAN, frozenset({(1, 2)}), frozenset({0}))
    # Generated at temperature 0 by the knocked-out model: its own argmax each time.
    for n in range(len(ids) - 3, len(ids)):
        assert ids[n] == int(model.start(ids[:n], off).logits.argmax())
    view = model.start(ids, off).view()
    fox = gpt2_tokenizer().encode(" fox")[0]
    assert data["attribution"]["target"]["id"] == fox
    effects = data["head_effects"]
    assert effects["mode"] == "mean" and effects["contrast"] is None
    logits = view.logits
    assert effects["base"] == pytest.approx(float(logits[fox]), rel=1e-4)
    assert len(effects["effects"]) == 2 and len(effects["effects"][0]) == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", " Paris is"], "--target ' Paris is': is 2 GPT-2 tokens, not one"),
        (["--contrast", "#99999"], "--contrast #99999: the vocabulary has ids 0..50256"),
        (["--ablate", "L99H0"], "--ablate 'L99H0': knock out a head as L<layer>H<head>"),
        (["--ablate", "L0H4"], "layer 0..1, head 0..3"),
        (["--ablate", "L3X"], "or an MLP as L<layer>mlp"),
    ],
)
def test_bad_why_flags_are_one_line_and_exit_1(capsys, tiny_checkpoint, args, message):
    code, out, err = inspect(capsys, "--weights", str(tiny_checkpoint), "--prompt", PROMPT, *args)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and message in err


CLEAN = "The cat sat on the mat. The cat sat on the"
CORRUPT = "The dog ran in the park. The cat sat on the"


def test_json_patching_is_the_engines_and_follows_the_contract(capsys, tiny_checkpoint, model):
    code, out, err = inspect(
        capsys,
        "--weights",
        str(tiny_checkpoint),
        "--prompt",
        CLEAN,
        "--corrupt",
        CORRUPT,
        "--answer",
        " mat",
        "--contrast",
        " park",
        "--length",
        "2",
        "--format",
        "json",
    )
    assert (code, err) == (0, "")
    p = json.loads(out)["patching"]
    tokenizer = gpt2_tokenizer()
    clean, corrupt = tokenizer.encode(CLEAN), tokenizer.encode(CORRUPT)
    # The prompt's tokens are patched, not the generated continuation.
    pair = Pair(
        model.start(clean).view(),
        model.start(corrupt).view(),
        tokenizer.encode(" mat")[0],
        tokenizer.encode(" park")[0],
    )
    assert p["answer"] == {"id": pair.answer, "text": " mat"}
    assert p["contrast"] == {"id": pair.contrast, "text": " park"}
    assert [t["id"] for t in p["corrupt_tokens"]] == corrupt
    assert p["clean_metric"] == pytest.approx(pair.clean_metric, rel=1e-4)
    assert p["corrupt_metric"] == pytest.approx(pair.corrupt_metric, rel=1e-4)
    for name, site in (
        ("resid_pre", "resid_pre"),
        ("attn_out", "attn_out"),
        ("mlp_out", "mlp_out"),
        ("heads", "z"),
    ):
        close = dict(rtol=0, atol=1e-5)
        torch.testing.assert_close(torch.tensor(p[name]), torch.tensor(sweep(pair, site)), **close)
        expected = torch.tensor(estimate(pair)[site])
        torch.testing.assert_close(torch.tensor(p["estimate"][name]), expected, **close)


def test_text_prints_the_patching_maps(capsys, tiny_checkpoint):
    code, out, _ = inspect(
        capsys,
        "--weights",
        str(tiny_checkpoint),
        "--prompt",
        CLEAN,
        "--corrupt",
        CORRUPT,
        "--length",
        "0",
    )
    assert code == 0
    patching = out[out.index("== Patching") :]
    for name in ("resid_pre", "attn_out", "mlp_out"):  # the columns mark the changed tokens
        assert f"{name} (1 = clean restored, *clean ≠ corrupted):" in patching
    assert "heads (1 = clean restored):" in patching
    assert "corrupt The│␣dog│␣ran" in patching


@pytest.mark.parametrize(
    "args, message",
    [
        (["--corrupt", "The big cat"], "the clean prompt is 9 tokens (The|␣quick|"),
        (
            ["--corrupt", PROMPT.replace("fox", "cat"), "--answer", " a b"],
            "--answer ' a b': is 2 GPT-2 tokens",
        ),
        (["--corrupt", CORRUPT, "--ablate", "L0H0"], "--corrupt patches the intact model"),
        (["--answer", " mat"], "--answer goes with --corrupt"),
    ],
)
def test_bad_patching_flags_are_one_line_and_exit_1(capsys, tiny_checkpoint, args, message):
    code, out, err = inspect(capsys, "--weights", str(tiny_checkpoint), "--prompt", PROMPT, *args)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and message in err
