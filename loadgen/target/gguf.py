"""What a llama.cpp server's model file says about how the server schedules it: read from the GGUF file's
metadata (the format: ggml-org/ggml docs/gguf.md), not assumed.

llama.cpp's server prefills a prompt's last 4 tokens in a step of their own, and ends a step one ubatch before
them, to take context checkpoints, for a model with sliding-window attention (unless it runs with --swa-full), a
recurrent one or a hybrid one (tools/server/server-context.cpp, `do_checkpoint`; the model's `n_swa` is its
`<arch>.attention.sliding_window`). Measured from the packaged engine's debug log (xllamacpp 2026.10, Gemma 3): a
160-token prompt prefilled as 156 then 4 tokens ("created context checkpoint ... n_tokens = 156"), 600 as 84, 512
and 4, 1,100 as 584, 512 and 4.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

CHECKPOINT_TAIL = 4  # llama.cpp's server: the prompt tokens prefilled apart, for the checkpoint
UBATCH = 512  # llama.cpp's default --ubatch-size: its other checkpoint is this many tokens before the tail

# GGUF value types: their fixed sizes in bytes (8 is a string, 9 an array).
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_INTS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 10: "<Q", 11: "<q"}


class NotGGUF(Exception):
    """The file is not a GGUF model, or its metadata ends early."""


def metadata(path: Path) -> dict[str, object]:
    """The file's scalar metadata (strings and integers; arrays and floats are skipped)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        try:
            if m[:4] != b"GGUF":
                raise NotGGUF(f"{path} is not a GGUF file")
            (count,) = struct.unpack_from("<Q", m, 16)  # after the magic, the version and the tensor count
            at, out = 24, {}
            for _ in range(count):
                key, at = _string(m, at)
                (kind,) = struct.unpack_from("<I", m, at)
                at += 4
                if kind == 8:
                    out[key], at = _string(m, at)
                elif kind in _INTS:
                    out[key] = struct.unpack_from(_INTS[kind], m, at)[0]
                    at += _SIZES[kind]
                else:
                    at = _skip(m, at, kind)
            return out
        except (struct.error, KeyError, UnicodeDecodeError) as e:
            raise NotGGUF(f"{path}: its GGUF metadata could not be read ({e})") from None


def _string(m: mmap.mmap, at: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", m, at)
    return m[at + 8 : at + 8 + n].decode(), at + 8 + n


def _skip(m: mmap.mmap, at: int, kind: int) -> int:
    if kind in _SIZES:
        return at + _SIZES[kind]
    if kind == 8:
        return at + 8 + struct.unpack_from("<Q", m, at)[0]
    if kind != 9:
        raise KeyError(f"value type {kind}")
    item, n = struct.unpack_from("<IQ", m, at)
    at += 12
    if item in _SIZES:
        return at + n * _SIZES[item]
    for _ in range(n):  # strings (a tokenizer's vocabulary) or nested arrays
        at = _skip(m, at, item)
    return at


def prompt_tail(path: Path) -> tuple[int, str]:
    """(the prompt tokens llama.cpp's server prefills in a step of their own, why) for this model file."""
    meta = metadata(path)
    arch = meta.get("general.architecture")
    swa = meta.get(f"{arch}.attention.sliding_window")
    if isinstance(swa, int) and swa > 0:
        return CHECKPOINT_TAIL, f"sliding-window attention ({arch}.attention.sliding_window {swa} in the GGUF file)"
    if any(k.startswith((f"{arch}.ssm.", f"{arch}.wkv.")) for k in meta):
        return CHECKPOINT_TAIL, f"a recurrent or hybrid model ({arch}.ssm or .wkv keys in the GGUF file)"
    return 0, f"no sliding-window attention nor recurrence in the GGUF file ({arch})"
