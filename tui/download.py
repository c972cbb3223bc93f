"""`gpt2scope download [NAME]`: fetch a GPT-2 size into the Hugging Face cache."""

from __future__ import annotations

import sys

from gpt2scope.tui.text import visible
from gpt2scope.weights import WeightsError, fetch_notice
from gpt2scope.weights import download as download_to_cache


def download(name: str) -> int:
    """Download `name`, saying where it went or, in one line, why not; the exit status."""
    notice = fetch_notice(name)
    if notice is not None:
        print(notice)
    try:
        snapshot = download_to_cache(name)
    except WeightsError as e:
        print(f"gpt2scope: {visible(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gpt2scope: download of {name} interrupted", file=sys.stderr)
        return 130
    print(f"{name}: saved in {snapshot}")
    print(f"run it with: gpt2scope --weights {name}")
    return 0
