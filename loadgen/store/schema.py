"""Tables and views of the results database. Views aggregate stored per-request values (see metrics.py)."""

import re

RUNS = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    workload VARCHAR NOT NULL,
    endpoint VARCHAR NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    status VARCHAR NOT NULL,          -- running | completed | interrupted | failed
    spec JSON NOT NULL,               -- resolved workload and endpoint, without secrets
    client_delay_p99_ms DOUBLE,       -- bound on loadgen's own stamping error (p99), see docs/metrics.md
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
    ("status", "VARCHAR NOT NULL"),  # ok | error | interrupted | not_sent | cancelled
    ("error", "VARCHAR"),
    ("error_detail", "VARCHAR"),
    ("http_status", "INTEGER"),
    ("retries", "INTEGER"),
    ("worker", "INTEGER DEFAULT 0"),  # the process that sent it: 0 alone, else the worker's index
    ("cached_tokens", "INTEGER"),  # usage.prompt_tokens_details.cached_tokens: prompt tokens the server reused
    ("session", "BIGINT"),  # its conversation (a trace's first-turn chat_id), when it belongs to one
    ("turn", "INTEGER"),  # its turn in the conversation (1: the first)
    ("parent_request_id", "BIGINT"),  # the request whose answer it follows
    ("server_prefill_ms", "DOUBLE"),  # the server's own prefill time (llama.cpp timings.prompt_ms), else NULL
    ("server_decode_ms", "DOUBLE"),  # its own decode time (timings.predicted_ms), else NULL
    ("kv_handoff_ms", "DOUBLE"),  # a prefill/decode pair's KV move, save + copy + restore (handoff.total_ms)
    ("kv_bytes", "BIGINT"),  # ... and the KV bytes it moved (handoff.kv_bytes), else NULL
    ("reasoning_tokens", "INTEGER"),  # a reasoning model's thinking, inside output_tokens; NULL where none came
    ("answer_ttft_ms", "DOUBLE"),  # time to the answer's first token, after any thinking (metrics.py)
    ("reasoning_tpot_ms", "DOUBLE"),  # the thinking's own time per token
    ("answer_tpot_ms", "DOUBLE"),  # the answer's own time per token
    ("task_id", "BIGINT"),  # its agent task (the task's first call's request_id), when it belongs to one
    ("task_step", "VARCHAR"),  # its place in the task: step names down to it, sub-agents and repeats indexed
    ("task_calls", "INTEGER"),  # the task's calls, all told (the graph as planned)
    ("depends_on", "BIGINT[]"),  # a task's call: every call it waited for (the task graph's edges into it)
    ("tool_ms", "DOUBLE"),  # a task's call: the tool calls' time planned between those answers and its send
)

REQUESTS = "CREATE TABLE IF NOT EXISTS requests ({})".format(
    ", ".join(f"{name} {kind}" for name, kind in REQUEST_COLUMNS)
)


# One row per run and load-generating process: where its clock sat on the run's timeline and how well its own
# timing held. A single-process run has one row, worker 0, at offset 0.
WORKERS = """
CREATE TABLE IF NOT EXISTS workers (
    run_id VARCHAR NOT NULL,
    worker INTEGER NOT NULL,
    node VARCHAR NOT NULL,            -- Locust's id for it: host name and a random suffix
    users INTEGER,                    -- users it ran in its last stage
    clock_offset_ms DOUBLE,           -- its clock minus the master's (perf_counter), estimated at start
    clock_uncertainty_ms DOUBLE,      -- half the round trip of the estimate kept: the offset's error bound
    client_delay_p99_ms DOUBLE,       -- its own stamping-error bound (as runs.client_delay_p99_ms)
    status VARCHAR NOT NULL,          -- finished | lost
    note VARCHAR
)"""

EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR NOT NULL"),
    ("request_id", "BIGINT NOT NULL"),
    ("idx", "INTEGER NOT NULL"),
    ("t_s", "DOUBLE NOT NULL"),
    ("tokens", "INTEGER NOT NULL"),
    ("itl_ms", "DOUBLE"),  # inter-token latency: the gap since the request's previous event (NULL for its first)
    ("phase", "VARCHAR DEFAULT 'answer'"),  # reasoning (a thinking model's thought) | answer
)

