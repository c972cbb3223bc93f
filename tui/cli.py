"""Command line: `gpt2scope` (the app), `gpt2scope inspect` (headless), `gpt2scope download`,
`gpt2scope serve` (the app in web browsers).

Every flag is parsed and checked here, and its errors are worded here, in the flags' words;
the app, inspect and download get settings, a loaded model and names."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from dataclasses import astuple, dataclass, fields, replace
from typing import TYPE_CHECKING

import torch

from gpt2scope.engine import DEVICES, Ablation, GPT2Config, Model, SamplingParams, gpt2_tokenizer
from gpt2scope.engine.probe import DEFAULT_N
from gpt2scope.engine.sampling import BadParam
from gpt2scope.tui.heap import return_freed_memory
from gpt2scope.tui.keys import keys_help
from gpt2scope.tui.models import OpenError, open_model
from gpt2scope.tui.report import Why
from gpt2scope.tui.session import ModelInfo, Settings
from gpt2scope.tui.text import visible
from gpt2scope.tui.views.common import count
from gpt2scope.weights import MODEL_NAMES

if TYPE_CHECKING:
    from gpt2scope.tui.lessons import Lesson

# torch.Generator takes seeds below 2**64; staying below 2**63 leaves room for r to count up.
MAX_SEED = 2**63 - 1
DEFAULT_WIDTH = 100
MIN_WIDTH, MAX_WIDTH = 40, 1000  # --width is clamped to these: a view costs width x height
DTYPES = ("float32", "float16", "bfloat16")


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
    dtype: str
    layout: str = "six"  # the app's alone: "class" shows four big panes


def add_run_options(parser: argparse.ArgumentParser, editor: bool = True) -> None:
    """The options the app and inspect share; `editor` for the app's wording of --prompt."""
    parser.add_argument(
        "--weights",
        metavar="PATH|NAME",
        help="a directory or .safetensors file, gpt2 / gpt2-medium / gpt2-large / gpt2-xl, or "
        "any GPT-2 on the Hugging Face hub as OWNER/NAME[@REVISION], from the cache or else "
        "downloaded (default: GPT-2 small if cached, else the bundled demo model)",
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
        choices=DEVICES,
        default="auto",
        help="where the model runs; auto: CUDA if torch sees a GPU, else Apple's MPS, else "
        "the CPU (default %(default)s)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="the precision the weights are held in; float16 and bfloat16 halve the memory, "
        "the products still compute in float32 (default %(default)s)",
    )
    parser.add_argument(
        "--bos",
        action="store_true",
        help="start the tokens with <|endoftext|>, as GPT-2's training documents did "
        "(TransformerLens's prepend_bos); B toggles it in the app",
    )


def options_from(args: argparse.Namespace) -> Options:
    fields = Options.__dataclass_fields__
    return Options(**{name: getattr(args, name) for name in fields if hasattr(args, name)})


def app_argv(options: Options) -> list[str]:
    """The app's command line for `options`: what each session of `gpt2scope serve` runs."""
    argv = []
    for field, value in zip(fields(Options), astuple(options), strict=True):
        flag = "--" + field.name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            argv.append(f"{flag}={value}")  # one word, so a prompt such as "-1" stays a value
    return argv


def app_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2scope",
        description="Watch GPT-2 read and write text, token by token. "
        "Subcommands: `gpt2scope inspect --help`, `gpt2scope download --help`, "
        "`gpt2scope serve --help`.",
        epilog=keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_options(parser)
    parser.add_argument(
        "--lesson",
        metavar="NAME",
        nargs="?",
        const="",
        help="start a lesson (a built-in one by name, e.g. mask, or a .toml file; without "
        "NAME, the list of lessons; L lists them in the app)",
    )
    add_layout_option(parser)
    return parser


def add_layout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--layout",
        choices=["six", "class"],
        default="six",
        help="six panes, or four big ones for a projector: prompt, attention, query, "
        "probabilities (default %(default)s; C switches in the app)",
    )


