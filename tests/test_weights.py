"""Checkpoint files, good and bad, and finding/downloading them through the Hugging Face cache.

No network: the hub cache is a temporary directory laid out as huggingface_hub lays it out,
offline mode is huggingface_hub's own, and downloads go to a fake hub on localhost.
huggingface_hub reads HF_HOME / HF_HUB_OFFLINE once at import, so in-process tests patch
`huggingface_hub.constants`; the command-line test sets the environment of a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import load_file, save_file

import gpt2scope.weights.hub
from gpt2scope.engine import EngineError, load_model
from gpt2scope.tui.cli import main
from gpt2scope.weights import (
    DownloadCancelled,
    WeightsError,
    download,
    is_cached,
    load_checkpoint,
    resolve,
)
from gpt2scope.weights.checkpoint import canonical_name
from tests.conftest import REVISION, blob_name, hub_tensors, write_checkpoint

N_LAYER, N_HEAD, N_EMBD, N_CTX, VOCAB = 2, 2, 32, 64, 256
IDS = [3, 1, 4, 1, 5, 9, 2, 6]


def save_pretrained(directory: Path) -> Path:
    write_checkpoint(directory, N_LAYER, N_HEAD, N_EMBD, N_CTX, VOCAB, scale=4.0, seed=1)
    return directory


def hub_layout(source: Path, directory: Path) -> Path:
    """A copy of `source` in the layout of the hub's openai-community/gpt2 file."""
    hub = hub_tensors(source, N_LAYER, N_CTX)
    directory.mkdir()
    save_file(hub, directory / "model.safetensors")
    shutil.copy(source / "config.json", directory / "config.json")
    return directory


def rewrite(directory: Path, change) -> Path:
    """The checkpoint with `change(tensors)` applied, saved in place."""
    file = directory / "model.safetensors"
    tensors = load_file(file)
    change(tensors)
    save_file(tensors, file)
    return directory


def logits(path: Path) -> torch.Tensor:
    return load_model(path).start(IDS).logits


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return save_pretrained(tmp_path_factory.mktemp("good"))


@pytest.fixture
def scratch(good, tmp_path) -> Path:
    """A fresh copy of the good checkpoint for a test to damage."""
    return Path(shutil.copytree(good, tmp_path / "ckpt"))


# --- files that load --------------------------------------------------------------------


def test_both_tensor_layouts_give_identical_logits(good, tmp_path):
    hub = hub_layout(good, tmp_path / "hub")
    torch.testing.assert_close(logits(hub), logits(good), atol=0, rtol=0)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float16, 0.02), (torch.bfloat16, 0.1)])
def test_half_precision_files_load_as_float32(good, scratch, dtype, tolerance):
    rewrite(scratch, lambda t: t.update({k: v.to(dtype) for k, v in t.items()}))
    model = load_model(scratch)
    assert model.params.wte.dtype == torch.float32
    torch.testing.assert_close(
        model.start(IDS).logits, logits(good), atol=tolerance, rtol=tolerance
    )


def test_config_less_file_infers_the_config_from_shapes(tmp_path):
    write_checkpoint(tmp_path, n_layer=3, n_head=2, n_embd=128, n_positions=32, vocab_size=99)
    expected = logits(tmp_path)
    (tmp_path / "config.json").unlink()
    model = load_model(tmp_path / "model.safetensors")
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.n_ctx, c.vocab_size) == (3, 2, 128, 32, 99)
    torch.testing.assert_close(model.start(IDS).logits, expected, atol=0, rtol=0)


def test_tensors_are_read_as_stored_with_the_conv1d_weights_held_transposed(good):
    stored = {canonical_name(k): v for k, v in load_file(good / "model.safetensors").items()}
    model = load_model(good)
    # A decode step streams every weight row by row, one output per row: wte as stored, the
    # Conv1D weights ([in, out] in the file) as [out, in].
    assert model.params.wte.is_contiguous()
    torch.testing.assert_close(model.params.wte, stored["wte.weight"], atol=0, rtol=0)
    block = model.params.blocks[1]
    assert block.c_fc.weight.is_contiguous()
    torch.testing.assert_close(block.c_fc.weight.T, stored["h.1.mlp.c_fc.weight"], atol=0, rtol=0)