EVENTS = "CREATE TABLE IF NOT EXISTS events ({})".format(", ".join(f"{name} {kind}" for name, kind in EVENT_COLUMNS))

# The tables whose columns are declared above: a database written before a column was added gains it, as ALTERs
# derived from the declaration (its old rows read the default, or NULL), so a new column is one line above.
COLUMNS = {"requests": REQUEST_COLUMNS, "events": EVENT_COLUMNS}


def added_columns(table: str, have: set[str]) -> list[tuple[str, str]]:
    """The declared columns of `table` that a database's table lacks (`have`: the columns it has)."""
    return [(name, kind) for name, kind in COLUMNS[table] if name not in have]


def measured(alias: str = "") -> str:
    """The requests a stage measures: all outside warm-up (failed ones included, as errors)."""
    return f"NOT {alias + '.' if alias else ''}warmup"


def counts(alias: str = "") -> str:
    """The requests that count in every aggregate of latencies and tokens: measured, and ok."""
    return f"{alias + '.' if alias else ''}status = 'ok' AND {measured(alias)}"


# A request's prompt as the server counted it, where it said: a cached share is of that (a chat template's tokens,
# which the planned prompt_tokens leave out, are cached too), else as planned.
SERVER_PROMPT = "coalesce(server_prompt_tokens, prompt_tokens)"


def cached_share(where: str | None = None) -> str:
    """The share of prompt tokens the server's prefix cache held, over the requests (`where`: those of them) whose
    server said; NULL where none did."""
    said = "cached_tokens IS NOT NULL" if where is None else f"{where} AND cached_tokens IS NOT NULL"
    return f"sum(cached_tokens) FILTER (WHERE {said}) / nullif(sum({SERVER_PROMPT}) FILTER (WHERE {said}), 0)"


# A stage's span, over its measured requests: from its first send to its last stream's end.
SPAN = "max(end_s) - min(sent_s)"


def _pcts(col: str, name: str, qs: tuple[int, ...], only_ok: bool = True) -> str:
    where = f" FILTER (WHERE {counts()})" if only_ok else ""
    return ",\n    ".join(f"quantile_cont({col}, {q / 100}){where} AS {name}_p{q}_ms" for q in qs)


def summary_select(keys: str, requests: str = "requests") -> str:
    """The summary's figures over the measured requests of each group of `keys`, as a query: per stage
    (`summary`) and per run (`run_summary`, every stage together). Rates are over the group's span (SPAN).
    Inter-token latencies are the gaps between streamed events of the requests that count. `requests`: the table
    (or a CTE of its rows, with all its columns) to read the requests from."""
    return f"""
WITH gaps AS (
    SELECT {keys}, {_pcts("itl_ms", "itl", (50, 90, 99), only_ok=False)}
    FROM events JOIN {requests} USING (run_id, request_id)
    WHERE {counts()} AND itl_ms IS NOT NULL
    GROUP BY {keys}
), measured AS (
    SELECT
    {keys},
    min(scheduled_s) AS start_s,
    count(*) AS requests,
    count(*) FILTER (WHERE NOT ({counts()}) AND status NOT IN ('not_sent', 'cancelled')) AS errors,
    count(*) FILTER (WHERE status = 'not_sent') AS not_sent,
    count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
    {_pcts("ttft_ms", "ttft", (50, 90, 99))},
    {_pcts("tpot_ms", "tpot", (50, 90, 99))},
    {_pcts("e2e_ms", "e2e", (50, 90, 99))},
    {_pcts("lag_ms", "lag", (50, 99), only_ok=False)},
    {_pcts("ttft_sched_ms", "ttft_sched", (50, 99))},
    sum(output_tokens) FILTER (WHERE {counts()}) / nullif({SPAN}, 0) AS output_tokens_per_s,
    count(*) FILTER (WHERE {counts()}) / nullif({SPAN}, 0) AS requests_per_s,
    count(*) FILTER (WHERE slo_ok) / nullif({SPAN}, 0) AS goodput_rps,
    count(*) FILTER (WHERE slo_ok) AS slo_met,
    -- of the requests the workload let finish: one it abandoned (cancelled) says nothing of the server's SLO
    count(*) FILTER (WHERE slo_ok) / nullif(count(*) FILTER (WHERE status <> 'cancelled'), 0) AS slo_share,
    -- the share of prompt tokens the server's prefix cache held, over requests whose server said (else NULL)
    {cached_share(counts())} AS cached_share,
    -- a reasoning model's: the answer's first token (TTFT where nothing was thought), and the thinking's share of
    -- the output tokens of the requests that thought (NULL where none did)
    {_pcts("answer_ttft_ms", "answer_ttft", (50, 90))},
    sum(reasoning_tokens) FILTER (WHERE {counts()})
        / nullif(sum(output_tokens) FILTER (WHERE {counts()} AND reasoning_tokens IS NOT NULL), 0) AS reasoning_share,
    {SPAN} AS span_s
    FROM {requests}
    WHERE {measured()}
    GROUP BY {keys}
)
SELECT m.*, g.itl_p50_ms, g.itl_p90_ms, g.itl_p99_ms
FROM measured m LEFT JOIN gaps g USING ({keys})
"""


