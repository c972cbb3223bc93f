"""`gpt2scope download [NAME]`, and `--weights NAME` of a hub model not yet in the cache:
fetch a GPT-2 repository into the Hugging Face cache, with the hub's progress bar."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from gpt2scope.engine import EngineError, check_gpt2
from gpt2scope.tui.text import visible
from gpt2scope.weights import WeightsError, fetch_notice, hub_model, is_cached
from gpt2scope.weights import download as download_to_cache


def download(name: str) -> int:
    """Download `name`, saying where it went or, in one line, why not; the exit status."""
    try:
        snapshot = fetch(name)
    except (WeightsError, EngineError) as e:
        print(f"gpt2scope: {visible(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gpt2scope: download of {name} interrupted", file=sys.stderr)
        return 130
    print(f"{name}: saved in {snapshot}")
    print(f"run it with: gpt2scope --weights {name}")
    return 0


def fetch(name: str, notices: TextIO | None = None) -> Path:
    """The snapshot of hub model `name`, downloaded with a notice (to `notices`, else stdout)
    and the hub's progress bar, and checked to be a GPT-2 that gpt2scope can load (its
    tensors' names and shapes; a repository that is not stays in the cache)."""
    notice = fetch_notice(name)
    if notice is not None:
        print(notice, file=notices)
    snapshot = download_to_cache(name)
    check_gpt2(snapshot)
    return snapshot


def fetch_missing(spec: str | None) -> None:
    """Download the hub model `--weights` names when it is neither a path nor in the cache,
    so that it resolves from the cache next (cache first, then the hub). The notice goes to
    stderr, leaving stdout to what inspect prints."""
    if spec is None or Path(spec).expanduser().exists():
        return
    hub = hub_model(spec)
    if hub is not None and not is_cached(hub):
        fetch(spec, sys.stderr)