def inspect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2scope inspect",
        description="Run the prompt and generate `length` tokens with no UI, then print the "
        "six views and the deeper screens as text, or everything as one JSON object. Same "
        "seed, same output.",
    )
    add_run_options(parser, editor=False)
    parser.add_argument(
        "--query",
        metavar="N",
        type=int,
        default=-1,
        help="the query token, 0-based; negative counts from the end (default -1, the last)",
    )
    parser.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="text: the six views and the deeper ones (default); json: one object with "
        "model, tokens, continuation, layer, head, query, pattern, probabilities, qkv, "
        "stages, head_stats, logit_lens, block, history, attribution and saliency (and "
        "patching with --corrupt, induction_probe with --induction-probe)",
    )
    parser.add_argument(
        "--target",
        metavar="TOKEN",
        help="the token whose logit attribution and saliency are reported: one GPT-2 token "
        "as text (' Paris') or #ID (default: the next token, after the last the top "
        "prediction)",
    )
    parser.add_argument(
        "--contrast",
        metavar="TOKEN",
        help="attribute the target's logit minus this token's (as --target)",
    )
    parser.add_argument(
        "--ablate",
        metavar="SPEC",
        action="append",
        default=[],
        help="knock out a head (L3H2) or an MLP (L5mlp); repeatable. Every view and the "
        "continuation are then the knocked-out model's",
    )
    parser.add_argument(
        "--ablation",
        choices=["zero", "mean"],
        default="zero",
        help="zero: a knocked-out head's z is 0; mean: its mean over the positions so far "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--head-effects",
        action="store_true",
        help="knock out each head alone and report the change of the target's logit "
        "(JSON head_effects)",
    )
    parser.add_argument(
        "--corrupt",
        metavar="TEXT",
        help="activation patching: a corrupted prompt of as many tokens as --prompt; adds "
        "the maps of how much of the clean logit difference each patched activation brings "
        "back (JSON patching); the intact model, so not with --ablate",
    )
    parser.add_argument(
        "--answer",
        metavar="TOKEN",
        help="with --corrupt: LD = logit(answer) - logit(--contrast) after the last token "
        "(as --target; default: the clean run's top prediction, the contrast the "
        "corrupted run's)",
    )
    parser.add_argument(
        "--induction-probe",
        metavar="N",
        type=int,
        nargs="?",
        const=DEFAULT_N,
        help="run the induction probe: <|endoftext|> and N random tokens (seeded by --seed) "
        f"twice (JSON induction_probe; N default {DEFAULT_N})",
    )
    parser.add_argument(
        "--value-weighted",
        action="store_true",
        help="the Attention and Query views show value-weighted norms ||a v W_O||, and the "
        "JSON adds value_weighted, the selected head's rows",
    )
    parser.add_argument(
        "--width",
        metavar="N",
        type=int,
        default=DEFAULT_WIDTH,
        help=f"text width, {MIN_WIDTH}..{MAX_WIDTH} (default {DEFAULT_WIDTH})",
    )
    return parser


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
        metavar="NAME",
        help=f"one of {', '.join(MODEL_NAMES)}, or any GPT-2 repository as OWNER/NAME, "
        "optionally @REVISION (a branch, tag or commit) (default: gpt2)",
    )
    return parser


MAX_PORT = 65535


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2scope serve",
        description="Serve the app to web browsers (textual-serve): each browser tab is a "
        "session running its own app process, with the app's options below; ctrl+c stops "
        "the server and every session.",
    )
    add_run_options(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default %(default)s, this machine only; 0.0.0.0: every "
        "network this machine is on)",
    )
    parser.add_argument(
        "--port", metavar="N", type=int, default=8000, help="port (default %(default)s)"
    )
    parser.add_argument(
        "--max-sessions",
        metavar="N",
        type=int,
        default=4,
        help="sessions at once, each with its own copy of the model; more are refused "
        "(default %(default)s)",
    )
    add_layout_option(parser)
    return parser


def settings_from(options: Options) -> Settings:
    """The command line's choices; raises ValueError, in the flags' words, for values out of
    range."""
    try:
        params = SamplingParams(options.temperature, options.top_k, options.top_p)
    except BadParam as e:
        raise ValueError(f"--{e.name.replace('_', '-')} {e.value}: must be {e.rule}") from e
    if not 0 <= options.seed <= MAX_SEED:
        raise ValueError(f"--seed {options.seed}: must be in 0..2**63-1")
    return Settings(
        options.layer, options.head, None, params, options.length, options.seed, options.bos
    )


def check_settings(settings: Settings, config: GPT2Config) -> None:
    """Raise ValueError, in words for the command line, for a choice the model cannot take."""
    L, H = config.n_layer, config.n_head
    if not 0 <= settings.layer < L:
        raise ValueError(f"--layer {settings.layer}: the model has {count(L, 'layer')}, 0..{L - 1}")
    if not 0 <= settings.head < H:
        raise ValueError(f"--head {settings.head}: the model has {count(H, 'head')}, 0..{H - 1}")
    if settings.params.top_k > config.vocab_size:
        raise ValueError(f"--top-k {settings.params.top_k}: the vocabulary has {config.vocab_size}")
    if not 0 <= settings.length <= config.n_ctx:
        raise ValueError(f"--length {settings.length}: must be in 0..{config.n_ctx}")


def token_from(flag: str, text: str | None, config: GPT2Config) -> int | None:
    """A --target or --contrast: exactly one GPT-2 token as text, or #ID."""
    if text is None:
        return None
    if text.startswith("#") and text[1:].isdigit():
        token = int(text[1:])
        if token >= config.vocab_size:
            raise ValueError(f"{flag} {text}: the vocabulary has ids 0..{config.vocab_size - 1}")
        return token
    ids = gpt2_tokenizer().encode(text)
    if len(ids) != 1:
        raise ValueError(
            f"{flag} {text!r}: is {len(ids)} GPT-2 tokens, not one (give one token, "
            "e.g. ' Paris', or #ID)"
        )
    return ids[0]


