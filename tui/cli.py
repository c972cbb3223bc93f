"""Command line: `gpt2scope` (the app), `gpt2scope inspect` (headless), `gpt2scope download`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from gpt2scope.tui.keys import keys_help


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
    bos: bool


def add_run_options(parser: argparse.ArgumentParser, editor: bool = True) -> None:
    """The options the app and inspect share; `editor` for the app's wording of --prompt."""
    parser.add_argument(
        "--weights",
        metavar="PATH|NAME",
        help="a directory or .safetensors file, or gpt2 / gpt2-medium / gpt2-large / gpt2-xl "
        "(default: GPT-2 small if cached, else the bundled demo model)",
    )
    parser.add_argument(
        "--prompt",
        metavar="TEXT",
        help="text to run at once (default: a sample sentence"
        + (", with the prompt editor focused)" if editor else ")"),
    )
    parser.add_argument(
        "--temperature",
        metavar="F",
        type=float,
        default=0.8,
        help="0..5, 0 = argmax (default %(default)s)",
    )
    parser.add_argument(
        "--top-k",
        metavar="N",
        type=int,
        default=5,
        help="keep the N likeliest, 0 = off (default %(default)s)",
    )
    parser.add_argument(
        "--top-p",
        metavar="F",
        type=float,
        default=1.0,
        help="keep the likeliest with mass F, 1 = off (default %(default)s)",
    )
    parser.add_argument(
        "--length",
        metavar="N",
        type=int,
        default=6,
        help="tokens per generation (default %(default)s)",
    )
    parser.add_argument(
        "--seed", metavar="N", type=int, default=0, help="random seed (default %(default)s)"
    )
    parser.add_argument(
        "--layer",
        metavar="N",
        type=int,
        default=0,
        help="layer shown, 0-based as h.N (default %(default)s)",
    )
    parser.add_argument(
        "--head", metavar="N", type=int, default=0, help="head shown, 0-based (default %(default)s)"
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where the model runs (default %(default)s)",
    )
    parser.add_argument(
        "--bos",
        action="store_true",
        help="start the tokens with <|endoftext|>, as GPT-2's training documents did "
        "(TransformerLens's prepend_bos); B toggles it in the app",
    )


def options_from(args: argparse.Namespace) -> Options:
    return Options(**{name: getattr(args, name) for name in Options.__dataclass_fields__})


def app_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2scope",
        description="Watch GPT-2 read and write text, token by token. "
        "Subcommands: `gpt2scope inspect --help`, `gpt2scope download --help`.",
        epilog=keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run_command(argv)
    except KeyboardInterrupt:  # ctrl+c while a model loads or inspect runs
        print("gpt2scope: interrupted", file=sys.stderr)
        return 130


def run_command(argv: list[str]) -> int:
    if argv[:1] == ["inspect"]:
        from gpt2scope.tui.inspect import inspect_main

        return inspect_main(argv[1:])
    if argv[:1] == ["download"]:
        from gpt2scope.tui.download import download_main

        return download_main(argv[1:])
    from gpt2scope.tui.app import app_main

    return app_main(options_from(app_parser().parse_args(argv)))