def test_a_file_cut_short_after_its_header_was_read_fails_in_one_line(scratch):
    ckpt = load_checkpoint(scratch)
    file = scratch / "model.safetensors"
    os.truncate(file, file.stat().st_size // 2)
    with pytest.raises(WeightsError, match=r"model.safetensors: tensor .* ends early"):
        for name in ckpt.tensors:
            ckpt.read(name)


# --- files that do not ------------------------------------------------------------------


def patch_header(directory: Path, change) -> Path:
    """Rewrite the JSON header of model.safetensors, keeping the data bytes as they are."""
    file = directory / "model.safetensors"
    data = file.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    change(header)
    raw = json.dumps(header).encode()
    file.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length :])
    return directory


def first_tensor(header: dict) -> dict:
    return header[next(k for k in header if k != "__metadata__")]


def missing_path(d: Path) -> Path:
    shutil.rmtree(d)
    return d


def no_weights_file(d: Path) -> Path:
    (d / "model.safetensors").unlink()
    return d


def text_file(d: Path) -> Path:
    (d / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256")
    return d


def pickle_bin(d: Path) -> Path:
    torch.save({"wte.weight": torch.zeros(2, 2)}, d / "pytorch_model.bin")
    return d / "pytorch_model.bin"


def empty_file(d: Path) -> Path:
    (d / "model.safetensors").write_bytes(b"")
    return d


def truncated_data(d: Path) -> Path:
    file = d / "model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    return d


def truncated_header(d: Path) -> Path:
    file = d / "model.safetensors"
    file.write_bytes(file.read_bytes()[:40])
    return d


def header_lies_about_shape(d: Path) -> Path:
    return patch_header(d, lambda h: first_tensor(h).update(shape=[4096, 4096]))


def header_lies_about_offsets(d: Path) -> Path:
    def stretch(header: dict) -> None:
        span = first_tensor(header)["data_offsets"]
        span[1] += 4

    return patch_header(d, stretch)


def header_not_json(d: Path) -> Path:
    file = d / "model.safetensors"
    file.write_bytes(struct.pack("<Q", 12) + b"{not json!!}" + b"\0" * 64)
    return d


def config_not_json(d: Path) -> Path:
    (d / "config.json").write_text('{"n_layer": 2,')
    return d


def config_not_an_object(d: Path) -> Path:
    (d / "config.json").write_text("[2, 2, 32]")
    return d


def config_bad_value(d: Path) -> Path:
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "n_head": "twelve"}))
    return d


def llama_tensors() -> dict[str, torch.Tensor]:
    return {
        "model.embed_tokens.weight": torch.zeros(VOCAB, N_EMBD),
        "model.layers.0.self_attn.q_proj.weight": torch.zeros(N_EMBD, N_EMBD),
        "model.norm.weight": torch.ones(N_EMBD),
    }


def llama_with_config(d: Path) -> Path:
    save_file(llama_tensors(), d / "model.safetensors")
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": N_EMBD}))
    return d


def llama_without_config(d: Path) -> Path:
    save_file(llama_tensors(), d / "model.safetensors")
    (d / "config.json").unlink()
    return d


def layer_missing(d: Path) -> Path:
    return rewrite(d, lambda t: [t.pop(k) for k in list(t) if k.startswith("transformer.h.1.")])


def wrong_shape(d: Path) -> Path:
    return rewrite(d, lambda t: t.update({"transformer.ln_f.bias": torch.zeros(N_EMBD + 1)}))


def nan_weights(d: Path) -> Path:
    return rewrite(d, lambda t: t["transformer.h.0.mlp.c_fc.weight"].__setitem__((0, 0), torch.nan))


def inf_weights(d: Path) -> Path:
    return rewrite(d, lambda t: t["transformer.wpe.weight"].__setitem__((1, 2), torch.inf))


BAD_FILES = {
    missing_path: ["no such file or directory"],
    no_weights_file: ["holds no model.safetensors", "config.json"],
    text_file: ["a text file, not safetensors"],
    pickle_bin: ["PyTorch pickle", "only safetensors"],
    empty_file: ["not a safetensors file", "0 bytes"],
    truncated_data: ["truncated", "interrupted download"],
    truncated_header: ["truncated", "the file has 40"],
    header_lies_about_shape: ["corrupt safetensors header", "[4096, 4096]", "offsets span"],
    header_lies_about_offsets: ["corrupt safetensors header", "offsets span"],
    header_not_json: ["corrupt safetensors header", "not valid JSON"],
    config_not_json: ["config.json: not valid JSON"],
    config_not_an_object: ["config.json: not a JSON object"],
    config_bad_value: ["n_head 'twelve'", "not a positive integer"],
    llama_with_config: ["model_type 'llama'", "only GPT-2"],
    llama_without_config: ["not a GPT-2 checkpoint", "wte.weight", "model.embed_tokens.weight"],
    layer_missing: ["tensors missing", "h.1.ln_1.weight", "and 9 more"],
    wrong_shape: ["ln_f.bias has shape [33]", "[32]"],
    nan_weights: ["h.0.mlp.c_fc.weight", "NaN or infinite"],
    inf_weights: ["wpe.weight", "NaN or infinite"],
}


