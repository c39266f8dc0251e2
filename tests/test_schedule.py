"""The schedule: deterministic by seed, with the arrival statistics and lengths the workload asks for."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from loadgen.schedule.plan import Planned, owner, plan_stage, preview, share, slots
from loadgen.spec.workload import StageSpec


def stage(**over) -> StageSpec:
    base = {
        "name": "s",
        "api": "chat",
        "model": None,
        "load": {"arrival": "poisson", "rate": 50.0, "concurrency": 8},
        "requests": {"prompt_tokens": {"dist": "uniform", "min": 10, "max": 1000}, "output_tokens": 32},
        "stop": {"requests": 20_000},
        "slo": {},
    }
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) else v
    return StageSpec.model_validate(base)


def gaps(s: StageSpec, seed: int = 1) -> np.ndarray:
    return np.diff([p.offset_s for p in plan_stage(s, seed, 0)])


def test_same_seed_same_plan_and_different_seed_different_plan():
    s = stage()
    a, b = list(plan_stage(s, 7, 0)), list(plan_stage(s, 7, 0))
    assert a == b
    c = list(plan_stage(s, 8, 0))
    assert [p.offset_s for p in a] != [p.offset_s for p in c]
    assert [p.prompt_tokens for p in a] != [p.prompt_tokens for p in c]
    d = list(plan_stage(s, 7, 1))  # another stage of the same workload draws its own streams
    assert [p.offset_s for p in a] != [p.offset_s for p in d]


def test_poisson_rate_and_coefficient_of_variation():
    g = gaps(stage())
    assert len(g) == 19_999
    assert 1 / g.mean() == pytest.approx(50.0, rel=0.03)
    assert g.std() / g.mean() == pytest.approx(1.0, abs=0.03)


def test_constant_rate_is_exact():
    g = gaps(stage(load={"arrival": "constant", "rate": 20.0}))
    assert np.allclose(g, 0.05)


@pytest.mark.parametrize("shape", [0.25, 4.0])
def test_gamma_burstiness_sets_the_variation_but_keeps_the_rate(shape):
    g = gaps(stage(load={"arrival": "gamma", "rate": 50.0, "burstiness": shape}))
    assert 1 / g.mean() == pytest.approx(50.0, rel=0.05)
    assert g.std() / g.mean() == pytest.approx(1 / np.sqrt(shape), rel=0.05)


def test_duration_bounds_an_open_loop_plan():
    s = stage(stop={"requests": None, "duration_s": 10.0}, load={"arrival": "constant", "rate": 10.0})
    plan = list(plan_stage(s, 1, 0))
    assert len(plan) == 100 and plan[-1].offset_s < 10.0


def test_closed_loop_has_no_send_times_and_counts_requests():
    plan = list(plan_stage(stage(load={"arrival": "closed"}, stop={"requests": 5}), 1, 0, first_id=100))
    assert [p.request_id for p in plan] == [100, 101, 102, 103, 104]
    assert all(p.offset_s is None for p in plan)


def test_lengths_follow_their_distributions():
    s = stage(
        requests={
            "prompt_tokens": {"dist": "normal", "mean": 512, "std": 128, "min": 16, "max": 600},
            "output_tokens": {"dist": "choice", "values": [1, 100], "weights": [3, 1]},
        }
    )
    plan = list(plan_stage(s, 3, 0))
    prompts = np.array([p.prompt_tokens for p in plan])
    assert prompts.min() >= 16 and prompts.max() == 600  # clipped at max
    assert np.median(prompts) == pytest.approx(512, abs=8)
    outputs = np.array([p.output_tokens for p in plan])
    assert set(outputs) == {1, 100} and (outputs == 1).mean() == pytest.approx(0.75, abs=0.02)


def test_lognormal_has_the_requested_mean_and_std():
    s = stage(requests={"prompt_tokens": {"dist": "lognormal", "mean": 800, "std": 400, "max": 100_000}})
    x = np.array([p.prompt_tokens for p in plan_stage(s, 5, 0)])
    assert x.mean() == pytest.approx(800, rel=0.03) and x.std() == pytest.approx(400, rel=0.06)


def test_worker_shares_partition_the_plan_in_proportion_to_users():
    s = stage(stop={"requests": 1000})
    whole = list(plan_stage(s, 1, 0))
    dealt = slots([2, 1, 0, 1])  # users per worker; worker 2 runs none
    assert dealt == (0, 1, 3, 0)
    parts = [list(share(plan_stage(s, 1, 0), i, dealt)) for i in range(4)]
    assert sorted((p for part in parts for p in part), key=lambda p: p.request_id) == whole
    assert [len(p) for p in parts] == [500, 250, 0, 250]


def test_a_conversation_stays_on_one_worker_and_a_common_prefix_spreads():
    # 200 requests in 7 conversations, all opening with the same prompt block (a system prompt).
    plan = [Planned(i, "s", i * 0.1, 100, 10, (0, 100 + i), i % 7) for i in range(200)]
    dealt = slots([1, 1, 1])
    by_group: dict[int, set[int]] = {}
    for p in plan:
        by_group.setdefault(p.group, set()).add(owner(p, dealt))
    assert all(len(workers) == 1 for workers in by_group.values()) and len(by_group) == 7
    assert {w for ws in by_group.values() for w in ws} == {0, 1, 2}
    alone = [p._replace(group=None) for p in plan]
    assert sorted(Counter(owner(p, dealt) for p in alone).values()) == [66, 67, 67]


def test_preview_reports_counts_rate_and_percentiles():
    p = preview(stage(stop={"requests": 2000}), 1, 0)
    assert p.requests == 2000 and p.rate == pytest.approx(50, rel=0.05)
    assert p.output_pcts == (32, 32, 32) and 90 < p.prompt_pcts[0] < p.prompt_pcts[1] < p.prompt_pcts[2] < 920
