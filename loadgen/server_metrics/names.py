"""The server families' Prometheus names for a few canonical series, each with where the name is defined.

One source of truth: the store writes this table into every database (`server_metric_names`), and the
`server_series` view maps the scraped samples through it.

A series is the sum of every sample mapped to it in a scrape: over label sets (engines, ranks) and over names, so
a family that exports a figure in parts maps each part (llama.cpp's prompt tokens: processed plus cached). Names
that stand in for one another across a family's versions are mapped alike; they are never exported together,
except where the series takes the largest value rather than the sum (`kv_usage`, vLLM's V0 and V1 names).
"""

from __future__ import annotations

from typing import NamedTuple


class Name(NamedTuple):
    series: str  # running | waiting | kv_usage | prefix_cache_queries | prefix_cache_hits | prompt_tokens | ...
    server: str  # the family that exposes it
    name: str  # the sample's name in the exposition text
    source: str


SERIES = {
    "running": "requests in the running batch (gauge)",
    "waiting": "requests queued, not yet scheduled (gauge)",
    "kv_usage": "KV-cache usage, 0 to 1 (gauge)",
    "prefix_cache_queries": "prompt tokens looked up in the prefix cache (counter)",
    "prefix_cache_hits": "prompt tokens found in the prefix cache (counter)",
    "prompt_tokens": "prompt tokens processed (counter)",
    "generation_tokens": "output tokens generated (counter)",
    "ttft_seconds": "the server's own TTFTs, summed, in seconds (a histogram's _sum, counter)",
    "ttft_count": "the requests whose TTFT the server counted (that histogram's _count, counter)",
}

_VLLM_V1 = "vllm-project/vllm vllm/v1/metrics/loggers.py; docs.vllm.ai/en/stable/usage/metrics/"
_VLLM_V0 = "vllm-project/vllm vllm/engine/metrics.py (V0; removed by vllm PR 29330)"
_SGLANG = "sgl-project/sglang python/sglang/srt/metrics/collector.py (--enable-metrics)"
_TGI = "huggingface/text-generation-inference docs/source/reference/metrics.md"
_LLAMACPP = "ggml-org/llama.cpp tools/server/README.md, GET /metrics (--metrics)"
# Since prompt-cache reuse is counted apart, llama.cpp's prompt_tokens_total holds only the tokens it computed:
# the prompt as sent is that plus prompt_tokens_cached_total (usage.prompt_tokens = processed + cached).
_LLAMACPP_TOKENS = (
    "ggml-org/llama.cpp tools/server/server-task.cpp, server_task_result_metrics::to_metrics() "
    "(prompt_tokens_total: 'processed, excluding cached tokens'; prompt_tokens_cached_total: 'reused from the "
    "cache'; checked against xllamacpp 2026.10's server)"
)
_LLAMACPP_PROMPT = _LLAMACPP_TOKENS + ": the prompt is the sum of the two counters"
_LLAMACPP_PROMPT_PARTS = ("llamacpp:prompt_tokens_total", "llamacpp:prompt_tokens_cached_total")

NAMES: tuple[Name, ...] = (
    Name("running", "vllm", "vllm:num_requests_running", _VLLM_V1),
    Name("waiting", "vllm", "vllm:num_requests_waiting", _VLLM_V1),
    Name("kv_usage", "vllm", "vllm:kv_cache_usage_perc", _VLLM_V1 + " (a fraction despite its name)"),
    Name("kv_usage", "vllm", "vllm:gpu_cache_usage_perc", _VLLM_V0),
    Name("prefix_cache_queries", "vllm", "vllm:prefix_cache_queries_total", _VLLM_V1),
    Name("prefix_cache_hits", "vllm", "vllm:prefix_cache_hits_total", _VLLM_V1),
    Name("prompt_tokens", "vllm", "vllm:prompt_tokens_total", _VLLM_V1),
    Name("generation_tokens", "vllm", "vllm:generation_tokens_total", _VLLM_V1),
    # From the request's arrival at the API server to its first token: the HTTP path is not in it.
    Name("ttft_seconds", "vllm", "vllm:time_to_first_token_seconds_sum", _VLLM_V1),
    Name("ttft_count", "vllm", "vllm:time_to_first_token_seconds_count", _VLLM_V1),
    Name("running", "sglang", "sglang:num_running_reqs", _SGLANG),
    Name("waiting", "sglang", "sglang:num_queue_reqs", _SGLANG),
    Name("kv_usage", "sglang", "sglang:token_usage", _SGLANG),
    Name("prefix_cache_queries", "sglang", "sglang:prompt_tokens_total", _SGLANG + " (counted as requests finish)"),
    Name("prefix_cache_hits", "sglang", "sglang:cached_tokens_total", _SGLANG + " (counted as requests finish)"),
    Name("prompt_tokens", "sglang", "sglang:prompt_tokens_total", _SGLANG),
    Name("generation_tokens", "sglang", "sglang:generation_tokens_total", _SGLANG),
    Name("ttft_seconds", "sglang", "sglang:time_to_first_token_seconds_sum", _SGLANG),
    Name("ttft_count", "sglang", "sglang:time_to_first_token_seconds_count", _SGLANG),
    Name("running", "tgi", "tgi_batch_current_size", _TGI),
    Name("waiting", "tgi", "tgi_queue_size", _TGI),
    Name("prompt_tokens", "tgi", "tgi_request_input_length_sum", _TGI + " (a histogram's sum)"),
    Name("generation_tokens", "tgi", "tgi_request_generated_tokens_sum", _TGI + " (a histogram's sum)"),
    Name("running", "llamacpp", "llamacpp:requests_processing", _LLAMACPP),
    Name("waiting", "llamacpp", "llamacpp:requests_deferred", _LLAMACPP),
    # Current builds export no KV gauge: llama.cpp PR 13660 (May 2025) removed this one as too internal, and
    # PR 24010, which would add one back, is not merged. Kept for servers built before.
    Name("kv_usage", "llamacpp", "llamacpp:kv_cache_usage_ratio", _LLAMACPP + " (builds before PR 13660 only)"),
    *(
        Name(series, "llamacpp", part, _LLAMACPP_PROMPT)
        for series in ("prefix_cache_queries", "prompt_tokens")
        for part in _LLAMACPP_PROMPT_PARTS
    ),
    Name("prefix_cache_hits", "llamacpp", "llamacpp:prompt_tokens_cached_total", _LLAMACPP_TOKENS),
    Name("generation_tokens", "llamacpp", "llamacpp:tokens_predicted_total", _LLAMACPP),
)
