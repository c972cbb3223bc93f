"""Command line: `gpt2scope` (the app), `gpt2scope inspect` (headless), `gpt2scope download`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

KEYS_HELP = """\
keys:
  [ ]        layer down / up          , .   head down / up
  left right query token              p     edit the prompt (enter runs it)
  g          generate `length` tokens s     one step
  esc        stop                     t T   temperature down / up
  k K        top-k down / up          n N   length down / up
  r          new seed                 z     zoom the focused pane
  tab        cycle focus              ?     help screen
  q          quit                     ctrl+p command palette
"""


@dataclass(frozen=True)
class Options:
    weights: str | None
    prompt: str | None
    temperature: float
    top_k: int
    top_p: float
    length: int
    seed: int
    layer: int
    head: int
    device: str


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        metavar="PATH|NAME",
        help="a directory or .safetensors file, or gpt2 / gpt2-medium / gpt2-large / gpt2-xl "
        "(default: GPT-2 small if cached, else the bundled demo model)",
    )
    parser.add_argument("--prompt", metavar="TEXT", help="text to run at once")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = argmax (default 0.8)")
    parser.add_argument("--top-k", type=int, default=5, help="0 = off (default 5)")
    parser.add_argument("--top-p", type=float, default=1.0, help="1 = off (default 1.0)")
    parser.add_argument("--length", type=int, default=6, help="tokens per generation (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--layer", type=int, default=0, help="layer shown, 0-based (default 0)")
    parser.add_argument("--head", type=int, default=0, help="head shown, 0-based (default 0)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")


def options_from(args: argparse.Namespace) -> Options:
    return Options(**{name: getattr(args, name) for name in Options.__dataclass_fields__})


def app_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2scope",
        description="Watch GPT-2 read and write text, token by token. "
        "Subcommands: `gpt2scope inspect --help`, `gpt2scope download --help`.",
        epilog=KEYS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["inspect"]:
        from tui.inspect import inspect_main

        return inspect_main(argv[1:])
    if argv[:1] == ["download"]:
        from tui.download import download_main

        return download_main(argv[1:])
    from tui.app import app_main

    return app_main(options_from(app_parser().parse_args(argv)))
