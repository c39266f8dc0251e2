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
    ("output_tokens_source", "VARCHAR"),  # usage | tokenizer | events
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

# One row per run and stage: what the stage asked for, so that views can group by phase, batch and length.
STAGES = """
CREATE TABLE IF NOT EXISTS stages (
    run_id VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,
    idx INTEGER NOT NULL,
    phase VARCHAR,                    -- prefill | decode | NULL
    arrival VARCHAR NOT NULL,
    concurrency INTEGER NOT NULL,     -- closed loop: users (the batch); open loop: the in-flight cap
    rate DOUBLE,
    spec JSON NOT NULL
)"""

_PHASE_ROWS = """
FROM requests r JOIN runs ru USING (run_id) JOIN stages st USING (run_id, stage)
WHERE st.phase = '{phase}' AND r.status = 'ok' AND NOT r.warmup"""

# The Prefill phase: TTFT against prompt length, per endpoint.
PREFILL = f"""
CREATE OR REPLACE VIEW prefill AS
SELECT
    ru.endpoint,
    r.prompt_tokens,
    count(*) AS requests,
    quantile_cont(r.ttft_ms, 0.5) AS ttft_p50_ms,
    quantile_cont(r.ttft_ms, 0.9) AS ttft_p90_ms,
    r.prompt_tokens / (quantile_cont(r.ttft_ms, 0.5) / 1000.0) AS prefill_tokens_per_s
{_PHASE_ROWS.format(phase="prefill")}
GROUP BY ru.endpoint, r.prompt_tokens
"""

# The Decode phase: TPOT and decode throughput against batch (the stage's concurrency), per endpoint.
# Throughput is the stage's output tokens over its span, summed over runs of the same endpoint and batch.
DECODE = f"""
CREATE OR REPLACE VIEW decode AS
WITH per_run AS (
    SELECT ru.endpoint, st.concurrency AS batch, r.run_id,
           sum(r.output_tokens) AS tokens, max(r.end_s) - min(r.sent_s) AS span_s
    {_PHASE_ROWS.format(phase="decode")}
    GROUP BY ALL
), rates AS (
    SELECT endpoint, batch, sum(tokens) / nullif(sum(span_s), 0) AS decode_tokens_per_s FROM per_run GROUP BY ALL
), tpots AS (
    SELECT ru.endpoint, st.concurrency AS batch, count(*) AS requests,
           quantile_cont(r.tpot_ms, 0.5) AS tpot_p50_ms, quantile_cont(r.tpot_ms, 0.9) AS tpot_p90_ms
    {_PHASE_ROWS.format(phase="decode")}
    GROUP BY ALL
)
SELECT t.endpoint, t.batch, t.requests, t.tpot_p50_ms, t.tpot_p90_ms, r.decode_tokens_per_s,
       1000.0 / t.tpot_p50_ms AS tokens_per_s_per_user
FROM tpots t JOIN rates r USING (endpoint, batch)
"""

# For every pair of endpoints: the smallest batch at which the first's decode throughput passes the second's, and
# the smallest prompt length from which the first's TTFT is the lower (NULL where it never is).
CROSSOVER = """
CREATE OR REPLACE VIEW crossover AS
WITH pairs AS (
    SELECT DISTINCT a.endpoint, b.endpoint AS versus
    FROM (SELECT endpoint FROM decode UNION SELECT endpoint FROM prefill) a,
         (SELECT endpoint FROM decode UNION SELECT endpoint FROM prefill) b
    WHERE a.endpoint <> b.endpoint
)
SELECT
    p.endpoint,
    p.versus,
    (SELECT min(x.batch) FROM decode x JOIN decode y ON x.batch = y.batch
      WHERE x.endpoint = p.endpoint AND y.endpoint = p.versus
        AND x.decode_tokens_per_s > y.decode_tokens_per_s) AS decode_passes_at_batch,
    (SELECT min(x.prompt_tokens) FROM prefill x JOIN prefill y ON x.prompt_tokens = y.prompt_tokens
      WHERE x.endpoint = p.endpoint AND y.endpoint = p.versus
        AND x.ttft_p50_ms < y.ttft_p50_ms) AS ttft_lower_from_prompt_tokens
FROM pairs p
"""

ALL = (RUNS, REQUESTS, EVENTS, STAGES, SUMMARY, ERRORS, PREFILL, DECODE, CROSSOVER)
