"""GPT-2's byte-pair tokenizer, built offline with tiktoken from the bundled rank file."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import tiktoken
import tiktoken.load

from gpt2scope.engine.errors import EngineError
from gpt2scope.weights import TOKENIZER_FILE

RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256


class Tokenizer:
    """encode/decode text; `<|endoftext|>` in user text is ordinary text, never id 50256."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._encoding = encoding
        self.n_vocab: int = encoding.n_vocab
        self.eot_id: int = END_OF_TEXT_ID

    def encode(self, text: str, bos: bool = False) -> list[int]:
        """With `bos`, after an <|endoftext|>, as GPT-2's training documents began."""
        return [self.eot_id] * bos + self._encoding.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self._encoding.decode(list(ids), errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._encoding.decode_single_token_bytes(token_id)


def read_ranks(path: Path) -> dict[bytes, int]:
    try:
        return tiktoken.load.load_tiktoken_bpe(str(path), expected_hash=RANKS_SHA256)
    except ValueError as e:  # a hash mismatch, or a line that is not "token rank"
        raise EngineError(
            f"{path}: not GPT-2's vocabulary (its sha256 should be {RANKS_SHA256[:12]}...); "
            "restore the file from the project"
        ) from e


def load_tokenizer(path: Path = TOKENIZER_FILE) -> Tokenizer:
    if not path.exists():
        raise EngineError(f"{path}: GPT-2 vocabulary file missing")
    encoding = tiktoken.Encoding(
        name="gpt2",
        pat_str=SPLIT_PATTERN,
        mergeable_ranks=read_ranks(path),
        special_tokens={END_OF_TEXT: END_OF_TEXT_ID},
    )
    return Tokenizer(encoding)


@cache
def gpt2_tokenizer() -> Tokenizer:
    return load_tokenizer()
