"""The run description: immutable data that another process can start from, and the requests it implies."""

from __future__ import annotations

import orjson
import pytest

from conftest import ROOT
from loadgen.load.description import RunDescription
from loadgen.schedule.plan import plan_stage
from loadgen.spec import load_workload
from loadgen.target.probe import PromptSetup, TextCalibration
from loadgen.target.targeter import Targeter


def _description(workload: str) -> RunDescription:
    spec, _ = load_workload(ROOT / "workloads" / workload)
    return RunDescription(
        base_url="http://127.0.0.1:9/v1",
        api_key_env="LOADGEN_TEST_KEY",
        server="vllm",
        model="llama-2-7b",
        seed=spec.seed,
        timeouts=spec.timeouts,
        retry=spec.retry,
        stages=tuple(spec.stages),
        prompts=PromptSetup(calibration={"chat": TextCalibration(overhead=9, per_word=1.25)}, notes=("n",)),
    )


@pytest.mark.parametrize("workload", ["chat.yaml", "phase-study.yaml", "mooncake-replay.yaml"])
def test_the_description_round_trips_through_json_unchanged(workload):
    d = _description(workload)
    again = RunDescription.from_json(d.to_json())
    assert again == d
    # ... and so gives the same requests: the same plan and the same bodies, byte for byte.
    for i, stage in enumerate(d.stages):
        a, b = (
            Targeter(d.server, d.model, d.seed, d.prompts, d.stages),
            Targeter(again.server, again.model, again.seed, again.prompts, again.stages),
        )
        for x, y in zip(plan_stage(stage, d.seed, i), plan_stage(again.stages[i], again.seed, i), strict=True):
            assert x == y and a.target(stage, x) == b.target(again.stages[i], y)
            break  # one request per stage is enough to see the bodies match


def test_the_description_is_immutable_and_carries_no_secret(monkeypatch):
    monkeypatch.setenv("LOADGEN_TEST_KEY", "sk-secret")
    d = _description("chat.yaml")
    with pytest.raises(Exception):  # noqa: B017 (pydantic's frozen-instance error)
        d.seed = 2  # type: ignore[misc]
    assert "sk-secret" not in d.to_json().decode() and d.api_key_env == "LOADGEN_TEST_KEY"


def test_calibrated_text_prompts_follow_the_calibration():
    d = _description("chat.yaml")
    t = Targeter(d.server, d.model, d.seed, d.prompts, d.stages)
    item = next(iter(plan_stage(d.stages[0], d.seed, 0)))
    body = orjson.loads(t.target(d.stages[0], item).body)
    words = len(body["messages"][0]["content"].split())
    assert words == round((item.prompt_tokens - 9) / 1.25)  # tokens = 9 + 1.25 x words
    assert body["max_tokens"] == body["min_tokens"] == item.output_tokens and body["ignore_eos"] is True
