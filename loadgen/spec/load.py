"""Reading workload and endpoint files: YAML with line numbers, `--set` overrides, stages, clear errors."""

from __future__ import annotations

import copy
import difflib
import itertools
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from loadgen.spec.endpoint import EndpointSpec
from loadgen.spec.errors import SpecError
from loadgen.spec.redact import redact_url
from loadgen.spec.tasks import STEP_KINDS, order_problems
from loadgen.spec.workload import StageSpec, WorkloadSpec

Path_ = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

# The tags of distributions: pydantic puts them in an error's location (prompt_tokens.normal.std).
DIST_TAGS = ("fixed", "uniform", "normal", "lognormal", "choice", "exponential")
STAGE_KEYS = ("api", "model", "load", "requests", "stop", "slo", "warmup", "phase", "sessions", "tasks")


def _line_map(node: yaml.Node, path: Path_ = (), lines: dict[Path_, int] | None = None) -> dict[Path_, int]:
    """Map every key path in a composed YAML document to its 1-based line."""
    lines = {} if lines is None else lines
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            lines[child] = key.start_mark.line + 1
            _line_map(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _line_map(value, (*path, i), lines)
    return lines


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[Path_, int]]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(source, "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(source, f"cannot read: {e}") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError(source, f"not valid YAML: {problem}", line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise SpecError(source, "expected a mapping of keys (name:, load:, ...) at the top level", line=1)
    return data, _line_map(node) if node is not None else {}


def _parse_path(dotted: str) -> Path_:
    return tuple(int(p) if p.isdigit() else p for p in dotted.split("."))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--set dotted.key=value` overrides; values are read as YAML scalars (numbers, booleans, lists)."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SpecError("--set", f"expected KEY=VALUE (for instance load.rate=20), got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise SpecError("--set", f"{key}: value {raw!r} is not a valid YAML scalar") from None
        path = _parse_path(key)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            if isinstance(path[i + 1], int) and not isinstance(
                node.get(part) if isinstance(node, dict) else None, list
            ):
                where = ".".join(map(str, path[: i + 1]))
                hint = " (without stages, a workload is one stage: set its keys at the top, e.g. load.concurrency=4)"
                raise SpecError(
                    "--set", f"{key}: this file has no list '{where}'" + (hint if where == "stages" else "")
                )
            if isinstance(node, dict):
                node = node.setdefault(part, {})
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                where = ".".join(map(str, path[: i + 1]))
                raise SpecError("--set", f"{key}: '{where}' is not a mapping or a valid list index")
        if isinstance(node, dict):
            node[path[-1]] = value
        elif isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node):
            node[path[-1]] = value
        else:
            raise SpecError("--set", f"{key}: cannot set a key inside a {type(node).__name__}")
    return data


def _describe(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind.startswith("union_tag") or kind == "model_attributes_type":
        return msg
    return f"{msg} (got {err['input']!r})" if not isinstance(err["input"], dict | list) else msg


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field can hold, through Optional, unions, lists and Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _keys_at(model: type[BaseModel], loc: Path_) -> set[str]:
    """The keys a mapping at `loc` of `model` may have."""
    models = [model]
    for part in loc:
        if isinstance(part, str):
            models = [
                m for mdl in models if part in mdl.model_fields for m in _models_in(mdl.model_fields[part].annotation)
            ]
    return {k for m in models for k in m.model_fields}


def did_you_mean(key: str, known: Any) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _line(lines: dict[Path_, int], path: Path_) -> int | None:
    """The line of a key path, or of the nearest key above it that the file has."""
    return next((lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in lines), None)


def _where(path: Path_) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[")


def validate(model: type[M], data: Any, source: str, lines: dict[Path_, int], prefix: Path_ = ()) -> M:
    """The model, or a SpecError that reports every problem in `data`, each at its place."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            # Drop the tagged unions' tags from the location to get the YAML path (a task step's tag is its key).
            loc = tuple(p for p in err["loc"] if p not in DIST_TAGS)
            loc = tuple(p for i, p in enumerate(loc) if not (p in STEP_KINDS and loc[i + 1 : i + 2] == (p,)))
            full = (*prefix, *loc)
            line = _line(lines, full)
            message = _describe(err)
            if err["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
                message += did_you_mean(loc[-1], _keys_at(model, loc[:-1]))
            problems.append(SpecError(source, message, where=_where(full) or None, line=line))
        raise SpecError.all(problems) from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _expand_sweep(sweep: Any, source: str, lines: dict[Path_, int]) -> list[dict[str, Any]]:
    """`sweep: {load.concurrency: [1, 2, 4]}` -> one stage per value (several keys: every combination)."""
    line = lines.get(("sweep",))
    if not isinstance(sweep, dict) or not sweep:
        raise SpecError(source, "expected a mapping of dotted keys to lists of values", where="sweep", line=line)
    axes: list[tuple[str, list[Any]]] = []
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise SpecError(source, "expected a non-empty list of values", where=f"sweep.{key}", line=line)
        if str(key).split(".")[0] not in STAGE_KEYS:
            raise SpecError(
                source, f"a sweep varies stage keys ({', '.join(STAGE_KEYS)})", where=f"sweep.{key}", line=line
            )
        axes.append((str(key), values))
    stages = []
    for combo in itertools.product(*(values for _, values in axes)):
        stage: dict[str, Any] = {
            "name": ",".join(f"{k.split('.')[-1]}={v}" for (k, _), v in zip(axes, combo, strict=True))
        }
        for (key, _), value in zip(axes, combo, strict=True):
            node = stage
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        stages.append(stage)
    return stages


def load_workload(path: str | Path, overrides: list[str] | None = None) -> tuple[WorkloadSpec, Path]:
    """Parse a workload file into a spec whose `stages` are fully resolved (at least one), with trace paths
    made absolute."""
    path = Path(path)
    raw, lines = read_yaml(path)
    raw = apply_overrides(raw, overrides or [])
    source = str(path)
    stages_raw = raw.pop("stages", None) or []
    sweep = raw.pop("sweep", None)
    if not isinstance(stages_raw, list):
        raise SpecError(source, "expected a list of stages", where="stages", line=lines.get(("stages",)))
    if sweep is not None:
        if stages_raw:
            raise SpecError(source, "give 'stages' or 'sweep', not both", where="sweep", line=lines.get(("sweep",)))
        stages_raw = _expand_sweep(sweep, source, lines)
        lines = {k: v for k, v in lines.items() if k[:1] != ("stages",)}
    problems: list[SpecError] = []  # every problem in the file is reported at once
    try:
        spec: WorkloadSpec | None = validate(WorkloadSpec, raw, source, lines)
    except SpecError as e:
        spec, problems = None, [e, *e.more]
    # What every stage inherits, in the user's raw form so that overrides merge cleanly.
    base = {} if spec is None else {k: raw.get(k, v) for k, v in spec.model_dump(include=set(STAGE_KEYS)).items()}
    stages: list[StageSpec] = []
    for i, stage in enumerate(stages_raw or [{"name": "main"}]):
        prefix: Path_ = ("stages", i)
        if not isinstance(stage, dict):
            problems.append(
                SpecError(source, "expected a mapping with 'name'", where=f"stages[{i}]", line=lines.get(prefix))
            )
            continue
        for key in sorted(set(stage) - {"name", *STAGE_KEYS}):
            problems.append(
                SpecError(
                    source,
                    f"unknown stage key (a stage may set: name, {', '.join(STAGE_KEYS)})"
                    + did_you_mean(key, {"name", *STAGE_KEYS}),
                    where=f"stages[{i}].{key}",
                    line=lines.get((*prefix, key)),
                )
            )
        if spec is None:
            continue  # a stage inherits the top level: only its own keys are checked until that is valid
        merged = _merge(base, {k: v for k, v in stage.items() if k in {"name", *STAGE_KEYS}})
        merged.setdefault("name", f"stage{i}")
        if "stop" not in raw and "stop" not in stage and merged["load"].get("arrival") == "trace":
            merged["stop"] = {}  # a trace replay without stop: replays the whole trace (the range it selects)
        try:
            resolved = validate(StageSpec, merged, source, lines, prefix if stages_raw else ())
        except SpecError as e:
            problems += [e, *e.more]
            continue
        stages.append(_absolute_paths(resolved, path.parent))
    if problems or spec is None:
        raise SpecError.all(problems)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise SpecError(source, f"stage names must be unique, got {names}", where="stages", line=lines.get(("stages",)))
    _check_tasks(stages, source, lines)
    return spec.model_copy(update={"stages": stages}), path


def _check_tasks(stages: list[StageSpec], source: str, lines: dict[Path_, int]) -> None:
    """Agent tasks, beyond their schema: each agent's steps end with something a call reads (docs/agents.md), and
    a tasks stage's idle stage is an earlier stage of lone requests, whose requests give the endpoint's latency
    with nothing else in flight. Each problem names the key where it was written: the stage's, or the top level's
    that the stage inherits."""
    names = [s.name for s in stages]

    def place(i: int, key: Path_) -> tuple[str, int | None]:
        own = ("stages", i, "tasks", *key)
        path = own if own in lines else ("tasks", *key)
        return _where(path), _line(lines, path)

    problems: list[SpecError] = []
    for i, st in enumerate(stages):
        if st.tasks is None:
            continue
        for key, message in order_problems(st.tasks.steps) if st.tasks.steps is not None else []:
            where, line = place(i, key)
            problems.append(SpecError(source, message, where=where, line=line))
        idle = st.tasks.idle_stage
        if idle is None:
            continue
        where, line = place(i, ("idle_stage",))
        if idle not in names[:i]:
            before = ", ".join(names[:i]) or "none"
            problems.append(
                SpecError(
                    source, f"{idle!r} is not a stage before {st.name!r} (those: {before})", where=where, line=line
                )
            )
            continue
        base = stages[names.index(idle)]
        if base.load.arrival != "closed" or base.load.users != 1 or base.sessions is not None or base.tasks is not None:
            problems.append(
                SpecError(
                    source,
                    f"stage {idle!r} must send lone requests (arrival: closed, concurrency: 1, no sessions or tasks)",
                    where=where,
                    line=line,
                )
            )
    if problems:
        raise SpecError.all(list({p.one(): p for p in problems}.values()))


def _absolute_paths(stage: StageSpec, base: Path) -> StageSpec:
    """Trace and tokenizer paths are relative to the workload file; resolve them once, here."""
    trace = stage.load.trace
    if trace is not None and not Path(trace.path).is_absolute():
        trace = trace.model_copy(update={"path": str((base / trace.path).resolve())})
        stage = stage.model_copy(update={"load": stage.load.model_copy(update={"trace": trace})})
    tok = stage.requests.tokenizer
    if tok is not None and not Path(tok).is_absolute():
        requests = stage.requests.model_copy(update={"tokenizer": str((base / tok).resolve())})
        stage = stage.model_copy(update={"requests": requests})
    graphs = stage.tasks.trace if stage.tasks is not None else None
    if graphs is not None and not Path(graphs.path).is_absolute():
        graphs = graphs.model_copy(update={"path": str((base / graphs.path).resolve())})
        stage = stage.model_copy(update={"tasks": stage.tasks.model_copy(update={"trace": graphs})})
    return stage


def load_endpoint(path: str | Path) -> EndpointSpec:
    path = Path(path)
    raw, lines = read_yaml(path)
    spec = validate(EndpointSpec, raw, str(path), lines)
    launch = spec.launch
    if launch is not None and launch.model is not None and not Path(launch.model).is_absolute():
        # A launched engine's model file is relative to the endpoint file, as a workload's trace is to its own.
        launch = launch.model_copy(update={"model": str((path.parent / launch.model).resolve())})
        spec = spec.model_copy(update={"launch": launch})
    return spec


def resolve_endpoint(workload: WorkloadSpec, workload_path: Path, override: str | None = None) -> EndpointSpec:
    """The endpoint named by `--endpoint` or the workload: a base URL, or a file relative to the workload file."""
    ref = override if override is not None else workload.endpoint
    if ref.startswith(("http://", "https://")):
        # The URL names the endpoint in results, so it is named without any credentials it carries.
        name = redact_url(ref)
        return validate(EndpointSpec, {"name": name, "url": ref}, "--endpoint" if override else str(workload_path), {})
    path = Path(ref) if override is not None else workload_path.parent / ref
    return load_endpoint(path)