@pytest.mark.parametrize("damage", BAD_FILES, ids=lambda f: f.__name__)
def test_bad_files_give_one_line_naming_the_file_and_the_problem(scratch, damage):
    path = damage(scratch)
    with pytest.raises(EngineError) as caught:
        load_model(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    for words in BAD_FILES[damage]:
        assert words in message


# --- where a checkpoint comes from ------------------------------------------------------


def cache_snapshot(cache: Path, name: str, source: Path) -> Path:
    """What `hf_hub_download` leaves behind: blobs named by etag, a snapshot directory of
    relative symlinks to them, and refs/main naming the snapshot's commit."""
    repo = cache / f"models--openai-community--{name}"
    snapshot = repo / "snapshots" / REVISION
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in ("config.json", "model.safetensors"):
        data = (source / file).read_bytes()
        (repo / "blobs" / blob_name(data)).write_bytes(data)
        (snapshot / file).symlink_to(Path("../../blobs") / blob_name(data))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


def test_default_is_gpt2_small_from_the_hub_cache(hub_cache, good):
    snapshot = cache_snapshot(hub_cache, "gpt2", good)
    chosen = resolve(None)
    assert (chosen.path, chosen.name, chosen.origin) == (snapshot, "gpt2", "hub cache")
    assert chosen.description == "gpt2 (hub cache)"
    assert is_cached("gpt2") and not is_cached("gpt2-medium")
    # Naming the snapshot's file keeps the symlink, so config.json is still beside it.
    by_file = resolve(str(snapshot / "model.safetensors"))
    assert (by_file.path, by_file.name) == (snapshot / "model.safetensors", REVISION)
    assert load_checkpoint(by_file.path).config["n_head"] == N_HEAD
    torch.testing.assert_close(logits(chosen.path), logits(good), atol=0, rtol=0)


def test_default_without_a_cached_gpt2_is_the_demo(hub_cache, good, monkeypatch):
    monkeypatch.setattr(gpt2scope.weights.hub, "DEMO_DIR", good)
    chosen = resolve(None)
    assert (chosen.path, chosen.name, chosen.origin) == (good, "demo", "demo")
    assert chosen.description == "demo model (bundled)"


def test_default_with_neither_says_how_to_get_a_model(hub_cache):
    with pytest.raises(WeightsError, match="gpt2scope download gpt2"):
        resolve(None)


@pytest.mark.skipif(
    not (gpt2scope.weights.hub.DEMO_DIR / "model.safetensors").exists(),
    reason="demo not trained yet",
)
def test_the_bundled_demo_loads():
    model = load_model(gpt2scope.weights.hub.DEMO_DIR)
    assert model.start(IDS).logits.isfinite().all()


def test_named_sizes_come_from_the_cache_or_say_to_download(hub_cache, good):
    cache_snapshot(hub_cache, "gpt2-medium", good)
    assert resolve("gpt2-medium").origin == "hub cache"
    with pytest.raises(WeightsError) as caught:
        resolve("gpt2-xl")
    assert str(caught.value) == (
        "gpt2-xl is not downloaded: run `gpt2scope download gpt2-xl`, or pass --weights PATH"
    )


def test_an_existing_path_wins_and_is_named_after_itself(hub_cache, good, monkeypatch):
    assert resolve(str(good)) == gpt2scope.weights.Resolved(good, good.name, "path")
    assert resolve(str(good / "model.safetensors")).name == good.name
    monkeypatch.chdir(good.parent)
    assert resolve(good.name).path == good
    assert resolve(str(good)).description == str(good)


def test_anything_else_names_the_choices(hub_cache):
    with pytest.raises(WeightsError) as caught:
        resolve("gpt3")
    assert str(caught.value) == (
        "gpt3: no such file, and not a hub model (OWNER/NAME[@REVISION], or one of "
        "gpt2, gpt2-medium, gpt2-large, gpt2-xl)"
    )


def test_a_half_downloaded_blob_is_never_resolved(hub_cache, good, monkeypatch):
    """An interrupted download leaves at most an `.incomplete` blob and a ref, no snapshot
    file; resolve must not take it for the model."""
    repo = hub_cache / "models--openai-community--gpt2"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "abc123.deadbeef.incomplete").write_bytes(b"\0" * 100)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    (repo / "snapshots" / REVISION).mkdir(parents=True)
    monkeypatch.setattr(gpt2scope.weights.hub, "DEMO_DIR", good)
    assert not is_cached("gpt2")
    assert resolve(None).origin == "demo"


