"""Open a Hugging Face GPT-2 safetensors checkpoint as tensors under canonical names.

Every way a file can be unusable ends in one `WeightsError` line that names the file and
says what is wrong with it, never in a traceback from safetensors or json.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

PREFIX = "transformer."
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# safetensors refuses headers above 100 MB; a larger length means the file is something else.
MAX_HEADER = 100_000_000
# Bytes per element of the safetensors dtypes a GPT-2 file can hold; others are left to
# safetensors' own checks.
DTYPE_BYTES = dict(F64=8, F32=4, F16=2, BF16=2, I64=8, I32=4, I16=2, I8=1, U8=1)
PICKLE_HINT = "a PyTorch pickle checkpoint, not safetensors (gpt2scope reads only safetensors)"
PICKLE_FILE = "pytorch_model.bin"
PICKLE_WHY = (
    "gpt2scope does not load pickles because unpickling a file can run any code it holds; "
    f"convert it to {WEIGHTS_FILE} with safetensors' converter"
)


class WeightsError(Exception):
    """A checkpoint that cannot be used, with a one-line message naming the file."""


@dataclass(frozen=True)
class Checkpoint:
    """`tensors` are views of the file's memory map: their shapes and dtypes cost nothing
    to look at, and `read` makes the private copies a model keeps."""

    path: Path
    tensors: dict[str, torch.Tensor]
    offsets: dict[str, int]  # where each tensor's data starts in the file
    config: dict = field(default_factory=dict)

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        """Tensor `name` in memory of its own, read with plain file reads, into `out` if
        given (a buffer of the right shape and dtype to reuse).

        Copying out of the memory map instead leaves every page of the file resident in the
        process until the map closes: twice the model's size at the end of a load. The copy
        also means a file rewritten or deleted later cannot change a loaded model.
        """
        tensor = self.tensors[name]
        if out is None:
            out = torch.empty(tensor.shape, dtype=tensor.dtype)
        buffer = out.view(-1).view(torch.uint8).numpy()
        try:
            with self.path.open("rb") as f:
                f.seek(self.offsets[name])
                n_read = f.readinto(buffer)
        except OSError as e:
            raise WeightsError(f"{self.path}: cannot read tensor {name} ({e.strerror or e})") from e
        if n_read != len(buffer):
            raise WeightsError(f"{self.path}: tensor {name} ends early; the file changed on disk")
        return out


def canonical_name(name: str) -> str | None:
    """`transformer.h.0.attn.c_attn.weight` and `h.0.attn.c_attn.weight` both become the latter."""
    name = name.removeprefix(PREFIX)
    if name.endswith(MASK_BUFFERS) or name == "lm_head.weight":
        return None
    return name


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Tensors (memory-mapped by safetensors) and config.json of a file or a directory."""
    file = weights_file(Path(path))
    offsets = check_header(file)
    tensors = read_tensors(file)
    return Checkpoint(
        path=file,
        tensors=tensors,
        offsets={key: offsets[name] for name in offsets if (key := canonical_name(name))},
        config=read_config(file),
    )


def weights_file(path: Path) -> Path:
    if not path.exists():
        raise WeightsError(f"{path}: no such file or directory")
    if not path.is_dir():
        return path
    file = path / WEIGHTS_FILE
    if not file.is_file() and (path / PICKLE_FILE).is_file():
        raise WeightsError(
            f"{path}: directory holds only {PICKLE_FILE}, a pickle; {PICKLE_WHY} "
            "(https://huggingface.co/spaces/safetensors/convert, or its convert.py)"
        )
    if not file.is_file():
        found = ", ".join(sorted(p.name for p in path.iterdir())[:5]) or "nothing"
        raise WeightsError(f"{path}: directory holds no {WEIGHTS_FILE} (found: {found})")
    return file


