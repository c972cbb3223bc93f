"""Faults around loading: files that change under a running model, and too little memory."""

from __future__ import annotations

import pytest
import torch

import gpt2scope.engine.load
from gpt2scope.engine import EngineError, load_model
from tests.conftest import write_checkpoint


def test_a_running_model_survives_its_file_being_rewritten_or_deleted(tmp_path):
    write_checkpoint(tmp_path, n_layer=1, n_head=2, n_embd=32, n_positions=16, vocab_size=64)
    model = load_model(tmp_path)
    before = model.start([1, 2, 3]).logits.clone()
    weights = tmp_path / "model.safetensors"
    with open(weights, "r+b") as f:  # overwrite in place, as a careless copy would
        f.seek(0, 2)
        size = f.tell()
        f.seek(size // 2)
        f.write(b"\xff" * (size - size // 2))
    torch.testing.assert_close(model.start([1, 2, 3]).logits, before, atol=0, rtol=0)
    weights.write_bytes(b"")
    torch.testing.assert_close(model.start([1, 2, 3]).logits, before, atol=0, rtol=0)
    weights.unlink()
    torch.testing.assert_close(model.start([1, 2, 3]).logits, before, atol=0, rtol=0)


def test_a_model_too_big_for_memory_is_refused_with_the_figures(tmp_path, monkeypatch):
    write_checkpoint(tmp_path, n_layer=1, n_head=2, n_embd=32, n_positions=16, vocab_size=64)
    monkeypatch.setattr(gpt2scope.engine.load, "available_memory", lambda: 1000)
    with pytest.raises(EngineError, match=r"out of memory: the weights need .* GiB"):
        load_model(tmp_path)


def test_memory_error_while_converting_is_reported_as_such(tmp_path, monkeypatch):
    write_checkpoint(tmp_path, n_layer=1, n_head=2, n_embd=32, n_positions=16, vocab_size=64)

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(gpt2scope.engine.model, "to_params", exhausted)
    with pytest.raises(EngineError, match="out of memory while loading"):
        load_model(tmp_path)