def _summary(view: str, keys: str) -> str:
    return f"\nCREATE OR REPLACE VIEW {view} AS{summary_select(keys)}"


def pooled_rate(rate: str, span: str = "span_s") -> str:
    """Several groups' rates, each over its own span (SPAN), as one: their counts over their spans together."""
    return f"sum({rate} * {span}) / nullif(sum({span}), 0)"


# One row per run and stage: its measured requests; and one per run, every stage together.
SUMMARY = _summary("summary", "run_id, stage")
RUN_SUMMARY = _summary("run_summary", "run_id")

# Error counts by class, for the summary's error breakdown.
ERRORS = f"""
CREATE OR REPLACE VIEW errors AS
SELECT run_id, stage, error, count(*) AS requests, any_value(error_detail) AS example
FROM requests WHERE {measured()} AND NOT ({counts()}) AND status <> 'cancelled'
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
    spec JSON NOT NULL,
    ended VARCHAR                     -- why it ended before its plan did (stop.on_saturation), else NULL
)"""
STAGES_ENDED = "ALTER TABLE stages ADD COLUMN IF NOT EXISTS ended VARCHAR"

# One row per trial of a capacity search (loadgen search): the stage that ran it, the load and the target.
TRIALS = """
CREATE TABLE IF NOT EXISTS trials (
    run_id VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,
    over VARCHAR NOT NULL,            -- rate (requests/s) | concurrency (users)
    load DOUBLE NOT NULL,
    target DOUBLE NOT NULL            -- the share of requests that must meet every SLO
)"""

_PHASE_ROWS = f"""
FROM requests r JOIN runs ru USING (run_id) JOIN stages st USING (run_id, stage)
WHERE st.phase = '{{phase}}' AND {counts("r")}"""


def _islands(rows: str, partition: str) -> str:
    """`rows` (a query with columns w0, w1 and `partition`'s) merged into islands, one row per island with its
    w0, w1 and the rows' other columns summed where named `tokens`. Gaps and islands: a window opens a new island
    when it starts after every earlier window of its partition has ended."""
    return f"""
        SELECT {partition}, island, sum(tokens) AS tokens, min(w0) AS w0, max(w1) AS w1 FROM (
            SELECT *, sum(CASE WHEN reach IS NULL OR w0 > reach THEN 1 ELSE 0 END)
                      OVER (PARTITION BY {partition} ORDER BY w0, w1 ROWS UNBOUNDED PRECEDING) AS island
            FROM (SELECT *, max(w1) OVER (PARTITION BY {partition} ORDER BY w0, w1
                                          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
                  FROM ({rows}))
        ) GROUP BY ALL"""


