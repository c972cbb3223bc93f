"""The bundled demo model: small enough to ship, loads through the engine, generates, and
shows the two attention patterns the app exists to show."""

from __future__ import annotations

import json
import random

import pytest
import torch
from tqdm import tqdm
from transformers import GPT2LMHeadModel

from gpt2scope.engine import Model, gpt2_tokenizer, load_model
from gpt2scope.engine.gpt2 import forward
from tools import train_demo
from tools.train_demo import (
    CONFIG,
    HEAD_WINDOWS_FILE,
    HELDOUT_EVERY,
    MIN_HEAD_SCORE,
    OUT_DIR,
    QUOTATIONS_EVERY,
    QUOTATIONS_FILE,
    as_params,
    compact_loss,
    head_pattern_scores,
    heldout_loss,
    heldout_prompts,
    init_tensors,
    main,
    quotation_heads,
    random_windows,
    silence_unused_tokens,
)

MAX_BYTES = 16_000_000

# Ordinary English the model never trained on (its corpus is Debian's fortune cookies).
PARAGRAPH = (
    "On Saturday morning the market opened early, and by eight o'clock the square was "
    "full of people buying bread, apples and fresh flowers. My sister wanted to find a "
    "present for our grandmother, who was turning ninety the following week. We walked "
    "from one stall to the next for almost an hour before she chose a small blue teapot. "
    "The old man who sold it wrapped it carefully in newspaper and told us that it had "
    "belonged to his own mother. On the way home we stopped at the bakery on the corner, "
    "and we ate our lunch on a bench by the river while the boats went slowly past."
)


@pytest.fixture(scope="module")
def demo() -> Model:
    return load_model(OUT_DIR)


def test_files_fit_the_size_budget():
    files = [OUT_DIR / "model.safetensors", OUT_DIR / "config.json"]
    assert sum(f.stat().st_size for f in files) <= MAX_BYTES


def test_config_is_a_hugging_face_gpt2(demo: Model):
    config = json.loads((OUT_DIR / "config.json").read_text())
    assert config["model_type"] == "gpt2"
    assert config["vocab_size"] == demo.config.vocab_size == 50257
    assert (config["n_layer"], config["n_head"]) == (demo.config.n_layer, demo.config.n_head)
    assert (config["n_embd"], config["n_positions"]) == (demo.config.n_embd, demo.config.n_ctx)


@pytest.mark.slow
def test_generates_what_transformers_generates_from_the_same_files(demo: Model):
    """The shipped files are a Hugging Face GPT-2: transformers, reading them on its own,
    must pick the same greedy continuation as the engine."""
    prompt = gpt2_tokenizer().encode("The best thing about")
    run = demo.start(prompt)
    for _ in range(5):
        assert torch.isfinite(run.logits).all()
        run.step(int(run.logits.argmax()))
    assert run.n_tokens == 4 + 5
    hf = GPT2LMHeadModel.from_pretrained(OUT_DIR).eval()
    hf.generation_config.eos_token_id = None  # the loop above goes on past <|endoftext|>
    expected = hf.generate(torch.tensor([prompt]), max_new_tokens=5, do_sample=False)
    assert run.tokens == expected[0].tolist()


def held_out_windows() -> list[list[int]]:
    """The 128-token held-out windows of the training script's `heads` figures."""
    return json.loads((OUT_DIR / HEAD_WINDOWS_FILE).read_text())


def held_out_quotations() -> list[str]:
    """Held-out quotations, each a prompt on its own: the text of `quotation_heads`."""
    return json.loads((OUT_DIR / QUOTATIONS_FILE).read_text())


@pytest.fixture(scope="module")
def quotation_scores(demo: Model) -> dict:
    return quotation_heads(demo, held_out_quotations())


@pytest.mark.slow
def test_it_predicts_held_out_text_better_than_word_frequencies(demo: Model):
    """Measured on the held-out windows, against the corpus's unigram loss (the training
    text's word frequencies are not shipped, so that one figure comes from metrics.json)."""
    unigram = json.loads((OUT_DIR / "metrics.json").read_text())["unigram_loss"]
    ids = torch.tensor(held_out_windows()).flatten()
    assert heldout_loss(demo, ids) < unigram - 1


@pytest.mark.parametrize("pattern", ["previous_token", "first_token"])
@pytest.mark.slow
def test_has_a_clear_head_for_each_pattern_on_held_out_quotations(
    quotation_scores: dict, pattern: str
):
    assert quotation_scores[pattern]["score"] >= MIN_HEAD_SCORE, quotation_scores


def test_the_previous_token_head_holds_on_ordinary_english(demo: Model):
    scores = head_pattern_scores(demo, [gpt2_tokenizer().encode(PARAGRAPH)])
    assert scores["previous_token"]["score"] >= MIN_HEAD_SCORE, scores


