"""aiperf's DAG format (`dag_jsonl`, ai-dynamo/aiperf docs/benchmark-modes/dag.md): agent task graphs to replay.

Each line is one conversation: `session_id`, its `turns` in order, and on a turn `forks` (conversations that go
on from it with its context, the parent ending there) or `spawns` (sub-agents from a fresh context; the parent's
next turn, or its turn `join_at`, waits for them). A conversation no other one names is a root: one task.

loadgen replays the graph and the lengths, not the text: a turn's message is as many tokens as its messages'
words (a word a token), its answer `max_tokens` (else `default_output` tokens), and its `delay` (ms) is tool time
before it. A spawned sub-agent's answers gate its parent's turn but are not read into its context (aiperf's
SPAWN); a forked conversation starts from its parent's context. The format's other constructs (orchestrator
conversations, rounds, pre-session spawns, background forks, `context_mode`) are refused, naming the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from loadgen.spec.errors import SpecError

UNSUPPORTED = ("orchestrator", "rounds", "pre_session_spawns", "context_mode", "spawns_at_start")


@dataclass(frozen=True)
class Turn:
    message_tokens: int
    output_tokens: int
    delay_s: float
    forks: tuple[str, ...]
    spawns: tuple[tuple[tuple[str, ...], int | None], ...]  # (children, the turn that joins them: None the next)


@dataclass(frozen=True)
class Conversation:
    session_id: str
    line: int
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class Call:
    """One call of a task's graph, its references local to the task (0: its first call)."""

    step: str
    agent: int
    depth: int
    after: tuple[int, ...]
    delay_s: float
    message_tokens: int
    output_tokens: int
    fork: int | None


def _words(messages: Any) -> int:
    words = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            words += len(content.split())
        elif isinstance(content, list):  # multimodal parts: their text
            words += sum(len(str(p.get("text", "")).split()) for p in content if isinstance(p, dict))
    return max(1, words)


def _turn(raw: Any, where: str, source: str, line: int, default_output: int) -> Turn:
    if not isinstance(raw, dict) or not isinstance(raw.get("messages"), list) or not raw["messages"]:
        raise SpecError(source, f"{where}: a turn needs a non-empty list of messages", line=line)
    forks = []
    for f in raw.get("forks") or []:
        if not isinstance(f, str):
            raise SpecError(source, f"{where}.forks: background forks are not replayed (give session ids)", line=line)
        forks.append(f)
    spawns = []
    for s in raw.get("spawns") or []:
        if isinstance(s, str):
            spawns.append(((s,), None))
        elif isinstance(s, dict) and isinstance(s.get("children"), list):
            join = s.get("join_at")
            spawns.append((tuple(str(c) for c in s["children"]), int(join) if join is not None else None))
        else:
            raise SpecError(source, f"{where}.spawns: expected session ids or {{children, join_at}}", line=line)
    output = raw.get("max_tokens", default_output)
    delay = raw.get("delay", 0.0)
    if not isinstance(output, int) or output < 1 or not isinstance(delay, (int, float)) or delay < 0:
        raise SpecError(source, f"{where}: max_tokens must be a positive integer and delay milliseconds", line=line)
    return Turn(_words(raw["messages"]), output, float(delay) / 1000, tuple(forks), tuple(spawns))


