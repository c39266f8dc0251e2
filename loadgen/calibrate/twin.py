"""The twin's endpoint file: the fitted engine, served in the measured server's shape and model name."""

from __future__ import annotations

import re
from typing import Any

import duckdb

from loadgen.calibrate.measured import endpoint_spec, family
from loadgen.spec.endpoint import FittedSpec


def twin_endpoint(con: duckdb.DuckDBPyConnection, endpoint: str, fitted: FittedSpec) -> dict[str, Any]:
    spec = endpoint_spec(con, endpoint)
    emulate: dict[str, Any] = {"engine": "fitted", "server": "llamacpp" if family(spec) == "llamacpp" else "vllm"}
    emulate["fitted"] = fitted.model_dump(mode="json", exclude_none=True)
    # A server measured by its URL is named by it; the twin's name becomes a file name when it is served.
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", endpoint.removeprefix("http://").removeprefix("https://")).strip("-.")
    out: dict[str, Any] = {"name": f"{safe}-twin"}
    if spec.get("model"):
        out["model"] = spec["model"]  # the name the measured server served, so that workloads naming it run
    out["emulate"] = emulate
    return out