@pytest.mark.parametrize("figure", ["heads", "quotation_heads"])
@pytest.mark.slow
def test_the_recorded_head_figures_are_what_the_committed_model_gives(
    demo: Model, quotation_scores: dict, figure: str
):
    recorded = json.loads((OUT_DIR / "metrics.json").read_text())[figure]
    if figure == "heads":
        measured = head_pattern_scores(demo, held_out_windows())
    else:
        measured = quotation_scores
    for pattern, head in recorded.items():
        assert measured[pattern] == {**head, "score": pytest.approx(head["score"], abs=1e-3)}


def test_the_prompts_are_held_out_quotations_the_app_takes_whole():
    too_long = " ".join(["word"] * (CONFIG.n_ctx + 1))
    quotations = [f"quotation {i}" for i in range(200)]
    quotations[HELDOUT_EVERY - 1] = too_long
    quotations[2 * HELDOUT_EVERY - 1] = "one"  # a single token
    heldout = [f"quotation {i}" for i in range(3 * HELDOUT_EVERY - 1, 200, HELDOUT_EVERY)]
    assert heldout_prompts(quotations) == heldout[::QUOTATIONS_EVERY]


def test_an_induction_head_looks_at_what_followed_the_earlier_copy(demo: Model):
    """docs/demo-model.md's "type a sentence twice": in the second copy some head looks at the token
    that followed the current one in the first copy."""
    ids = gpt2_tokenizer().encode(PARAGRAPH)[:40]
    view = demo.start(ids + ids).view()
    queries = torch.arange(40, 79)  # second copy; each one's next token is in the first
    best = max(
        view.get("pattern", layer)[head, queries, queries - 39].mean().item()
        for layer in range(demo.config.n_layer)
        for head in range(demo.config.n_head)
    )
    assert best >= 0.3


@pytest.mark.slow
def test_training_loss_over_the_used_tokens_is_the_full_vocabulary_loss():
    """The trainer's LM head covers only the tokens its corpus uses; with the others' rows
    at zero that must be the very cross-entropy of the whole vocabulary."""
    torch.manual_seed(0)
    tensors = init_tensors(CONFIG)
    params = as_params(tensors, CONFIG)
    ids = torch.randint(0, 3000, (2000,))
    used = torch.unique(ids)
    silence_unused_tokens(tensors, used)
    window = ids[:340].view(5, 68)[:, :65]
    full = torch.nn.functional.cross_entropy(
        forward(params, CONFIG.n_head, window[:, :-1]).flatten(0, 1), window[:, 1:].flatten()
    )
    with torch.no_grad():
        assert compact_loss(params, window, used).item() == pytest.approx(full.item(), abs=1e-4)


def test_a_quarter_of_the_training_windows_repeat_their_start_at_varied_periods():
    ids = torch.arange(100_000)  # distinct ids: text never repeats by chance
    windows = random_windows(ids, 64, torch.Generator().manual_seed(0))
    n = windows.shape[1]
    periods = [
        next((p for p in range(1, n) if bool((w[p:] == w[: n - p]).all())), None) for w in windows
    ]
    repeated = [p for p in periods if p is not None]
    assert len(repeated) == len(windows) // 4
    assert all(n // 4 <= p <= (n + 1) // 2 for p in repeated)
    assert len(set(repeated)) > 1
    assert all(bool((w[:p].diff() == 1).all()) for w, p in zip(windows, periods, strict=True) if p)


@pytest.fixture
def restore_process_settings(monkeypatch):
    """The script sets process-wide state; the tests that follow run with the defaults.
    Its progress bar would also leave tqdm's monitor thread running for the whole session."""
    monkeypatch.setattr(train_demo, "keep_freed_memory", lambda: None)
    monkeypatch.setattr(tqdm, "monitor_interval", 0)
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_retraining_with_the_same_seed_writes_the_same_file(tmp_path, restore_process_settings):
    """docs/demo-model.md promises that a rerun of the script gives the committed file again."""
    words = PARAGRAPH.split()
    rng = random.Random(0)
    quotations = [" ".join(rng.choices(words, k=40)) for _ in range(400)]
    corpus = tmp_path / "fortunes"
    corpus.mkdir()
    (corpus / "market").write_text("\n%\n".join(quotations))
    for out in ("first", "second"):
        with pytest.raises(SystemExit, match="no head scores"):  # 12 steps form no heads
            main(["--steps", "12", "--corpus", str(corpus), "--out", str(tmp_path / out)])
    first, second = (tmp_path / out / "model.safetensors" for out in ("first", "second"))
    assert first.read_bytes() == second.read_bytes()
