"""Which checkpoint to open (a path, a GPT-2 repository in the Hugging Face cache, or the
bundled demo model) and downloading GPT-2 repositories into that cache.

A hub model is `OWNER/NAME`, optionally `@REVISION` (a branch, tag or commit), or one of
the four OpenAI sizes by their short names, which stand for `openai-community/NAME`.

The cache is huggingface_hub's own (HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE apply, as read
by huggingface_hub when it is imported). A file appears in a cache snapshot only once it is
complete: huggingface_hub downloads into a temporary `.incomplete` blob and links it into the
snapshot after the last byte, so `resolve` never returns a half-downloaded file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import (
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    try_to_load_from_cache,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import tqdm as hub_tqdm

from gpt2scope.weights.checkpoint import (
    CONFIG_FILE,
    PICKLE_FILE,
    PICKLE_WHY,
    WEIGHTS_FILE,
    WeightsError,
)

MODEL_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
HUB_OWNER = "openai-community"
DEMO_DIR = Path(__file__).resolve().parent / "demo"
# config.json first: it is small, and the weights file alone decides `is_cached`.
HUB_FILES = (CONFIG_FILE, WEIGHTS_FILE)
# The hub's repository names: letters, digits and - _ . (huggingface_hub's own rule).
HUB_SPEC = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[^\s@]+))?$")

# (file name, bytes so far, total bytes or None) for a UI that draws its own progress.
ProgressFn = Callable[[str, int, int | None], None]


class DownloadCancelled(WeightsError):
    """The `cancel` event of `download` was set; nothing partial is left in the cache."""


@dataclass(frozen=True)
class Resolved:
    """The checkpoint `resolve` chose: a directory or file for `load_checkpoint`."""

    path: Path
    name: str
    origin: str  # "path", "hub cache" or "demo"

    @property
    def description(self) -> str:
        """One line for the UI header."""
        if self.origin == "demo":
            return "demo model (bundled)"
        if self.origin == "hub cache":
            return f"{self.name} (hub cache)"
        return str(self.path)


@dataclass(frozen=True)
class HubModel:
    """A repository of the hub at a revision (None: its main branch), by the name the user
    gave it."""

    name: str
    repo_id: str
    revision: str | None = None


def hub_model(spec: str) -> HubModel | None:
    """`gpt2`..`gpt2-xl`, `OWNER/NAME` or `OWNER/NAME@REVISION` as a HubModel, else None."""
    if spec in MODEL_NAMES:
        return HubModel(spec, f"{HUB_OWNER}/{spec}")
    match = HUB_SPEC.match(spec)
    if match is None or ".." in match["repo"]:
        return None
    return HubModel(spec, match["repo"], match["revision"])


def as_hub_model(name: str | HubModel) -> HubModel:
    if isinstance(name, HubModel):
        return name
    hub = hub_model(name)
    if hub is None:
        raise WeightsError(
            f"{name}: not a hub model: give OWNER/NAME (or OWNER/NAME@REVISION), "
            f"or one of {', '.join(MODEL_NAMES)}"
        )
    return hub


def resolve(spec: str | None) -> Resolved:
    """A path if it exists, else a hub model from the cache; None means GPT-2 small if
    cached, else the demo model."""
    if spec is None:
        return from_cache("gpt2") if is_cached("gpt2") else demo()
    path = Path(spec).expanduser()
    if path.exists():
        # Absolute but with symlinks kept: a snapshot's model.safetensors links into blobs/,
        # away from the config.json beside it.
        return from_path(Path(os.path.abspath(path)))
    if hub_model(spec) is not None:
        return from_cache(spec)
    raise WeightsError(
        f"{spec}: no such file, and not a hub model (OWNER/NAME[@REVISION], or one of "
        f"{', '.join(MODEL_NAMES)})"
    )


def from_path(path: Path) -> Resolved:
    # A file called model.safetensors is best known by the directory it sits in.
    name = path.parent.name if path.name == WEIGHTS_FILE else path.name
    return Resolved(path=path, name=name, origin="path")


def from_cache(name: str | HubModel) -> Resolved:
    hub = as_hub_model(name)
    file = cached_weights(hub)
    if file is None:
        raise WeightsError(
            f"{hub.name} is not downloaded: run `gpt2scope download {hub.name}`, "
            "or pass --weights PATH"
        )
    return Resolved(path=file.parent, name=hub.name, origin="hub cache")


def demo() -> Resolved:
    if not (DEMO_DIR / WEIGHTS_FILE).is_file():
        raise WeightsError(
            f"{DEMO_DIR}: the bundled demo model is missing and gpt2 is not downloaded: "
            "run `gpt2scope download gpt2`, or pass --weights PATH"
        )
    return Resolved(path=DEMO_DIR, name="demo", origin="demo")


def cached_weights(name: str | HubModel) -> Path | None:
    """model.safetensors of the cached snapshot its revision (refs/main when none) points
    at, if complete."""
    hub = as_hub_model(name)
    found = try_to_load_from_cache(hub.repo_id, WEIGHTS_FILE, revision=hub.revision)
    # The hub returns a sentinel, not a path, for files it has recorded as absent.
    return Path(found) if isinstance(found, str) else None


def is_cached(name: str | HubModel) -> bool:
    return cached_weights(name) is not None


def download(
    name: str | HubModel = "gpt2",
    progress: bool = True,
    cancel: threading.Event | None = None,
    on_progress: ProgressFn | None = None,
) -> Path:
    """Fetch config.json and model.safetensors of a GPT-2 repository into the Hugging Face
    cache and return the snapshot directory. Files already cached are not fetched again.
    config.json comes first, and a repository it says is no GPT-2 is refused before its
    weights are fetched.

    `progress=False` hides the hub's progress bar (for a UI that owns the terminal). The
    hub's logged warnings are always silenced: with no network they are a dozen lines of
    retries, and every failure ends in one WeightsError line anyway. Setting `cancel` from
    another thread stops the transfer at its next chunk with `DownloadCancelled`. Runs one
    download at a time: it switches process-wide hub settings while it runs.
    """
    hub = as_hub_model(name)
    with hub_quiet(), http_only(cancel is not None):
        for filename in HUB_FILES:
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled(f"download of {hub.name} cancelled")
            bar = progress_bar(hub.name, filename, progress, cancel, on_progress)
            path = fetch(hub, filename, bar)
            if filename == CONFIG_FILE:
                check_model_type(hub, path)
    return path.parent


def fetch_notice(name: str | HubModel) -> str | None:
    """What a command says before `download`: without a network the hub retries quietly for
    about half a minute before giving up. None when HF_HUB_OFFLINE is set: it fails at once."""
    if constants.is_offline_mode():
        return None
    hub = as_hub_model(name)
    at = f"@{hub.revision}" if hub.revision else ""
    return f"fetching {hub.name} ({hub.repo_id}{at}) into {constants.HF_HUB_CACHE}; ctrl-c stops"


def fetch(hub: HubModel, filename: str, bar: type[hub_tqdm]) -> Path:
    """One file through hf_hub_download, its failures turned into one-line WeightsErrors."""
    try:
        return Path(hf_hub_download(hub.repo_id, filename, revision=hub.revision, tqdm_class=bar))
    except WeightsError:
        raise  # DownloadCancelled, raised by our own progress bar
    except LocalEntryNotFoundError as e:
        raise WeightsError(unreachable(hub.name)) from e
    except RemoteEntryNotFoundError as e:
        raise WeightsError(missing_file(hub, filename)) from e
    except RevisionNotFoundError as e:
        raise WeightsError(f"{hub.repo_id} has no revision {hub.revision} on the hub") from e
    except RepositoryNotFoundError as e:
        raise WeightsError(
            f"{hub.repo_id}: no such model repository on the Hugging Face hub (or a private "
            "or gated one: log in with `hf auth login`)"
        ) from e
    except HfHubHTTPError as e:
        reason = str(e).splitlines()[0]
        raise WeightsError(f"the Hugging Face hub refused {hub.repo_id}: {reason}") from e
    except OSError as e:
        raise WeightsError(
            f"{constants.HF_HUB_CACHE}: cannot save {filename} of {hub.name} ({e.strerror or e})"
        ) from e
    except Exception as e:  # the hub's HTTP client gave up mid-transfer after its retries
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(f"downloading {filename} of {hub.name} failed: {reason}") from e


def missing_file(hub: HubModel, filename: str) -> str:
    """Why a repository without `filename` cannot be used, in one line."""
    if filename == CONFIG_FILE:
        return f"{hub.repo_id} has no {CONFIG_FILE}, so it is no transformers GPT-2 repository"
    if has_file(hub, PICKLE_FILE):
        return (
            f"{hub.repo_id} has only {PICKLE_FILE}, a pickle; {PICKLE_WHY} "
            "(https://huggingface.co/spaces/safetensors/convert opens a pull request on the "
            f"repository; then use --weights {hub.repo_id}@refs/pr/N)"
        )
    return f"{hub.repo_id} has no {WEIGHTS_FILE}; gpt2scope reads one safetensors file"


def has_file(hub: HubModel, filename: str) -> bool:
    url = hf_hub_url(hub.repo_id, filename, revision=hub.revision)
    try:
        get_hf_file_metadata(url)
    except Exception:  # absent, or the question cannot be answered now: say nothing of it
        return False
    return True


def check_model_type(hub: HubModel, config_file: Path) -> None:
    """Refuse a repository whose config.json names another architecture, before its
    weights, which may be gigabytes, are fetched."""
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{hub.repo_id}: its {CONFIG_FILE} is not valid JSON ({e})") from e
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "gpt2":
        raise WeightsError(
            f"{hub.repo_id} is not GPT-2: its {CONFIG_FILE} says model_type {model_type!r} "
            "(gpt2scope runs only GPT-2 models)"
        )


def unreachable(name: str) -> str:
    why = " (HF_HUB_OFFLINE is set)" if constants.is_offline_mode() else ""
    return (
        f"cannot reach the Hugging Face hub to download {name}{why}; copy a GPT-2 "
        f"{WEIGHTS_FILE} (and its {CONFIG_FILE}) to this machine and run "
        "`gpt2scope --weights PATH`"
    )


def progress_bar(
    name: str,
    filename: str,
    show: bool,
    cancel: threading.Event | None,
    on_progress: ProgressFn | None,
) -> type[hub_tqdm]:
    """A tqdm class for hf_hub_download: its `update` runs once per chunk received, in the
    downloading thread, which makes it the place to report bytes and to stop."""

    class Bar(hub_tqdm):
        def __init__(self, *args, **kwargs) -> None:
            if not show:
                kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done = kwargs.get("initial") or 0  # a disabled tqdm does not count

        def update(self, n: float | None = 1) -> bool | None:
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled(f"download of {name} cancelled")
            self.done += n or 0
            if on_progress is not None:
                on_progress(filename, int(self.done), self.total)
            return super().update(n)

    return Bar


@contextmanager
def http_only(enabled: bool) -> Iterator[None]:
    """Use plain HTTP instead of Xet storage while `enabled`. hf_xet transfers in its own
    threads and ignores exceptions from progress callbacks (huggingface_hub issue #4632), so
    only the HTTP transfer can be cancelled; huggingface_hub reads HF_HUB_DISABLE_XET once at
    import, hence the constant rather than the environment variable."""
    saved = constants.HF_HUB_DISABLE_XET
    constants.HF_HUB_DISABLE_XET = saved or enabled
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = saved


@contextmanager
def hub_quiet() -> Iterator[None]:
    """Silence huggingface_hub's logged warnings (such as its retries) for the duration."""
    logger = logging.getLogger("huggingface_hub")
    saved = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(saved)
