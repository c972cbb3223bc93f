from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpt2scope.engine import EngineError, gpt2_tokenizer
from gpt2scope.engine.tokenizer import load_tokenizer

tok = gpt2_tokenizer()


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("Hello world", [15496, 995]),
        (" the", [262]),
        (
            "The trophy doesn't fit in the suitcase because it is too big.",
            [464, 16383, 1595, 470, 4197, 287, 262, 45391, 780, 340, 318, 1165, 1263, 13],
        ),
    ],
)
def test_known_ids_from_the_shared_readme(text, ids):
    assert tok.encode(text) == ids
    assert tok.decode(ids) == text


def test_vocabulary_size_counts_end_of_text():
    assert tok.n_vocab == 50257
    assert tok.decode([50256]) == "<|endoftext|>"


def test_typed_end_of_text_is_plain_text():
    ids = tok.encode("a<|endoftext|>b")
    assert 50256 not in ids
    assert len(ids) > 3
    assert tok.decode(ids) == "a<|endoftext|>b"


def test_token_bytes_of_a_partial_utf8_piece():
    ids = tok.encode("😀")
    pieces = [tok.token_bytes(i) for i in ids]
    assert b"".join(pieces) == "😀".encode()
    assert len(ids) > 1


@given(st.text())
def test_any_unicode_round_trips(text):
    assert tok.decode(tok.encode(text)) == text


def test_a_wrong_vocabulary_file_is_refused(tmp_path):
    bad = tmp_path / "gpt2.tiktoken"
    bad.write_text("SGVsbG8= 0\n")
    with pytest.raises(EngineError, match="not GPT-2's vocabulary"):
        load_tokenizer(bad)
    with pytest.raises(EngineError, match="missing"):
        load_tokenizer(tmp_path / "absent.tiktoken")