def _busy(
    phase: str,
    keys: dict[str, str],
    start: str,
    end: str,
    tokens: str,
    where: str = "TRUE",
    less: tuple[str, str] | None = None,
) -> str:
    """Per `keys` (and run and stage): the tokens of the phase's requests and the length of the union of their
    [start, end] windows, the time during which at least one of them was in that phase (metrics.py states the
    definition; this is its one implementation). `less`: windows [start, end] (expressions over the stage's
    requests, NULL where unknown) whose union is taken out of that time. `keys`: output column -> expression."""
    select = ", ".join(f"{expr} AS {name}" for name, expr in keys.items())
    names = ", ".join(keys)
    rows = _PHASE_ROWS.format(phase=phase)
    windows = f"SELECT {select}, r.run_id, r.stage, r.{start} AS w0, r.{end} AS w1, {tokens} AS tokens {rows} "
    windows += f"AND r.{start} IS NOT NULL AND r.{end} IS NOT NULL AND {where}"
    islands = _islands(windows, f"{names}, run_id, stage")
    if less is None:
        return f"""
    busy AS (
        SELECT {names}, sum(tokens) AS tokens, sum(w1 - w0) AS busy_s FROM ({islands}
        ) GROUP BY ALL
    )"""
    stalls = f"SELECT r.run_id, r.stage, {less[0]} AS w0, {less[1]} AS w1, 0 AS tokens {rows} "
    stalls += f"AND {less[0]} IS NOT NULL AND {less[1]} IS NOT NULL"
    return f"""
    islands AS ({islands}
    ), stalled AS ({_islands(stalls, "run_id, stage")}
    ), overlap AS (
        SELECT i.run_id, i.stage, i.island, sum(greatest(least(i.w1, s.w1) - greatest(i.w0, s.w0), 0)) AS s
        FROM islands i JOIN stalled s ON s.run_id = i.run_id AND s.stage = i.stage
                                     AND s.w0 < i.w1 AND s.w1 > i.w0
        GROUP BY ALL
    ), busy AS (
        SELECT {names}, sum(tokens) AS tokens, sum(w1 - w0 - coalesce(o.s, 0)) AS busy_s
        FROM islands i LEFT JOIN overlap o USING (run_id, stage, island)
        GROUP BY ALL
    )"""


_PREFILL_KEYS = {"endpoint": "ru.endpoint", "prompt_tokens": "r.prompt_tokens", "batch": "st.concurrency"}
_DECODE_KEYS = {"endpoint": "ru.endpoint", "batch": "st.concurrency"}
_DECODES = "r.output_tokens >= 2"  # a one-token request has no decode phase
# A request's prefill as the server timed it (llama.cpp's timings.prompt_ms), ending at its first token: a decode
# step waits while the engine prefills another request's prompt, which is no decode time (NULL: not reported).
_PREFILLING = ("r.first_token_s - r.server_prefill_ms / 1000.0", "r.first_token_s")

# The Prefill phase, per endpoint, prompt length and batch (the stage's concurrency): TTFT, and prefill
# throughput: prompt tokens over the time the batch spent prefilling (sent to first token, see metrics.py).
PREFILL = f"""
CREATE OR REPLACE VIEW prefill AS
WITH {_busy("prefill", _PREFILL_KEYS, "sent_s", "first_token_s", "r.prompt_tokens").strip()},
ttfts AS (
    SELECT ru.endpoint, r.prompt_tokens, st.concurrency AS batch, count(*) AS requests,
           quantile_cont(r.ttft_ms, 0.5) AS ttft_p50_ms, quantile_cont(r.ttft_ms, 0.9) AS ttft_p90_ms
    {_PHASE_ROWS.format(phase="prefill")}
    GROUP BY ALL
)
SELECT t.endpoint, t.prompt_tokens, t.batch, t.requests, t.ttft_p50_ms, t.ttft_p90_ms,
       b.tokens / nullif(b.busy_s, 0) AS prefill_tokens_per_s
FROM ttfts t LEFT JOIN busy b USING (endpoint, prompt_tokens, batch)
"""