def check_header(file: Path) -> dict[str, int]:
    """Read the header ourselves first: safetensors' own errors do not say what the file is.
    Returns where each tensor's data starts in the file."""
    try:
        size = file.stat().st_size
        with file.open("rb") as f:
            head = f.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            if not 2 <= length <= MAX_HEADER:
                raise WeightsError(f"{file}: {foreign_kind(head, size)}")
            if length > size - 8:
                raise WeightsError(f"{file}: {truncated(8 + length, size)}")
            header_bytes = f.read(length)
    except OSError as e:
        raise WeightsError(f"{file}: cannot read it ({e.strerror or e})") from e
    header = parse_header(file, header_bytes)
    data_size = check_entries(file, header)
    if 8 + length + data_size > size:
        raise WeightsError(f"{file}: {truncated(8 + length + data_size, size)}")
    return {
        name: 8 + length + entry["data_offsets"][0]
        for name, entry in header.items()
        if name != "__metadata__"
    }


def truncated(needed: int, size: int) -> str:
    return (
        f"truncated, the header promises {needed} bytes but the file has {size} "
        "(an interrupted download or copy?)"
    )


def foreign_kind(head: bytes, size: int) -> str:
    """What a file that is not safetensors most likely is, judged by its first bytes."""
    if size < 8:
        return f"not a safetensors file (only {size} bytes)"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return PICKLE_HINT
    if head.startswith(b"GGUF"):
        return "a GGUF file, not safetensors (gpt2scope reads only safetensors)"
    if all(32 <= b < 127 or b in b"\t\n\r" for b in head):
        return "a text file, not safetensors"
    return "not a safetensors file (its first 8 bytes are no valid header length)"


def parse_header(file: Path, header_bytes: bytes) -> dict:
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{file}: corrupt safetensors header, not valid JSON") from e
    if not isinstance(header, dict):
        raise WeightsError(f"{file}: corrupt safetensors header, not a JSON object")
    return header


def check_entries(file: Path, header: dict) -> int:
    """Each tensor's byte range against its shape and dtype; returns the data size promised."""
    data_size = 0
    for name, entry in header.items():
        if name == "__metadata__":  # free-form strings, not a tensor
            continue
        shape, span = entry_fields(file, name, entry)
        start, end = span
        itemsize = DTYPE_BYTES.get(entry.get("dtype"))
        if itemsize is not None and end - start != math.prod(shape) * itemsize:
            raise WeightsError(
                f"{file}: corrupt safetensors header, tensor {name} is {shape} {entry['dtype']} "
                f"({math.prod(shape) * itemsize} bytes) but its offsets span {end - start} bytes"
            )
        data_size = max(data_size, end)
    return data_size


def entry_fields(file: Path, name: str, entry: object) -> tuple[list[int], list[int]]:
    def ints(value: object, count: int | None = None) -> bool:
        return (
            isinstance(value, list)
            and all(type(x) is int and x >= 0 for x in value)
            and count in (None, len(value))
        )

    shape = entry.get("shape") if isinstance(entry, dict) else None
    span = entry.get("data_offsets") if isinstance(entry, dict) else None
    if not (ints(shape) and ints(span, 2) and span[0] <= span[1]):
        raise WeightsError(f"{file}: corrupt safetensors header, bad entry for tensor {name}")
    return shape, span


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    try:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                key = canonical_name(name)
                if key is not None:
                    tensors[key] = f.get_tensor(name)
    except SafetensorError as e:
        reason = str(e).removeprefix("Error while deserializing header: ")
        raise WeightsError(f"{file}: corrupt safetensors header ({reason})") from e
    except (OSError, RuntimeError, TypeError) as e:
        raise WeightsError(f"{file}: cannot read its tensors ({e})") from e
    return tensors


def read_config(file: Path) -> dict:
    """config.json next to the weights; without it the engine infers the config from shapes."""
    config_file = file.parent / CONFIG_FILE
    if not config_file.exists():
        return {}
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except OSError as e:
        raise WeightsError(f"{config_file}: cannot read it ({e.strerror or e})") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{config_file}: not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise WeightsError(f"{config_file}: not a JSON object of settings")
    return config
