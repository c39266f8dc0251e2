"""Workload and endpoint specifications: YAML files parsed into validated pydantic models."""

from loadgen.spec.endpoint import EndpointSpec
from loadgen.spec.errors import SpecError
from loadgen.spec.load import load_endpoint, load_workload, resolve_endpoint
from loadgen.spec.workload import StageSpec, WorkloadSpec

__all__ = [
    "EndpointSpec",
    "SpecError",
    "StageSpec",
    "WorkloadSpec",
    "load_endpoint",
    "load_workload",
    "resolve_endpoint",
]