# The Decode phase, per endpoint and batch (the stage's concurrency): TPOT; decode throughput, the tokens after
# each request's first over the time the batch spent decoding (first to last token, see metrics.py); and, for
# comparison, the stage's output tokens over its whole span as `summary` has it (prefills included).
DECODE = f"""
CREATE OR REPLACE VIEW decode AS
WITH {_busy("decode", _DECODE_KEYS, "first_token_s", "last_token_s", "r.output_tokens - 1", _DECODES, _PREFILLING)},
stage_rates AS (
    SELECT ru.endpoint, st.concurrency AS batch,
           {pooled_rate("s.output_tokens_per_s", "s.span_s")} AS stage_tokens_per_s
    FROM summary s JOIN runs ru USING (run_id) JOIN stages st USING (run_id, stage)
    WHERE st.phase = 'decode'
    GROUP BY ALL
), tpots AS (
    SELECT ru.endpoint, st.concurrency AS batch, count(*) AS requests,
           quantile_cont(r.tpot_ms, 0.5) AS tpot_p50_ms, quantile_cont(r.tpot_ms, 0.9) AS tpot_p90_ms
    {_PHASE_ROWS.format(phase="decode")}
    GROUP BY ALL
)
SELECT t.endpoint, t.batch, t.requests, t.tpot_p50_ms, t.tpot_p90_ms,
       b.tokens / nullif(b.busy_s, 0) AS decode_tokens_per_s,
       s.stage_tokens_per_s,
       1000.0 / t.tpot_p50_ms AS tokens_per_s_per_user
FROM tpots t LEFT JOIN busy b USING (endpoint, batch) LEFT JOIN stage_rates s USING (endpoint, batch)
"""

# For every pair of endpoints, on the phase-pure figures: the smallest batch at which the first's decode
# throughput passes the second's; the smallest batch at which its decode throughput per user (1000 / TPOT p50)
# falls below the second's; and the smallest prompt length from which its TTFT is the lower, at the smallest
# prefill batch both measured (the study's one-request TTFT). NULL where it never is.
CROSSOVER = """
CREATE OR REPLACE VIEW crossover AS
WITH eps AS (SELECT endpoint FROM decode UNION SELECT endpoint FROM prefill),
pairs AS (SELECT a.endpoint, b.endpoint AS versus FROM eps a, eps b WHERE a.endpoint <> b.endpoint)
SELECT
    p.endpoint,
    p.versus,
    (SELECT min(x.batch) FROM decode x JOIN decode y ON x.batch = y.batch
      WHERE x.endpoint = p.endpoint AND y.endpoint = p.versus
        AND x.decode_tokens_per_s > y.decode_tokens_per_s) AS decode_passes_at_batch,
    (SELECT min(x.batch) FROM decode x JOIN decode y ON x.batch = y.batch
      WHERE x.endpoint = p.endpoint AND y.endpoint = p.versus
        AND x.tokens_per_s_per_user < y.tokens_per_s_per_user) AS per_user_below_at_batch,
    (SELECT min(x.prompt_tokens) FROM prefill x
       JOIN prefill y ON x.prompt_tokens = y.prompt_tokens AND x.batch = y.batch
      WHERE x.endpoint = p.endpoint AND y.endpoint = p.versus AND x.ttft_p50_ms < y.ttft_p50_ms
        AND x.batch = (SELECT min(u.batch) FROM prefill u JOIN prefill v ON u.batch = v.batch
                        WHERE u.endpoint = p.endpoint AND v.endpoint = p.versus)) AS ttft_lower_from_prompt_tokens
FROM pairs p
"""

# One row per run and conversation: its turns, its time from the first send to the last answer's end, and TTFT
# turn by turn (ok requests outside warm-up; a failed turn leaves a NULL in its place).
SESSIONS = f"""
CREATE OR REPLACE VIEW sessions AS
SELECT run_id, session, count(*) AS turns, max(end_s) - min(sent_s) AS total_s,
       list(CASE WHEN {counts()} THEN ttft_ms END ORDER BY turn, request_id) AS ttft_by_turn_ms,
       {cached_share()} AS cached_share
FROM requests
WHERE session IS NOT NULL AND status <> 'not_sent'
GROUP BY run_id, session
"""

