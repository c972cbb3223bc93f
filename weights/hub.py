"""Which checkpoint to open (a path, a GPT-2 size in the Hugging Face cache, or the bundled
demo model) and downloading the GPT-2 sizes into that cache.

The cache is huggingface_hub's own (HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE apply, as read
by huggingface_hub when it is imported). A file appears in a cache snapshot only once it is
complete: huggingface_hub downloads into a temporary `.incomplete` blob and links it into the
snapshot after the last byte, so `resolve` never returns a half-downloaded file.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from huggingface_hub.utils import tqdm as hub_tqdm

from gpt2scope.weights.checkpoint import CONFIG_FILE, WEIGHTS_FILE, WeightsError

MODEL_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
HUB_OWNER = "openai-community"
DEMO_DIR = Path(__file__).resolve().parent / "demo"
# config.json first: it is small, and the weights file alone decides `is_cached`.
HUB_FILES = (CONFIG_FILE, WEIGHTS_FILE)

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


def repo_id(name: str) -> str:
    return f"{HUB_OWNER}/{name}"


def resolve(spec: str | None) -> Resolved:
    """A path if it exists, else a GPT-2 size from the cache; None means GPT-2 small if
    cached, else the demo model."""
    if spec is None:
        return from_cache("gpt2") if is_cached("gpt2") else demo()
    path = Path(spec).expanduser()
    if path.exists():
        # Absolute but with symlinks kept: a snapshot's model.safetensors links into blobs/,
        # away from the config.json beside it.
        return from_path(Path(os.path.abspath(path)))
    if spec in MODEL_NAMES:
        return from_cache(spec)
    raise WeightsError(f"{spec}: no such file, and not one of {', '.join(MODEL_NAMES)}")


def from_path(path: Path) -> Resolved:
    # A file called model.safetensors is best known by the directory it sits in.
    name = path.parent.name if path.name == WEIGHTS_FILE else path.name
    return Resolved(path=path, name=name, origin="path")


def from_cache(name: str) -> Resolved:
    file = cached_weights(name)
    if file is None:
        raise WeightsError(
            f"{name} is not downloaded: run `gpt2scope download {name}`, or pass --weights PATH"
        )
    return Resolved(path=file.parent, name=name, origin="hub cache")


def demo() -> Resolved:
    if not (DEMO_DIR / WEIGHTS_FILE).is_file():
        raise WeightsError(
            f"{DEMO_DIR}: the bundled demo model is missing and gpt2 is not downloaded: "
            "run `gpt2scope download gpt2`, or pass --weights PATH"
        )
    return Resolved(path=DEMO_DIR, name="demo", origin="demo")


def cached_weights(name: str) -> Path | None:
    """model.safetensors of the cached snapshot that refs/main points at, if complete."""
    found = try_to_load_from_cache(repo_id(name), WEIGHTS_FILE)
    # The hub returns a sentinel, not a path, for files it has recorded as absent.
    return Path(found) if isinstance(found, str) else None


def is_cached(name: str) -> bool:
    return cached_weights(name) is not None


def download(
    name: str = "gpt2",
    progress: bool = True,
    cancel: threading.Event | None = None,
    on_progress: ProgressFn | None = None,
) -> Path:
    """Fetch config.json and model.safetensors of a GPT-2 size into the Hugging Face cache
    and return the snapshot directory. Files already cached are not fetched again.

    `progress=False` hides the hub's progress bar (for a UI that owns the terminal). The
    hub's logged warnings are always silenced: with no network they are a dozen lines of
    retries, and every failure ends in one WeightsError line anyway. Setting `cancel` from
    another thread stops the transfer at its next chunk with `DownloadCancelled`. Runs one
    download at a time: it switches process-wide hub settings while it runs.
    """
    if name not in MODEL_NAMES:
        raise WeightsError(f"{name}: not one of {', '.join(MODEL_NAMES)}")
    with hub_quiet(), http_only(cancel is not None):
        for filename in HUB_FILES:
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled(f"download of {name} cancelled")
            bar = progress_bar(name, filename, progress, cancel, on_progress)
            path = fetch(name, filename, bar)
    return path.parent


def fetch_notice(name: str) -> str | None:
    """What a command says before `download`: without a network the hub retries quietly for
    about half a minute before giving up. None when HF_HUB_OFFLINE is set: it fails at once."""
    if constants.is_offline_mode():
        return None
    return f"fetching {name} ({repo_id(name)}) into {constants.HF_HUB_CACHE}; ctrl-c stops"


def fetch(name: str, filename: str, bar: type[hub_tqdm]) -> Path:
    """One file through hf_hub_download, its failures turned into one-line WeightsErrors."""
    try:
        return Path(hf_hub_download(repo_id(name), filename, tqdm_class=bar))
    except WeightsError:
        raise  # DownloadCancelled, raised by our own progress bar
    except LocalEntryNotFoundError as e:
        raise WeightsError(unreachable(name)) from e
    except HfHubHTTPError as e:
        reason = str(e).splitlines()[0]
        raise WeightsError(f"the Hugging Face hub refused {repo_id(name)}: {reason}") from e
    except OSError as e:
        raise WeightsError(
            f"{constants.HF_HUB_CACHE}: cannot save {filename} of {name} ({e.strerror or e})"
        ) from e
    except Exception as e:  # the hub's HTTP client gave up mid-transfer after its retries
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(f"downloading {filename} of {name} failed: {reason}") from e


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
