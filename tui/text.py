"""Making prompt and token text safe and visible on a terminal.

Everything the model reads or writes is untrusted: a token can hold an escape sequence, a
bidi override that reorders the line around it, or a zero-width character. All such text goes
through `visible` before it reaches the screen or inspect's text output.
"""

from __future__ import annotations

import codecs
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from rich.cells import cell_len, set_cell_size

from gpt2scope.engine import Tokenizer

# Neither is used as a separator or an arrow anywhere on screen (those are · and →).
SPACE = "␣"
NEWLINE = "↵"
TAB = "⇥"
ESCAPE = "␛"
MARK_BASE = "◌"  # what type specimens write a combining mark on when it stands alone
# Categories that draw nothing or move the cursor: controls, format characters (bidi
# overrides, zero-width joiners), line/paragraph separators, surrogates, unassigned.
HIDDEN_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"}
NAMED = {"\n": NEWLINE, "\t": TAB, "\x1b": ESCAPE}


def visible_char(char: str, spaces: bool) -> str:
    if char in NAMED:
        return NAMED[char]
    if char == " ":
        return SPACE if spaces else " "
    code = ord(char)
    if code < 0x20 or code == 0x7F:
        # Unicode's control pictures: one cell each, and never interpreted.
        return chr(0x2400 + code) if code < 0x20 else "␡"
    if unicodedata.category(char) in HIDDEN_CATEGORIES:
        return escaped(code)
    return char


def escaped(code: int) -> str:
    """Python's spelling of a code point: \\xNN, \\uNNNN or \\UNNNNNNNN."""
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def visible(text: str, spaces: bool = False) -> str:
    """`text` with every control, format and invisible character shown as a visible glyph
    or escape; with `spaces`, spaces too (where a token's leading space matters)."""
    return "".join(visible_char(c, spaces) for c in text)


@dataclass(frozen=True)
class Piece:
    """One token as text: `text` is what it decodes to (None when its bytes are not valid
    UTF-8 on their own), `label` what the screen shows."""

    token_id: int
    raw: bytes
    text: str | None

    @cached_property
    def label(self) -> str:
        if self.text is None:  # ASCII bytes read as text, the rest of a character as \xNN
            return "".join(
                visible_char(chr(b), spaces=True) if b < 0x80 else f"\\x{b:02x}" for b in self.raw
            )
        label = visible(self.text, spaces=True)
        if label and cell_len(label[0]) == 0:
            # Alone, a combining mark would fuse with the cell before it and take no room.
            label = MARK_BASE + label
        return label

    @cached_property
    def running_text(self) -> str:
        """The token as it reads in running text: spaces as spaces, other invisible
        characters shown. A token of nothing but spaces would vanish there, and bytes that
        are not UTF-8 have no text: those read as their label."""
        if self.text is None or (self.text and not self.text.strip(" ")):
            return self.label
        return visible(self.text)

    @property
    def is_bytes(self) -> bool:
        return self.text is None

    @property
    def ends_line(self) -> bool:
        return self.text is not None and self.text.endswith("\n")


def running_texts(pieces: Sequence[Piece]) -> list[str | None]:
    """Each token's text in running text. A character whose bytes span tokens (an emoji, a
    CJK character, an accent) reads whole at the token that completes it, the tokens before
    it reading as what they complete, perhaps nothing. None for a token whose bytes complete
    no valid UTF-8 with its neighbours'; it reads as its label."""
    texts: list[str | None] = [piece.running_text for piece in pieces]
    start = 0
    while start < len(pieces):
        end = start
        while end < len(pieces) and pieces[end].is_bytes:
            end += 1
        if end > start:
            texts[start:end] = decoded_run(pieces[start:end])
        start = end + 1
    return texts


def decoded_run(run: Sequence[Piece]) -> list[str | None]:
    """Tokens in a row whose bytes are not UTF-8 alone, decoded together; all None when
    together they are not UTF-8 either."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        texts: list[str | None] = [visible(decoder.decode(piece.raw)) for piece in run]
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return [None] * len(run)
    return texts


def token_json(piece: Piece) -> dict[str, object]:
    """A token for JSON: its id, its text (bytes that are not UTF-8 replaced) and its bytes."""
    text = piece.text if piece.text is not None else piece.raw.decode("utf-8", "replace")
    return {"id": piece.token_id, "text": text, "bytes": piece.raw.hex()}


class Pieces:
    """Token id -> Piece, remembered: a run reuses the same few hundred ids."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._known: dict[int, Piece] = {}

    def __call__(self, token_id: int) -> Piece:
        piece = self._known.get(token_id)
        if piece is None:
            piece = self._known[token_id] = self._make(token_id)
        return piece

    def _make(self, token_id: int) -> Piece:
        raw = self.tokenizer.token_bytes(token_id)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        return Piece(token_id, raw, text)


def clip(text: str, width: int) -> str:
    """At most `width` terminal cells, with an ellipsis when something was cut."""
    if width <= 0:
        return ""
    if cell_len(text) <= width:
        return text
    return set_cell_size(text, width - 1) + "…"


def fit(text: str, width: int) -> str:
    """Exactly `width` cells: clipped with an ellipsis or padded with spaces."""
    return set_cell_size(clip(text, width), width) if width > 0 else ""


EDIT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t"}
UNESCAPES = {"\\": "\\", "n": "\n", "t": "\t"}
HEX_DIGITS = {"x": 2, "u": 4, "U": 8}


def editable(text: str) -> str:
    """A prompt as one line of the editor: newline, tab and backslash as \\n, \\t and \\\\,
    other invisible characters as \\xNN or \\uNNNN, so that none reaches the terminal."""
    out = []
    for char in text:
        if char in EDIT_ESCAPES:
            out.append(EDIT_ESCAPES[char])
        elif visible_char(char, spaces=False) != char:
            out.append(escaped(ord(char)))
        else:
            out.append(char)
    return "".join(out)


def is_code_point(digits: str) -> bool:
    return all(d in "0123456789abcdefABCDEF" for d in digits) and int(digits, 16) <= 0x10FFFF


def from_editable(line: str) -> str:
    """The prompt an editor line stands for: the escapes of `editable` undone; a backslash
    that starts no escape is kept as typed."""
    out, i = [], 0
    while i < len(line):
        char, following = line[i], line[i + 1 : i + 2]
        if char == "\\" and following in UNESCAPES:
            out.append(UNESCAPES[following])
            i += 2
            continue
        if char == "\\" and following in HEX_DIGITS:
            digits = line[i + 2 : i + 2 + HEX_DIGITS[following]]
            if len(digits) == HEX_DIGITS[following] and is_code_point(digits):
                out.append(chr(int(digits, 16)))
                i += 2 + len(digits)
                continue
        out.append(char)
        i += 1
    return "".join(out)