def why_from(args: argparse.Namespace, config: GPT2Config) -> Why:
    """inspect's --target, --contrast, --ablate, --ablation and --head-effects."""
    try:
        ablation = Ablation.parse(args.ablate, args.ablation, config)
    except ValueError as e:
        raise ValueError(f"--ablate {e}") from e
    corrupt = None
    if args.corrupt is not None:
        if not ablation.empty:
            raise ValueError("--corrupt patches the intact model: leave out --ablate")
        corrupt = gpt2_tokenizer().encode(args.corrupt, args.bos)
    elif args.answer is not None:
        raise ValueError("--answer goes with --corrupt (for attribution, use --target)")
    n = args.induction_probe
    if n is not None and not 2 <= n <= (config.n_ctx - 1) // 2:
        limit = (config.n_ctx - 1) // 2
        raise ValueError(f"--induction-probe {n}: must be in 2..{limit}, twice in the context")
    return Why(
        token_from("--target", args.target, config),
        token_from("--contrast", args.contrast, config),
        ablation,
        args.head_effects,
        corrupt,
        token_from("--answer", args.answer, config),
        n,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run_command(argv)
    except KeyboardInterrupt:  # ctrl+c while a model loads or inspect runs
        print("gpt2scope: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `inspect | head` stopped reading: what it wanted is printed
        # Python flushes stdout once more on exit; into the closed pipe that would fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a process ended by SIGPIPE


def run_command(argv: list[str]) -> int:
    if argv[:1] == ["inspect"]:
        return inspect_main(argv[1:])
    if argv[:1] == ["download"]:
        from gpt2scope.tui.download import download

        return download(download_parser().parse_args(argv[1:]).name)
    if argv[:1] == ["serve"]:
        return serve_main(argv[1:])
    args = app_parser().parse_args(argv)
    return app_main(options_from(args), args.lesson)


def opened(options: Options) -> tuple[Settings, Model, ModelInfo]:
    """The settings and the loaded model; raises ValueError or an OpenError, in one line."""
    from gpt2scope.tui.download import fetch_missing

    settings = settings_from(options)
    fetch_missing(options.weights)
    model, info = open_model(options.weights, options.device, getattr(torch, options.dtype))
    check_settings(settings, model.config)
    return settings, model, info


def app_main(options: Options, lesson_name: str | None = None) -> int:
    """`lesson_name`: --lesson's ("" for the list, None for no lesson)."""
    from gpt2scope.tui.app import ScopeApp

    return_freed_memory()
    try:
        lesson = True if lesson_name == "" else lesson_name and find_lesson(lesson_name)
        settings, model, info = opened(options)
    except (ValueError, *OpenError) as e:
        print(f"gpt2scope: error: {visible(str(e))}", file=sys.stderr)
        return 1
    app = ScopeApp(
        model,
        info,
        settings,
        options.prompt,
        options.device,
        lesson=lesson or False,
        layout=options.layout,
    )
    app.run()
    return app.return_code or 0  # 1 after an unhandled error, whose traceback Textual prints


def find_lesson(name: str) -> Lesson:
    from gpt2scope.tui.lessons import LessonError, find

    try:
        return find(name)
    except LessonError as e:
        raise ValueError(f"--lesson {e}") from e


def inspect_main(argv: list[str]) -> int:
    from gpt2scope.tui.inspect import inspect

    args = inspect_parser().parse_args(argv)
    options = options_from(args)
    return_freed_memory()
    try:
        settings, model, info = opened(options)
        settings = replace(settings, value_weighted=args.value_weighted)
        width = min(max(args.width, MIN_WIDTH), MAX_WIDTH)
        why = why_from(args, model.config)
        return inspect(model, info, settings, options.prompt, args.query, args.format, width, why)
    except (ValueError, *OpenError) as e:
        print(f"gpt2scope inspect: error: {visible(str(e))}", file=sys.stderr)
        return 1


def serve_main(argv: list[str]) -> int:
    args = serve_parser().parse_args(argv)
    options = options_from(args)
    try:
        check_serving(args)
        # Every session would fail the same way: open the model once here, to say so at once.
        settings, model, info = opened(options)
    except (ValueError, *OpenError) as e:
        print(f"gpt2scope serve: error: {visible(str(e))}", file=sys.stderr)
        return 1
    del settings, model
    return_freed_memory()
    from gpt2scope.tui.serve import is_local, serve

    print(f"gpt2scope serve: each session runs {info.description} on {info.device}")
    if not is_local(args.host):
        print(
            f"gpt2scope serve: listening on {args.host}: anyone who can reach port "
            f"{args.port} gets a session"
        )
    try:
        serve(app_argv(options), args.host, args.port, args.max_sessions)
    except OSError as e:
        print(
            f"gpt2scope serve: error: --host {args.host} --port {args.port}: {e.strerror or e}",
            file=sys.stderr,
        )
        return 1
    return 0


def check_serving(args: argparse.Namespace) -> None:
    """Raise ValueError, in the flags' words, for a server that cannot run."""
    if importlib.util.find_spec("textual_serve") is None:
        raise ValueError("serving needs textual-serve: pip install 'gpt2scope[serve]'")
    if not 1 <= args.port <= MAX_PORT:
        raise ValueError(f"--port {args.port}: must be in 1..{MAX_PORT}")
    if args.max_sessions < 1:
        raise ValueError(f"--max-sessions {args.max_sessions}: must be 1 or more")
