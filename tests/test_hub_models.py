"""Any GPT-2 on the hub by OWNER/NAME[@REVISION], through the fake hub of tests/conftest.py:
a fine-tune of another shape, revisions, repositories that are no GPT-2 or only pickles, and
the cache first (offline included)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

from gpt2scope.tui.cli import main
from gpt2scope.weights import WeightsError, is_cached, load_checkpoint, resolve
from tests.conftest import checkpoint_files, commit_of, write_checkpoint

DISTIL = "distilbert/distilgpt2"


@pytest.fixture(scope="module")
def six_layers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """distilgpt2's shape (6 layers) written small: a fine-tune unlike the OpenAI sizes."""
    directory = tmp_path_factory.mktemp("distil")
    hf = write_checkpoint(directory, n_layer=6, n_head=4, n_embd=64, n_positions=64, scale=4.0)
    return directory, hf


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    directory = tmp_path_factory.mktemp("other")
    hf = write_checkpoint(directory, n_layer=2, n_head=4, n_embd=64, n_positions=64, seed=1)
    return directory, hf


def greedy(hf, prompt: list[int], n: int) -> list[int]:
    """transformers' own argmax continuation: the oracle of a --temperature 0 run."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(hf(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


def inspect_json(capsys, *args: str) -> dict:
    argv = ["inspect", "--prompt", "The cat sat", "--length", "3", "--temperature", "0"]
    assert main([*argv, "--format", "json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def continuation(run: dict) -> list[int]:
    return [t["id"] for t in run["tokens"][run["prompt_tokens"] :]]


def prompt_ids(run: dict) -> list[int]:
    return [t["id"] for t in run["tokens"][: run["prompt_tokens"]]]


def error_line(capsys) -> str:
    """The command's last line on stderr (the hub's progress bars come before it)."""
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_fine_tune_is_downloaded_then_read_from_the_cache(
    hub_publish, six_layers, capsys, monkeypatch
):
    directory, hf = six_layers
    hub_publish(DISTIL, checkpoint_files(directory))
    run = inspect_json(capsys, "--weights", DISTIL)
    assert run["model"]["name"] == DISTIL and run["model"]["n_layer"] == 6
    assert run["model"]["origin"] == "hub cache"
    assert continuation(run) == greedy(hf, prompt_ids(run), 3)
    assert is_cached(DISTIL)
    # Cache first: offline, the same command runs on the cached snapshot.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert continuation(inspect_json(capsys, "--weights", DISTIL)) == continuation(run)


def test_revisions_pick_their_own_weights(hub_publish, six_layers, other_weights, capsys):
    (main_dir, main_hf), (v2_dir, v2_hf) = six_layers, other_weights
    hub_publish("someone/gpt2-poems", checkpoint_files(main_dir))
    hub_publish("someone/gpt2-poems", checkpoint_files(v2_dir), revision="v2")
    v2 = inspect_json(capsys, "--weights", "someone/gpt2-poems@v2")
    assert v2["model"]["n_layer"] == 2
    assert continuation(v2) == greedy(v2_hf, prompt_ids(v2), 3)
    assert resolve("someone/gpt2-poems@v2").path.name == commit_of("someone/gpt2-poems", "v2")
    # main is another snapshot, not downloaded yet: the tag did not stand in for it.
    assert not is_cached("someone/gpt2-poems")
    main_run = inspect_json(capsys, "--weights", "someone/gpt2-poems")
    assert continuation(main_run) == greedy(main_hf, prompt_ids(main_run), 3)
    # A commit names its snapshot too.
    commit = commit_of("someone/gpt2-poems", "v2")
    assert resolve(f"someone/gpt2-poems@{commit}").path == resolve("someone/gpt2-poems@v2").path


def test_a_revision_the_hub_lacks_is_named(hub_publish, six_layers, capsys):
    hub_publish("someone/gpt2-poems", checkpoint_files(six_layers[0]))
    assert main(["download", "someone/gpt2-poems@v9"]) == 1
    assert error_line(capsys) == "gpt2scope: someone/gpt2-poems has no revision v9 on the hub"


def test_another_architecture_is_refused_before_its_weights_come(
    hub_publish, fake_hub, six_layers, capsys
):
    config = json.dumps({"model_type": "bert", "hidden_size": 64}).encode()
    weights = (six_layers[0] / "model.safetensors").read_bytes()
    hub_publish(
        "google-bert/bert-base-uncased", {"config.json": config, "model.safetensors": weights}
    )
    assert main(["download", "google-bert/bert-base-uncased"]) == 1
    assert error_line(capsys) == (
        "gpt2scope: google-bert/bert-base-uncased is not GPT-2: its config.json says "
        "model_type 'bert' (gpt2scope runs only GPT-2 models)"
    )
    assert not list(fake_hub.rglob("model.safetensors"))


def test_tensors_that_do_not_fit_gpt2_are_refused_naming_them(hub_publish, tmp_path, capsys):
    """config.json says gpt2, but the file holds another model's tensors."""
    save_file({"embeddings.word_embeddings.weight": torch.zeros(8, 4)}, tmp_path / "w.safetensors")
    files = {
        "config.json": json.dumps({"model_type": "gpt2"}).encode(),
        "model.safetensors": (tmp_path / "w.safetensors").read_bytes(),
    }
    hub_publish("someone/not-really-gpt2", files)
    assert main(["inspect", "--weights", "someone/not-really-gpt2"]) == 1
    line = error_line(capsys)
    assert line.startswith("gpt2scope inspect: error: ")
    assert line.endswith(
        "model.safetensors: not a GPT-2 checkpoint, missing wte.weight, wpe.weight "
        "(found tensors: embeddings.word_embeddings.weight)"
    )


def test_a_pickle_only_repository_says_why_and_how_to_convert(
    hub_publish, fake_hub, six_layers, capsys
):
    files = {
        "config.json": (six_layers[0] / "config.json").read_bytes(),
        "pytorch_model.bin": b"\x80\x02 a pickle",
    }
    hub_publish("someone/gpt2-old", files)
    assert main(["download", "someone/gpt2-old"]) == 1
    line = error_line(capsys)
    assert line.startswith(
        "gpt2scope: someone/gpt2-old has only pytorch_model.bin, a pickle; gpt2scope does not "
        "load pickles because unpickling a file can run any code it holds; convert it to "
        "model.safetensors with safetensors' converter"
    )
    assert "--weights someone/gpt2-old@refs/pr/N" in line
    assert not list(fake_hub.rglob("pytorch_model.bin"))


def test_a_local_pickle_only_directory_says_the_same(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(WeightsError, match="holds only pytorch_model.bin, a pickle; gpt2scope"):
        load_checkpoint(tmp_path)


def test_an_unknown_repository_is_named(hub_publish, capsys):
    assert main(["download", "nobody/nothing"]) == 1
    assert error_line(capsys).startswith(
        "gpt2scope: nobody/nothing: no such model repository on the Hugging Face hub"
    )


def test_offline_with_nothing_cached_says_so_in_one_line(hub_cache, monkeypatch, capsys):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["--weights", DISTIL]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"gpt2scope: error: cannot reach the Hugging Face hub to download {DISTIL} "
        "(HF_HUB_OFFLINE is set); copy a GPT-2 model.safetensors (and its config.json) to "
        "this machine and run `gpt2scope --weights PATH`\n"
    )
    assert not is_cached(DISTIL)
    with pytest.raises(WeightsError, match=f"{DISTIL} is not downloaded: run `gpt2scope download"):
        resolve(DISTIL)
