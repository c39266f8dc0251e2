"""Tables and views of the results database. Views aggregate stored per-request values (see metrics.py)."""

RUNS = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    workload VARCHAR NOT NULL,
    endpoint VARCHAR NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    status VARCHAR NOT NULL,          -- running | completed | interrupted | failed
    spec JSON NOT NULL,               -- resolved workload and endpoint, without secrets
    client_delay_p99_ms DOUBLE,       -- bound on loadgen's own stamping error (p99), see README
    note VARCHAR
)"""

REQUEST_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR NOT NULL"),
    ("request_id", "BIGINT NOT NULL"),
    ("stage", "VARCHAR NOT NULL"),
    ("warmup", "BOOLEAN NOT NULL"),
    ("scheduled_s", "DOUBLE"),
    ("sent_s", "DOUBLE"),
    ("first_token_s", "DOUBLE"),
    ("last_token_s", "DOUBLE"),
    ("end_s", "DOUBLE"),
    ("prompt_tokens", "INTEGER"),
    ("max_tokens", "INTEGER"),
    ("output_tokens", "INTEGER"),
    ("output_tokens_source", "VARCHAR"),  # usage | events
    ("server_prompt_tokens", "INTEGER"),  # usage.prompt_tokens when the server reports it
    ("lag_ms", "DOUBLE"),
    ("ttft_ms", "DOUBLE"),
    ("ttft_sched_ms", "DOUBLE"),
    ("tpot_ms", "DOUBLE"),
    ("e2e_ms", "DOUBLE"),
    ("slo_ok", "BOOLEAN"),
    ("status", "VARCHAR NOT NULL"),
    ("error", "VARCHAR"),
    ("error_detail", "VARCHAR"),
    ("http_status", "INTEGER"),
    ("retries", "INTEGER"),
)

REQUESTS = "CREATE TABLE IF NOT EXISTS requests ({})".format(
    ", ".join(f"{name} {kind}" for name, kind in REQUEST_COLUMNS)
)

EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR NOT NULL"),
    ("request_id", "BIGINT NOT NULL"),
    ("idx", "INTEGER NOT NULL"),
    ("t_s", "DOUBLE NOT NULL"),
    ("tokens", "INTEGER NOT NULL"),
)

EVENTS = "CREATE TABLE IF NOT EXISTS events ({})".format(", ".join(f"{name} {kind}" for name, kind in EVENT_COLUMNS))


def _pcts(col: str, name: str, qs: tuple[int, ...], only_ok: bool = True) -> str:
    where = " FILTER (WHERE status = 'ok')" if only_ok else ""
    return ",\n    ".join(f"quantile_cont({col}, {q / 100}){where} AS {name}_p{q}_ms" for q in qs)


# One row per run and stage. Rates are over the stage's span, from its first send to its last stream's end.
SUMMARY = f"""
CREATE OR REPLACE VIEW summary AS
SELECT
    run_id,
    stage,
    min(scheduled_s) AS start_s,
    count(*) AS requests,
    count(*) FILTER (WHERE status <> 'ok') AS errors,
    {_pcts("ttft_ms", "ttft", (50, 90, 99))},
    {_pcts("tpot_ms", "tpot", (50, 90, 99))},
    {_pcts("e2e_ms", "e2e", (50, 90, 99))},
    {_pcts("lag_ms", "lag", (50, 99), only_ok=False)},
    {_pcts("ttft_sched_ms", "ttft_sched", (50, 99))},
    sum(output_tokens) FILTER (WHERE status = 'ok') / nullif(max(end_s) - min(sent_s), 0) AS output_tokens_per_s,
    count(*) FILTER (WHERE status = 'ok') / nullif(max(end_s) - min(sent_s), 0) AS requests_per_s,
    count(*) FILTER (WHERE slo_ok) / nullif(max(end_s) - min(sent_s), 0) AS goodput_rps,
    max(end_s) - min(sent_s) AS span_s
FROM requests
WHERE NOT warmup
GROUP BY run_id, stage
"""

# Error counts by class, for the summary's error breakdown.
ERRORS = """
CREATE OR REPLACE VIEW errors AS
SELECT run_id, stage, error, count(*) AS requests, any_value(error_detail) AS example
FROM requests WHERE status <> 'ok' AND NOT warmup
GROUP BY run_id, stage, error
"""

ALL = (RUNS, REQUESTS, EVENTS, SUMMARY, ERRORS)
