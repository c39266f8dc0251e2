"""A tiny Gemma-3 for the real-engine tests: the packaged Gemma-3-270M's GGUF file with its tokenizer, chat template,
sliding window and every other setting kept, and its layers shrunk (2 blocks of width 64, random weights).

llama.cpp serves it as it serves the real one (same tokens, same template, same context checkpoints, same prompt
cache), for a tenth of the CPU a token: the tests check what loadgen reads from the server, not what the model says.
Test suites of serving engines do the same (vLLM's and Hugging Face's tiny random models).
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import numpy as np

from loadgen.target.gguf import _skip, _string

ALIGN = 32
F32, F16 = 0, 1
# The packaged model's sizes and the tiny one's: every tensor dimension and setting of one size becomes the other.
ARCH = "gemma3"
SHRUNK = {
    640: 64,  # the width (embedding_length)
    2048: 128,  # the feed-forward width
    1024: 64,  # the query width: 4 heads of 256 -> 2 of 32
    256: 32,  # a head's width, and the key/value width (1 head)
}
SETTINGS = {
    f"{ARCH}.block_count": 2,
    f"{ARCH}.embedding_length": 64,
    f"{ARCH}.feed_forward_length": 128,
    f"{ARCH}.attention.head_count": 2,
    f"{ARCH}.attention.head_count_kv": 1,
    f"{ARCH}.attention.key_length": 32,
    f"{ARCH}.attention.value_length": 32,
}
_UINT32 = 4


def _bytes_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def write_tiny(src: Path, dst: Path, seed: int = 0) -> Path:
    """Writes the tiny model from `src` (the packaged Gemma-3-270M) to `dst`, under a name of this process's own
    first, so that workers starting together never read a half-written file."""
    with open(src, "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    (n_tensors, n_kv) = struct.unpack_from("<QQ", data, 8)
    at, kvs = 24, []
    for _ in range(n_kv):
        start = at
        key, at = _string(data, at)
        (kind,) = struct.unpack_from("<I", data, at)
        end = _skip(data, at + 4, kind)
        if key in SETTINGS:
            if kind != _UINT32:
                raise ValueError(f"{src}: {key} is of GGUF type {kind}, not uint32")
            kvs.append(_bytes_string(key) + struct.pack("<II", kind, SETTINGS[key]))
        else:
            kvs.append(data[start:end])
        at = end
    tensors = []
    for _ in range(n_tensors):
        name, at = _string(data, at)
        (n_dims,) = struct.unpack_from("<I", data, at)
        dims = struct.unpack_from(f"<{n_dims}Q", data, at + 4)
        at += 4 + 8 * n_dims + 4 + 8  # dims, the type and the offset
        block = name.split(".")[1] if name.startswith("blk.") else None
        if block is not None and int(block) >= SETTINGS[f"{ARCH}.block_count"]:
            continue
        tensors.append((name, tuple(SHRUNK.get(d, d) for d in dims)))
    rng = np.random.default_rng(seed)
    infos, blobs, offset = [], [], 0
    for name, dims in tensors:
        if name == "token_embd.weight":  # the largest by far: 262,144 words
            kind, array = F16, rng.normal(0, 0.02, dims[::-1]).astype(np.float16)
        elif len(dims) == 1:  # a norm's weights
            kind, array = F32, np.ones(dims, np.float32)  # stored as multipliers (1 + w)
        else:
            kind, array = F32, rng.normal(0, 0.02, dims[::-1]).astype(np.float32)
        blob = array.tobytes()
        infos.append(_bytes_string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, kind, offset))
        blobs.append(blob + b"\0" * (-len(blob) % ALIGN))
        offset += len(blobs[-1])
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(infos)
    part = dst.with_name(f"{dst.name}.{os.getpid()}.part")
    with open(part, "wb") as f:
        f.write(head + b"\0" * (-len(head) % ALIGN))
        for blob in blobs:
            f.write(blob)
    os.replace(part, dst)
    return dst
