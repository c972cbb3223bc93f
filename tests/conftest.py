"""Shared fixtures: random GPT-2 checkpoints written the way real ones are, a sampler tests
control, a Hugging Face hub of our own."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel

import gpt2scope.weights.hub
from gpt2scope.engine import Model, SampleRecord, SamplingParams, load_model, sample
from gpt2scope.engine.sampling import choose

REVISION = "0123456789abcdef0123456789abcdef01234567"
HOLD_TIMEOUT = 30.0  # a held token goes on by itself after this, so no test hangs forever


def write_checkpoint(
    directory: Path,
    n_layer: int = 2,
    n_head: int = 4,
    n_embd: int = 64,
    n_positions: int = 64,
    vocab_size: int = 50257,
    scale: float = 1.0,
    seed: int = 0,
) -> GPT2LMHeadModel:
    """Save a random GPT2LMHeadModel with save_pretrained and return it as the oracle.

    `scale` multiplies the matrices so activations are of order one, where a mismatch
    in the maths shows up instead of hiding under tiny numbers.
    """
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        n_positions=n_positions,
        vocab_size=vocab_size,
        attn_implementation="eager",
    )
    hf = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() > 1:
                p.mul_(scale)
    hf.save_pretrained(directory)
    return hf


def hub_tensors(directory: Path, n_layer: int, n_ctx: int) -> dict[str, torch.Tensor]:
    """A save_pretrained file's tensors laid out as the hub's openai-community/gpt2 file: no
    `transformer.` prefix, no LM head, and the attention mask buffers saved with the weights."""
    tensors = load_file(directory / "model.safetensors")
    hub = {k.removeprefix("transformer."): v.contiguous() for k, v in tensors.items()}
    hub.pop("lm_head.weight", None)
    for i in range(n_layer):
        hub[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, n_ctx, n_ctx))
        hub[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return hub


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small GPT-2 with the real vocabulary, so prompts tokenize as with GPT-2."""
    directory = tmp_path_factory.mktemp("tiny")
    write_checkpoint(directory, n_layer=2, n_head=4, n_embd=64, n_positions=128, scale=4.0)
    return directory


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path) -> Model:
    return load_model(tiny_checkpoint)


class ControlledSampler:
    """Stands in for `engine.sampling.sample` in a Runner or the app (`sampler=`): the real
    sampler, unless told to choose scripted ids, to take a while per token, to hold one token
    until released or to raise on one call. Calls count from 1, over the sampler's life."""

    def __init__(self) -> None:
        self.calls = 0
        self.delay = 0.0
        self.held: int | None = None
        self.reached = threading.Event()  # the held call has begun
        self.released = threading.Event()
        self._script: Iterator[int] | None = None
        self._fault: tuple[int, Exception] | None = None

    def script(self, token_ids: list[int]) -> ControlledSampler:
        """Choose these ids in turn, each with the record the real sampler would make."""
        self._script = iter(token_ids)
        return self

    def slow(self, seconds: float) -> ControlledSampler:
        self.delay = seconds
        return self

    def hold(self, call: int) -> ControlledSampler:
        """Make call number `call` wait inside the sampler until `release()`."""
        self.held = call
        return self

    def release(self) -> None:
        self.released.set()

    def fail(self, call: int, error: Exception | None = None) -> ControlledSampler:
        """Make call number `call` raise `error` (a RuntimeError, "injected fault")."""
        self._fault = (call, error or RuntimeError("injected fault"))
        return self

    def __call__(
        self, logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
    ) -> SampleRecord:
        self.calls += 1  # only the runner's thread calls it
        time.sleep(self.delay)
        if self._fault is not None and self._fault[0] == self.calls:
            raise self._fault[1]
        if self.calls == self.held:
            self.reached.set()
            self.released.wait(HOLD_TIMEOUT)
        if self._script is not None:
            return choose(logits, params, next(self._script))
        return sample(logits, params, generator)


@pytest.fixture
def sampler() -> Iterator[ControlledSampler]:
    """Pass it as `sampler=` to a Runner or make_app; a held token is let go at the end, so
    a failing test leaves no runner waiting."""
    controlled = ControlledSampler()
    yield controlled
    controlled.release()


# --- a Hugging Face cache and hub of our own ----------------------------------------------


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache. huggingface_hub read HF_HOME at import, so its
    constants are what it will use now; the environment is set for subprocesses."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(gpt2scope.weights.hub, "DEMO_DIR", tmp_path / "no-demo")
    return cache


def blob_name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def commit_of(repo_id: str, revision: str) -> str:
    """The commit a revision of a test repository is at: REVISION for main."""
    if revision == "main":
        return REVISION
    return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()


class FakeHub(BaseHTTPRequestHandler):
    """Answers `<owner>/<name>/resolve/<revision>/<file>` the way the hub does for a plain
    (non-Xet) file: commit and etag headers on HEAD, the bytes on GET, and for what is not
    there a 404 with the hub's error code (RepoNotFound, RevisionNotFound, EntryNotFound).
    `repos` maps a repository id to its revisions (branch or tag names) and their files."""

    repos: dict[str, dict[str, dict[str, bytes]]] = {}

    def do_HEAD(self) -> None:
        data = self.found()
        if data is not None:
            self.end_headers()

    def do_GET(self) -> None:
        data = self.found()
        if data is not None:
            self.end_headers()
            for start in range(0, len(data), 4096):
                self.wfile.write(data[start : start + 4096])

    def found(self) -> bytes | None:
        repo_id, _, rest = self.path.lstrip("/").partition("/resolve/")
        revision, _, name = (unquote(part) for part in rest.partition("/"))
        revisions = self.repos.get(repo_id)
        if revisions is None:
            return self.missing("RepoNotFound")
        # A revision is a branch or tag name, or the commit one of them is at.
        by_commit = {commit_of(repo_id, r): r for r in revisions}
        files = revisions.get(revision, revisions.get(by_commit.get(revision, "")))
        if files is None:
            return self.missing("RevisionNotFound")
        data = files.get(name)
        if data is None:
            return self.missing("EntryNotFound")
        self.send_response(200)
        self.send_header("X-Repo-Commit", commit_of(repo_id, by_commit.get(revision, revision)))
        self.send_header("ETag", f'"{blob_name(data)}"')
        self.send_header("Content-Length", str(len(data)))
        return data

    def missing(self, code: str) -> None:
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def checkpoint_files(directory: Path) -> dict[str, bytes]:
    """config.json and model.safetensors of a checkpoint directory, as a repository holds them."""
    return {f: (directory / f).read_bytes() for f in ("config.json", "model.safetensors")}


def publish(repo_id: str, files: dict[str, bytes], revision: str = "main") -> None:
    """Serve `files` (name -> bytes) as `repo_id` at branch or tag `revision` on the fake hub."""
    FakeHub.repos.setdefault(repo_id, {})[revision] = files


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        # A cancelled download hangs up mid-file, as a user's would: not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def fake_hub(hub_cache, tiny_checkpoint, monkeypatch):
    FakeHub.repos = {}
    publish("openai-community/gpt2", checkpoint_files(tiny_checkpoint))
    server = QuietServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    # Read once at import by huggingface_hub, like HF_ENDPOINT itself.
    monkeypatch.setattr(constants, "ENDPOINT", url)
    template = url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    yield hub_cache
    server.shutdown()
    server.server_close()


@pytest.fixture
def hub_publish(fake_hub) -> Callable[..., None]:
    """`publish` on the running fake hub. (pytest imports this file as `conftest`, so a
    test's `from tests.conftest import FakeHub` would be another class, serving nothing.)"""
    return publish
