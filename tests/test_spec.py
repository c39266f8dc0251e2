"""Workload and endpoint files: what loads, and what a user is told when it does not."""

from __future__ import annotations

import pytest

from conftest import ROOT
from loadgen.spec import SpecError, load_endpoint, load_workload, resolve_endpoint
from loadgen.spec.distributions import Choice, Fixed, Normal

BASE = """\
name: t
endpoint: ep.yaml
load:
  arrival: poisson
  rate: 4
  concurrency: 8
requests:
  prompt_tokens: {dist: normal, mean: 512, std: 128, min: 16, max: 3968}
  output_tokens: 64
stop: {requests: 10}
"""


def test_shipped_chat_workload_resolves_with_its_emulated_endpoint():
    spec, path = load_workload(ROOT / "workloads" / "chat.yaml")
    assert spec.name == "chat" and spec.api == "chat"
    assert [s.name for s in spec.stages] == ["main"]
    endpoint = resolve_endpoint(spec, path)
    assert endpoint.emulated and endpoint.emulate is not None


@pytest.mark.parametrize("path", sorted((ROOT / "workloads").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_workload_validates_with_its_endpoint_and_trace(path):
    from loadgen.schedule.plan import preview
    from loadgen.trace.readers import check_traces

    spec, wpath = load_workload(path)
    endpoint = resolve_endpoint(spec, wpath)
    assert endpoint.started  # the shipped workloads run on a laptop: an emulator, or the packaged CPU engine
    for name, c in check_traces(spec).items():
        assert c.rows > 0 and c.bad_rows == 0, name
    for i, stage in enumerate(spec.stages):
        assert preview(stage, spec.seed, i).requests != 0, stage.name


def test_lengths_accept_a_number_or_each_distribution(write):
    spec, _ = load_workload(write("w.yaml", BASE))
    stage = spec.stages[0]
    assert isinstance(stage.requests.output_tokens, Fixed) and stage.requests.output_tokens.value == 64
    assert isinstance(stage.requests.prompt_tokens, Normal) and stage.requests.prompt_tokens.max == 3968
    text = BASE.replace("output_tokens: 64", "output_tokens: {dist: choice, values: [1, 128], weights: [3, 1]}")
    spec, _ = load_workload(write("w2.yaml", text))
    assert isinstance(spec.stages[0].requests.output_tokens, Choice)


def error_of(path, overrides=None) -> SpecError:
    with pytest.raises(SpecError) as e:
        load_workload(path, overrides)
    return e.value


def test_unknown_key_names_file_line_and_key(write):
    p = write("w.yaml", BASE.replace("  rate: 4", "  rat: 4"))
    msg = str(error_of(p))
    assert str(p) in msg and ":5:" in msg and "load.rat" in msg and "unknown key" in msg


def test_open_arrival_without_rate_says_what_is_missing(write):
    p = write("w.yaml", BASE.replace("  rate: 4\n", ""))
    e = error_of(p)
    assert e.where == "load" and "needs 'rate'" in e.message and e.line == 3


def test_wrong_type_names_the_value(write):
    e = error_of(write("w.yaml", BASE.replace("rate: 4", "rate: fast")))
    assert e.where == "load.rate" and "fast" in e.message and e.line == 5


def test_bad_distribution_parameters(write):
    e = error_of(write("w.yaml", BASE.replace("std: 128", "std: -1")))
    assert e.where == "requests.prompt_tokens.std" and e.line == 8
    e = error_of(write("w.yaml", BASE.replace("dist: normal", "dist: zipf")))
    assert e.where == "requests.prompt_tokens" and "zipf" in e.message
    e = error_of(write("w.yaml", BASE.replace("min: 16, max: 3968", "min: 500, max: 100")))
    assert "must not exceed" in e.message


def test_a_run_must_be_bounded(write):
    e = error_of(write("w.yaml", BASE.replace("stop: {requests: 10}", "stop: {}")))
    assert e.message.startswith("stop:") and "duration_s" in e.message


def test_yaml_syntax_error_has_a_line(write):
    e = error_of(write("w.yaml", BASE + "load: [unclosed\n"))
    assert e.line is not None and "YAML" in e.message


def test_missing_file_and_non_mapping(write, tmp_path):
    assert "file not found" in str(error_of(tmp_path / "nope.yaml"))
    assert "mapping" in str(error_of(write("w.yaml", "- just\n- a list\n")))


def test_set_overrides_by_dotted_path_with_yaml_values(write):
    p = write("w.yaml", BASE)
    spec, _ = load_workload(p, ["load.rate=20", "stop.requests=3", "requests.output_tokens=7", "slo.ttft_ms=250"])
    s = spec.stages[0]
    assert s.load.rate == 20 and s.stop.requests == 3 and s.requests.output_tokens == Fixed(value=7)
    assert s.slo.ttft_ms == 250


def test_bad_set_overrides_are_spec_errors(write):
    p = write("w.yaml", BASE)
    assert error_of(p, ["load.rate"]).source == "--set"
    assert "cannot set a key inside a str" in error_of(p, ["name.x=1"]).message
    assert error_of(p, ["load.rate=-3"]).where == "load.rate"


def test_stages_override_the_base_and_are_named(write):
    text = (
        BASE
        + "stages:\n  - {name: c1, load: {arrival: closed, concurrency: 1}}\n  - {name: c8, load: {concurrency: 8}}\n"
    )
    spec, _ = load_workload(write("w.yaml", text))
    c1, c8 = spec.stages
    assert (c1.name, c1.load.arrival, c1.load.concurrency) == ("c1", "closed", 1)
    assert (c8.name, c8.load.arrival, c8.load.rate) == ("c8", "poisson", 4)
    assert c1.requests == c8.requests  # inherited from the base


def test_stage_errors_point_into_the_stage(write):
    text = BASE + "stages:\n  - {name: a}\n  - {name: b, load: {rate: 0}}\n"
    e = error_of(write("w.yaml", text))
    assert e.where == "stages[1].load.rate" and e.line == 13
    text = BASE + "stages:\n  - {name: a, seed: 3}\n"
    e = error_of(write("w.yaml", text))
    assert e.where == "stages[0].seed" and "unknown stage key" in e.message
    text = BASE + "stages:\n  - {name: a}\n  - {name: a}\n"
    assert "unique" in error_of(write("w.yaml", text)).message


def test_endpoint_needs_a_url_or_an_emulator(write):
    with pytest.raises(SpecError, match="give one of 'url'.*got none"):
        load_endpoint(write("ep.yaml", "name: x\n"))
    with pytest.raises(SpecError, match="got url and launch"):
        load_endpoint(write("ep.yaml", "name: x\nurl: http://127.0.0.1/v1\nlaunch: {kind: llamacpp}\n"))
    # A launched engine's model file is relative to the endpoint file.
    spec = load_endpoint(write("sub/ep.yaml", "name: x\nlaunch: {kind: llamacpp, model: m.gguf}\n"))
    assert spec.launch is not None and spec.launch.model == str(write("sub/m.gguf", "").resolve())
    with pytest.raises(SpecError, match="http"):
        load_endpoint(write("ep.yaml", "name: x\nurl: ftp://127.0.0.1/v1\n"))


def test_endpoint_override_accepts_a_base_url(write):
    spec, path = load_workload(write("w.yaml", BASE))
    ep = resolve_endpoint(spec, path, "http://127.0.0.1:9/v1")
    assert ep.url == "http://127.0.0.1:9/v1" and not ep.emulated


def test_every_error_in_a_file_is_reported_at_once_with_a_did_you_mean(write):
    text = BASE.replace("rate: 4", "rate: -4\n  concurrncy: 8").replace(
        "output_tokens: 64", "output_tokens: 64\nstopp: 1"
    )
    e = error_of(write("w.yaml", text))
    found = {x.where: x for x in [e, *e.more]}
    assert {"load.rate", "load.concurrncy", "stopp"} <= set(found), str(e)
    assert "did you mean 'concurrency'?" in found["load.concurrncy"].message
    assert "did you mean 'stop'?" in found["stopp"].message
    assert found["stopp"].line == 11 and found["load.rate"].line == 5
    assert len(str(e).splitlines()) == len(found)  # one line a problem, each with its place
    text = BASE + "stages:\n  - {name: a, lod: {concurrency: 2}}\n  - {name: b, load: {rate: 0}, stp: 1}\n"
    e = error_of(write("w2.yaml", text))
    wheres = [x.where for x in [e, *e.more]]
    assert wheres == ["stages[0].lod", "stages[1].stp", "stages[1].load.rate"] and "did you mean 'load'?" in e.message


def test_set_into_stages_a_workload_does_not_have_says_how(write):
    e = error_of(write("w.yaml", BASE), ["stages.0.load.concurrency=4"])
    assert e.source == "--set" and "no list 'stages'" in e.message and "load.concurrency=4" in e.message
    spec, _ = load_workload(ROOT / "workloads" / "phase-study.yaml", ["stages.0.load.concurrency=4"])
    assert spec.stages[0].load.concurrency == 4  # the README's example, on a workload with stages
