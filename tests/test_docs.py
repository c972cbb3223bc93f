"""The generated docs are current, and the README keeps to what it promises."""

from __future__ import annotations

from pathlib import Path

from gpt2scope.tui.keys import KEYS, SCREEN_KEYS, keys_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_keys_doc_is_current():
    written = (ROOT / "docs" / "keys.md").read_text(encoding="utf-8")
    assert written == keys_markdown(), (
        "docs/keys.md differs from the key table: run `python -m tools.write_docs`"
    )


def test_keys_doc_lists_every_key_with_its_help():
    doc = keys_markdown()
    for key in (*KEYS, *(k for own in SCREEN_KEYS.values() for k in own)):
        assert f"| `{key.shown}` | {key.help.replace('|', chr(92) + '|')} |" in doc


def test_readme_is_at_most_200_lines():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200