# --- downloading ------------------------------------------------------------------------


def loadable_files(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.name == "model.safetensors" or "incomplete" in p.name]


def test_offline_download_names_the_problem_and_the_way_out(hub_cache, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError) as caught:
        download("gpt2", progress=False)
    assert str(caught.value) == (
        "cannot reach the Hugging Face hub to download gpt2 (HF_HUB_OFFLINE is set); "
        "copy a GPT-2 model.safetensors (and its config.json) to this machine and run "
        "`gpt2scope --weights PATH`"
    )
    assert not is_cached("gpt2")
    assert loadable_files(hub_cache) == []


def test_download_rejects_what_is_no_hub_name(hub_cache):
    with pytest.raises(WeightsError, match="gpt3: not a hub model: give OWNER/NAME"):
        download("gpt3")


def test_download_fills_the_cache_that_resolve_reads(fake_hub, tiny_checkpoint):
    seen = []
    snapshot = download("gpt2", progress=False, on_progress=lambda *a: seen.append(a))
    assert snapshot == fake_hub / "models--openai-community--gpt2" / "snapshots" / REVISION
    assert resolve(None) == gpt2scope.weights.Resolved(snapshot, "gpt2", "hub cache")
    torch.testing.assert_close(logits(snapshot), logits(tiny_checkpoint), atol=0, rtol=0)
    size = (tiny_checkpoint / "model.safetensors").stat().st_size
    assert seen[-1] == ("model.safetensors", size, size)


def test_a_cancelled_download_leaves_nothing_to_load(fake_hub):
    cancel, seen, xet_setting = threading.Event(), [], constants.HF_HUB_DISABLE_XET

    def cancel_midway(file: str, done: int, total: int | None) -> None:
        seen.append((file, done, total))
        if file == "model.safetensors" and total and done > total // 3:
            cancel.set()

    with pytest.raises(DownloadCancelled, match="download of gpt2 cancelled"):
        download("gpt2", progress=False, cancel=cancel, on_progress=cancel_midway)
    file, done, total = seen[-1]
    assert file == "model.safetensors" and done < total  # stopped mid-transfer
    assert not is_cached("gpt2")
    assert loadable_files(fake_hub) == []
    assert xet_setting == constants.HF_HUB_DISABLE_XET


# --- the command line -------------------------------------------------------------------


def test_download_command_offline_prints_one_line_and_fails(hub_cache, monkeypatch, capsys):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["download", "gpt2-medium"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("gpt2scope: cannot reach the Hugging Face hub to download gpt2-medium")
    assert err.count("\n") == 1


@pytest.mark.slow
def test_download_command_without_a_network_says_what_it_fetches_then_one_line(tmp_path):
    """No network and HF_HUB_OFFLINE unset, the case of a user behind no connection: the hub
    retries (its sleeps skipped here, counted into a file) without printing its warnings."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env |= {"HF_HOME": str(tmp_path), "HF_ENDPOINT": f"http://127.0.0.1:{port}"}
    sleeps = tmp_path / "sleeps"
    command = (
        "import sys, time; naps = []; time.sleep = naps.append; "
        "from gpt2scope.tui.cli import main; "
        f"code = main(['download']); open({str(sleeps)!r}, 'w').write(str(len(naps))); "
        "sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", command], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert int(sleeps.read_text()) >= 1
    assert (
        done.stdout
        == f"fetching gpt2 (openai-community/gpt2) into {tmp_path / 'hub'}; ctrl-c stops\n"
    )
    assert done.stderr.startswith("gpt2scope: cannot reach the Hugging Face hub to download gpt2;")
    assert done.stderr.count("\n") == 1
    assert loadable_files(tmp_path) == []


@pytest.mark.slow
def test_download_command_in_a_fresh_process_never_shows_a_traceback(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    command = "import sys; from gpt2scope.tui.cli import main; sys.exit(main(['download']))"
    done = subprocess.run(
        [sys.executable, "-c", command], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("gpt2scope: cannot reach the Hugging Face hub")
    assert "HF_HUB_OFFLINE is set" in done.stderr
    assert loadable_files(tmp_path) == []
