"""Downloading the public traces into a local cache (only where the machine has internet)."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

# Where each dataset publishes its file (the dataset's own README); --mirror replaces everything before the name.
PUBLIC: dict[str, str] = {
    "azure-2023-conv": "https://raw.githubusercontent.com/Azure/AzurePublicDataset/master/data/AzureLLMInferenceTrace_conv.csv",
    "azure-2023-code": "https://raw.githubusercontent.com/Azure/AzurePublicDataset/master/data/AzureLLMInferenceTrace_code.csv",
    "azure-2024-conv": "https://azurepublicdatasettraces.blob.core.windows.net/azurellminfererencetrace/AzureLLMInferenceTrace_conv_1week.csv",
    "azure-2024-code": "https://azurepublicdatasettraces.blob.core.windows.net/azurellminfererencetrace/AzureLLMInferenceTrace_code_1week.csv",
    "mooncake-conversation": "https://raw.githubusercontent.com/kvcache-ai/Mooncake/main/FAST25-release/traces/conversation_trace.jsonl",
    "mooncake-toolagent": "https://raw.githubusercontent.com/kvcache-ai/Mooncake/main/FAST25-release/traces/toolagent_trace.jsonl",
    "burstgpt": "https://github.com/HPMLL/BurstGPT/releases/download/v1.1/BurstGPT_1.csv",
}


class FetchError(Exception):
    pass


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "loadgen" / "traces"


def fetch(name: str, dest: Path | None = None, mirror: str | None = None, timeout_s: float = 30.0) -> tuple[Path, bool]:
    """Download `name` into `dest` (default: the cache); returns its path and whether it was downloaded now."""
    if name not in PUBLIC:
        raise KeyError(name)
    url = PUBLIC[name]
    if mirror:
        url = mirror.rstrip("/") + "/" + url.rsplit("/", 1)[1]
    folder = dest or cache_dir()
    target = folder / url.rsplit("/", 1)[1]
    if target.exists():
        return target, False
    folder.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, part.open("wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)
    except (urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise FetchError(f"cannot download {name} from {url}: {reason}") from None
    part.rename(target)  # only a complete file ever has the final name
    return target, True