# One row per run and agent task (docs/agents.md): its calls; its latency, from the first send to the last answer;
# its critical path, the longest chain of calls each of which waited for the one before (depends_on), as the sum of
# their tool time and E2E latency; the same chain on the idle endpoint, each call at the latency its stage's
# `tasks.idle_stage` (lone requests) gives its uncached prompt and its output (TTFT a line over uncached prompt
# tokens, TPOT their median); the slowdown, latency over that; and the SLO (complete, within slo.task_s, every
# call's TTFT within slo.ttft_ms). Latency figures are NULL unless every call answered.
TASKS = f"""
CREATE OR REPLACE VIEW tasks AS
WITH RECURSIVE idle AS (
    SELECT s.run_id, s.stage,
           coalesce(regr_intercept(b.ttft_ms, b.uncached), avg(b.ttft_ms)) AS ttft_ms,
           coalesce(regr_slope(b.ttft_ms, b.uncached), 0) AS ttft_per_token_ms,
           coalesce(median(b.tpot_ms), 0) AS tpot_ms
    FROM stages s
    JOIN (SELECT *, {SERVER_PROMPT} - coalesce(cached_tokens, 0) AS uncached FROM requests WHERE {counts()}) b
      ON b.run_id = s.run_id AND b.stage = s.spec->>'$.tasks.idle_stage'
    GROUP BY s.run_id, s.stage
), calls AS (
    SELECT r.run_id, r.request_id, r.task_id, r.status, r.depends_on, coalesce(r.tool_ms, 0) AS tool_ms, r.e2e_ms,
           i.ttft_ms + i.ttft_per_token_ms * ({SERVER_PROMPT} - coalesce(r.cached_tokens, 0))
               + greatest(r.output_tokens - 1, 0) * i.tpot_ms AS idle_e2e_ms
    FROM requests r LEFT JOIN idle i USING (run_id, stage)
    WHERE r.task_id IS NOT NULL
), edges AS (
    SELECT run_id, request_id, unnest(depends_on) AS dep FROM calls
), chain(run_id, request_id, total_ms, idle_ms) AS (
    SELECT run_id, request_id, e2e_ms, idle_e2e_ms FROM calls WHERE status = 'ok' AND len(depends_on) = 0
    UNION ALL
    SELECT e.run_id, e.request_id, c.total_ms + n.tool_ms + n.e2e_ms, c.idle_ms + n.tool_ms + n.idle_e2e_ms
    FROM chain c
    JOIN edges e ON e.run_id = c.run_id AND e.dep = c.request_id
    JOIN calls n ON n.run_id = e.run_id AND n.request_id = e.request_id AND n.status = 'ok'
), longest AS (
    SELECT c.run_id, n.task_id, max(c.total_ms) AS critical_path_ms, max(c.idle_ms) AS idle_critical_path_ms
    FROM chain c JOIN calls n USING (run_id, request_id) GROUP BY c.run_id, n.task_id
), per_task AS (
    SELECT r.run_id, r.task_id, any_value(r.stage) AS stage, coalesce(max(r.task_calls), count(*)) AS calls,
           count(*) FILTER (WHERE r.status = 'ok') AS answered,
           count(*) FILTER (WHERE r.status = 'ok') = coalesce(max(r.task_calls), count(*)) AS complete,
           min(r.sent_s) AS first_sent_s, max(r.end_s) AS last_end_s,
           sum(r.prompt_tokens) AS prompt_tokens, sum(r.output_tokens) AS output_tokens,
           {cached_share()} AS cached_share,
           max(r.ttft_ms) AS max_ttft_ms
    FROM requests r WHERE r.task_id IS NOT NULL GROUP BY r.run_id, r.task_id
)
SELECT t.run_id, t.task_id, t.stage, t.calls, t.answered, t.complete, t.first_sent_s, t.last_end_s,
       CASE WHEN t.complete THEN (t.last_end_s - t.first_sent_s) * 1000 END AS task_latency_ms,
       CASE WHEN t.complete THEN l.critical_path_ms END AS critical_path_ms,
       CASE WHEN t.complete THEN l.idle_critical_path_ms END AS idle_critical_path_ms,
       CASE WHEN t.complete THEN (t.last_end_s - t.first_sent_s) * 1000 / l.idle_critical_path_ms END AS slowdown,
       t.prompt_tokens, t.output_tokens, t.cached_share,
       t.max_ttft_ms,
       t.complete
           AND coalesce((t.last_end_s - t.first_sent_s) <= (s.spec->>'$.slo.task_s')::DOUBLE, true)
           AND coalesce(t.max_ttft_ms <= (s.spec->>'$.slo.ttft_ms')::DOUBLE, true) AS slo_ok
FROM per_task t
LEFT JOIN longest l USING (run_id, task_id)
LEFT JOIN stages s ON s.run_id = t.run_id AND s.stage = t.stage
"""

