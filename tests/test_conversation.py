"""A session's prompts sized for a chat template (a calibration's per-message tokens), against a server simulated
here: its count of every turn's prompt is the turn's planned length, whatever the template, the truncations and
the turns made up for a session met partway."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import orjson

from loadgen.schedule.plan import Planned, plan_stage
from loadgen.spec.workload import StageSpec
from loadgen.target.probe import PromptSetup, TextCalibration
from loadgen.target.prompts import make_prompt
from loadgen.target.targeter import Targeter

# ChatML on llama.cpp with Gemma-3's tokenizer, as calibrated there: `<bos>`, then `<|im_start|>ROLE\n...<|im_end|>\n`
# (15 tokens) around each message and `<|im_start|>assistant\n` to end; one token a word of loadgen's prompts.
CHATML = TextCalibration(overhead=24, per_word=1.0, per_message=15)


def chatml(messages: list[dict], system_extra: int = 0) -> int:
    """The simulated server's count: 9 + 15 a message + a token a word; `system_extra`: the system role costs
    more than the calibration found (a template whose roles differ)."""
    words = sum(len(m["content"].split()) for m in messages)
    return 9 + 15 * len(messages) + words + sum(system_extra for m in messages if m["role"] == "system")


def stage(**sessions) -> StageSpec:
    spec = {"turns": 5, "user_tokens": {"dist": "uniform", "min": 40, "max": 90}, "output_tokens": 30}
    spec.update(sessions)
    return StageSpec.model_validate(
        {
            "name": "s",
            "api": "chat",
            "model": None,
            "load": {"arrival": "closed", "concurrency": 2},
            "requests": {},
            "stop": {"requests": 40},
            "slo": {},
            "sessions": spec,
        }
    )


def served(
    st: StageSpec,
    count: Callable[[list[dict]], int] = chatml,
    short: int = 0,
) -> Iterator[tuple[Planned, int, int]]:
    """Each turn as sent (planned, the server's count, the new message's words), the server answering `short`
    tokens less than asked."""
    t = Targeter("llamacpp", "m", 1, PromptSetup(calibration={"chat": CHATML}), [st])
    for _, group in itertools.groupby(plan_stage(st, 1, 0), key=lambda p: p.group):
        turns = list(group)
        convo = t.conversation(st, turns[0])
        for item in turns:
            target, message = t.turn(st, item, convo)
            messages = orjson.loads(target.body)["messages"]
            n = count(messages)
            yield item, n, len(messages[-1]["content"].split())
            returned = item.output_tokens - short
            convo.add(message, make_prompt(returned, f"answer:{item.request_id}", 1), item.output_tokens, returned, n)


def test_every_turn_counts_as_planned_through_the_template():
    st = stage(system_prompts={"count": 2, "tokens": 64})
    turns = list(served(st))
    assert max(item.turn or 0 for item, _, _ in turns) == 5
    assert [n for _, n, _ in turns] == [item.prompt_tokens for item, _, _ in turns]


def test_truncated_and_partway_sessions_count_as_planned():
    st = stage(
        turns=8,
        system_prompts={"count": 1, "tokens": 48},
        max_context=400,
        at_context_limit="truncate",
        steady_state=True,
    )
    turns = list(served(st))
    assert any(item.session.drop for item, _, _ in turns) and any(item.session.made_up for item, _, _ in turns)
    assert [n for _, n, _ in turns] == [item.prompt_tokens for item, _, _ in turns]


def test_the_servers_count_corrects_what_the_calibration_missed():
    """A system role dearer than the calibration's average message: the first turn is off by that much, and the
    turns after it, sized from the server's count of the one before, are not."""
    st = stage(system_prompts={"count": 1, "tokens": 64})
    turns = list(served(st, lambda m: chatml(m, system_extra=4)))
    assert {n - item.prompt_tokens for item, n, _ in turns if item.parent is None} == {4}
    assert all(n == item.prompt_tokens for item, n, _ in turns if item.parent is not None)


def test_answers_shorter_than_planned_are_not_made_up_for():
    """A server that ends answers early gives shorter prompts (the plan assumes answers as long as asked for): the
    new message keeps its length rather than growing to fill the gap."""
    st = stage()
    full, short = list(served(st)), list(served(st, short=10))
    assert [w for _, _, w in short] == [w for _, _, w in full]
    assert [item.prompt_tokens - n for item, n, _ in short] == [10 * (item.turn - 1) for item, _, _ in short]
