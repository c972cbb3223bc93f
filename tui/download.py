"""`gpt2scope download [NAME]`: fetch a GPT-2 size into the Hugging Face cache."""

from __future__ import annotations

import argparse
import sys

from gpt2scope.tui.text import visible
from gpt2scope.weights import MODEL_NAMES, WeightsError, download, fetch_notice


def download_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2scope download",
        description="Download GPT-2 weights (model.safetensors and config.json) from the "
        "Hugging Face hub into its local cache (HF_HOME), where `gpt2scope --weights NAME` "
        "finds them. An interrupted download can simply be run again.",
    )
    parser.add_argument(
        "name",
        nargs="?",
        default="gpt2",
        choices=MODEL_NAMES,
        metavar="NAME",
        help=f"one of {', '.join(MODEL_NAMES)} (default: gpt2)",
    )
    return parser


def download_main(argv: list[str]) -> int:
    name = download_parser().parse_args(argv).name
    notice = fetch_notice(name)
    if notice is not None:
        print(notice)
    try:
        snapshot = download(name)
    except WeightsError as e:
        print(f"gpt2scope: {visible(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gpt2scope: download of {name} interrupted", file=sys.stderr)
        return 130
    print(f"{name}: saved in {snapshot}")
    print(f"run it with: gpt2scope --weights {name}")
    return 0