# One row per run and stage of agent tasks: how many, their latency and slowdown at p50 and p90, the cached share
# of their prompts, the share that met the SLO, and task goodput: tasks that met it per second of the stage's span.
TASK_SUMMARY = f"""
CREATE OR REPLACE VIEW task_summary AS
WITH cache AS (
    SELECT run_id, stage, {cached_share()} AS cached_share
    FROM requests WHERE task_id IS NOT NULL AND status = 'ok' GROUP BY run_id, stage
)
SELECT t.run_id, t.stage, count(*) AS tasks, count(*) FILTER (WHERE t.complete) AS complete,
       quantile_cont(t.task_latency_ms, 0.5) AS task_latency_p50_ms,
       quantile_cont(t.task_latency_ms, 0.9) AS task_latency_p90_ms,
       quantile_cont(t.slowdown, 0.5) AS slowdown_p50, quantile_cont(t.slowdown, 0.9) AS slowdown_p90,
       any_value(c.cached_share) AS cached_share,
       count(*) FILTER (WHERE t.slo_ok) AS slo_met, avg(t.slo_ok::INTEGER) AS slo_share,
       count(*) FILTER (WHERE t.slo_ok) / nullif(max(t.last_end_s) - min(t.first_sent_s), 0) AS task_goodput_per_s
FROM tasks t LEFT JOIN cache c USING (run_id, stage)
GROUP BY t.run_id, t.stage
"""

# The server's own Prometheus samples, taken during the run (docs/metrics.md): every sample as scraped.
SERVER_METRICS = """
CREATE TABLE IF NOT EXISTS server_metrics (
    run_id VARCHAR NOT NULL,
    t_s DOUBLE NOT NULL,              -- run clock: when the scrape's answer came (the baseline: 0)
    name VARCHAR NOT NULL,            -- the sample's name in the exposition text
    labels VARCHAR NOT NULL,          -- its labels as a JSON object, '' when it has none
    value DOUBLE NOT NULL
)"""

# Which server family's name stands for which canonical series (loadgen/server_metrics/names.py fills it).
SERVER_METRIC_NAMES = """
CREATE TABLE IF NOT EXISTS server_metric_names (
    series VARCHAR NOT NULL,
    server VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    source VARCHAR NOT NULL
)"""

# The canonical series per scrape: counts and counters summed over label sets (engines, ranks), KV usage the
# fullest one's.
SERVER_SERIES = """
CREATE OR REPLACE VIEW server_series AS
SELECT m.run_id, m.t_s, n.series,
       CASE WHEN n.series = 'kv_usage' THEN max(m.value) ELSE sum(m.value) END AS value
FROM server_metrics m JOIN (SELECT DISTINCT series, name FROM server_metric_names) n USING (name)
GROUP BY m.run_id, m.t_s, n.series
"""

# Each request beside the server's state at its send: the last scrape at or before it.
REQUEST_SERVER_STATE = """
CREATE OR REPLACE VIEW request_server_state AS
WITH state AS (
    SELECT run_id, t_s,
           max(value) FILTER (WHERE series = 'running') AS running,
           max(value) FILTER (WHERE series = 'waiting') AS waiting,
           max(value) FILTER (WHERE series = 'kv_usage') AS kv_usage
    FROM server_series GROUP BY run_id, t_s
)
SELECT r.run_id, r.request_id, r.stage, r.sent_s, r.ttft_ms, r.status, s.t_s AS server_t_s,
       s.running, s.waiting, s.kv_usage
FROM requests r ASOF LEFT JOIN state s ON r.run_id = s.run_id AND r.sent_s >= s.t_s
WHERE r.sent_s IS NOT NULL
"""

