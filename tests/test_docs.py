"""The generated docs are current, and the README keeps to what it promises."""

from __future__ import annotations

from pathlib import Path

from gpt2scope.tui.keys import KEYS, keys_markdown
from gpt2scope.tui.views import SCREENS

ROOT = Path(__file__).resolve().parent.parent


def test_keys_doc_is_current():
    written = (ROOT / "docs" / "keys.md").read_text(encoding="utf-8")
    assert written == keys_markdown(), (
        "docs/keys.md differs from the key table: run `python -m tools.write_docs`"
    )


def test_keys_doc_lists_every_key_with_its_help():
    doc = keys_markdown()
    for key in (*KEYS, *(k for screen in SCREENS for k in screen.keys)):
        assert f"| `{key.shown}` | {key.help.replace('|', chr(92) + '|')} |" in doc


def test_readme_is_at_most_200_lines():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200