def read(path: str | Path, default_output: int = 128) -> list[Conversation]:
    """Every conversation of the file, checked line by line."""
    source = str(path)
    try:
        lines = Path(path).read_bytes().splitlines()
    except FileNotFoundError:
        raise SpecError(source, "trace file not found") from None
    except OSError as e:
        raise SpecError(source, f"cannot read trace: {e}") from None
    out: list[Conversation] = []
    seen: set[str] = set()
    for n, raw_line in enumerate(lines, start=1):
        if not raw_line.strip():
            continue
        try:
            row = orjson.loads(raw_line)
        except orjson.JSONDecodeError as e:
            raise SpecError(source, f"invalid JSON: {e}", line=n) from None
        if not isinstance(row, dict) or not isinstance(row.get("session_id"), str):
            raise SpecError(source, "expected an object with a session_id (a string)", line=n)
        sid = row["session_id"]
        if (bad := next((k for k in UNSUPPORTED if k in row), None)) is not None:
            raise SpecError(source, f"session {sid!r}: {bad} is not replayed by loadgen", line=n)
        if sid in seen:
            raise SpecError(source, f"duplicate session_id {sid!r}", line=n)
        seen.add(sid)
        turns = row.get("turns")
        if not isinstance(turns, list) or not turns:
            raise SpecError(source, f"session {sid!r}: turns must be a non-empty list", line=n)
        parsed = tuple(_turn(t, f"session {sid!r} turn {i}", source, n, default_output) for i, t in enumerate(turns))
        for i, t in enumerate(parsed):
            if t.forks and i != len(parsed) - 1:
                raise SpecError(
                    source, f"session {sid!r} turn {i}: a fork ends its conversation (its last turn)", line=n
                )
            for _, join in t.spawns:
                if join is not None and not i < join < len(parsed):
                    raise SpecError(source, f"session {sid!r} turn {i}: join_at {join} is not a later turn", line=n)
        out.append(Conversation(sid, n, parsed))
    if not out:
        raise SpecError(source, "no conversations in the trace")
    return out


class _Graph:
    """One root's task: its calls, depth first, each conversation's turns one after another."""

    def __init__(self, by_id: dict[str, Conversation], source: str, max_depth: int):
        self.by_id, self.source, self.max_depth = by_id, source, max_depth
        self.calls: list[Call] = []
        self.agents = 0

    def conversation(
        self, sid: str, start: int | None, fork: int | None, depth: int, path: str, visiting: tuple[str, ...]
    ) -> int | None:
        """Add a conversation's calls, its first waiting for `start`; returns its last call."""
        convo = self.by_id[sid]
        if sid in visiting:
            raise SpecError(self.source, f"cycle: {' -> '.join((*visiting, sid))}", line=convo.line)
        if depth > self.max_depth:
            raise SpecError(self.source, f"session {sid!r} is {depth} deep, more than max_depth", line=convo.line)
        agent, self.agents = self.agents, self.agents + 1
        prev = start
        joins: dict[int, list[int]] = {}  # turn -> sub-agents' last calls it waits for
        for i, t in enumerate(convo.turns):
            after = tuple(c for c in (prev,) if c is not None) + tuple(joins.pop(i, ()))
            k, step = len(self.calls), f"{path}{sid}[{i}]"
            self.calls.append(Call(step, agent, depth, after, t.delay_s, t.message_tokens, t.output_tokens, fork))
            fork, prev = None, k
            for children, join in t.spawns:
                for child in children:
                    last = self._child(child, convo, k, None, depth, f"{step}/", (*visiting, sid))
                    target = i + 1 if join is None else join
                    if last is not None and target < len(convo.turns):
                        joins.setdefault(target, []).append(last)
            for child in t.forks:
                self._child(child, convo, k, k, depth, f"{step}/", (*visiting, sid))
        return prev

    def _child(
        self, child: str, parent: Conversation, start: int, fork: int | None, depth: int, path: str, visiting: tuple
    ) -> int | None:
        if child not in self.by_id:
            raise SpecError(
                self.source, f"session {parent.session_id!r} names {child!r}, not in the trace", line=parent.line
            )
        return self.conversation(child, start, fork, depth + 1, path, visiting)


def tasks(path: str | Path, max_depth: int, max_calls: int, default_output: int = 128) -> list[list[Call]]:
    """One task per root conversation (one that no other names), in the file's order."""
    convos = read(path, default_output)
    by_id = {c.session_id: c for c in convos}
    named = {x for c in convos for t in c.turns for x in (*t.forks, *(ch for chs, _ in t.spawns for ch in chs))}
    roots = [c for c in convos if c.session_id not in named]
    if not roots:
        raise SpecError(str(path), "every conversation is another's fork or spawn: no root to start a task from")
    out = []
    for root in roots:
        g = _Graph(by_id, str(path), max_depth)
        g.conversation(root.session_id, None, None, 0, "", ())
        if len(g.calls) > max_calls:
            raise SpecError(str(path), f"session {root.session_id!r}'s task has {len(g.calls)} calls, more than "
                            f"max_calls ({max_calls})", line=root.line)  # fmt: skip
        out.append(g.calls)
    return out