# A search's trials, each judged apart: whether its stage ended at saturation, or held its sends back (a median
# lag over HELD_BACK_MS: the in-flight cap or the client, not the server, set the pace).
HELD_BACK_MS = 100
TRIAL_STAGES = f"""
CREATE OR REPLACE VIEW trial_stages AS
-- requests: those judged (a cancelled one says nothing of the server's SLO); in a stage of agent tasks, its tasks,
-- each judged whole (task_summary)
SELECT t.run_id, t.stage, t.over, t.load, t.target, coalesce(ts.slo_met, s.slo_met, 0) AS slo_met,
       coalesce(ts.tasks, s.requests - s.cancelled, 0) AS requests, coalesce(ts.slo_share, s.slo_share) AS slo_share,
       s.lag_p50_ms, s.output_tokens_per_s,
       st.ended IS NOT NULL AS saturated, coalesce(s.lag_p50_ms > {HELD_BACK_MS}, FALSE) AS held_back
FROM trials t JOIN stages st USING (run_id, stage) LEFT JOIN summary s USING (run_id, stage)
LEFT JOIN task_summary ts USING (run_id, stage)
"""

# A search's loads (a load's repeats pooled): a load passes when the share of its requests meeting every SLO
# reaches the target and none of its trials ended saturated or held back.
TRIAL_LOADS = """
CREATE OR REPLACE VIEW trial_loads AS
SELECT t.run_id, ru.endpoint, t.over, t.load, any_value(t.target) AS target, count(*) AS trials,
       sum(t.requests) AS requests, sum(t.slo_met) / nullif(sum(t.requests), 0) AS slo_share,
       bool_or(t.saturated) AS saturated, bool_or(t.held_back) AS held_back,
       coalesce(sum(t.slo_met) / nullif(sum(t.requests), 0) >= any_value(t.target), FALSE)
           AND NOT bool_or(t.saturated OR t.held_back) AS passed,
       max(t.output_tokens_per_s) AS output_tokens_per_s
FROM trial_stages t JOIN runs ru USING (run_id)
GROUP BY t.run_id, ru.endpoint, t.over, t.load
"""

# Per search: the highest load that passed below the lowest that failed, the output tokens per second at that
# load, and, where the endpoint file gives a price per hour, what a million output tokens cost there.
CAPACITY = """
CREATE OR REPLACE VIEW capacity AS
WITH best AS (
    SELECT run_id, endpoint, over, max(load) FILTER (WHERE passed) AS passing FROM trial_loads
    GROUP BY run_id, endpoint, over
)
SELECT b.run_id, b.endpoint, b.over, b.passing AS highest_passing,
       (SELECT min(l.load) FROM trial_loads l WHERE l.run_id = b.run_id AND NOT l.passed AND l.requests > 0
            AND l.load > coalesce(b.passing, 0)) AS lowest_failing,
       p.output_tokens_per_s,
       TRY_CAST(ru.spec->'endpoint'->'price'->>'per_hour' AS DOUBLE) AS price_per_hour,
       ru.spec->'endpoint'->'price'->>'currency' AS currency,
       TRY_CAST(ru.spec->'endpoint'->'price'->>'per_hour' AS DOUBLE) / nullif(p.output_tokens_per_s * 3600, 0)
           * 1e6 AS cost_per_million_output_tokens
FROM best b JOIN runs ru USING (run_id)
LEFT JOIN trial_loads p ON p.run_id = b.run_id AND p.load = b.passing
"""

VIEWS = (
    SUMMARY,
    RUN_SUMMARY,
    ERRORS,
    PREFILL,
    DECODE,
    CROSSOVER,
    SESSIONS,
    TASKS,
    TASK_SUMMARY,
    SERVER_SERIES,
    REQUEST_SERVER_STATE,
    TRIAL_STAGES,
    TRIAL_LOADS,
    CAPACITY,
)
# Created in this order; a writer adds the columns `added_columns` names between the tables and the views.
TABLES = (RUNS, REQUESTS, EVENTS, STAGES, STAGES_ENDED, TRIALS, WORKERS, SERVER_METRICS, SERVER_METRIC_NAMES)
ALL = (*TABLES, *VIEWS)


def names(kind: str) -> list[str]:
    """The tables (kind "TABLE") or views ("VIEW") that ALL creates, in order."""
    pattern = r"CREATE TABLE IF NOT EXISTS (\w+)" if kind == "TABLE" else r"CREATE OR REPLACE VIEW (\w+)"
    return [m.group(1) for ddl in ALL if (m := re.search(pattern, ddl))]
