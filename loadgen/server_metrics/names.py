"""The server families' Prometheus names for a few canonical series, each with where the name is defined.

One source of truth: the store writes this table into every database (`server_metric_names`), and the
`server_series` view maps the scraped samples through it.
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
}

_VLLM_V1 = "vllm-project/vllm vllm/v1/metrics/loggers.py; docs.vllm.ai/en/stable/usage/metrics/"
_VLLM_V0 = "vllm-project/vllm vllm/engine/metrics.py (V0; removed by vllm PR 29330)"
_SGLANG = "sgl-project/sglang python/sglang/srt/metrics/collector.py (--enable-metrics)"
_TGI = "huggingface/text-generation-inference docs/source/reference/metrics.md"
_LLAMACPP = "ggml-org/llama.cpp tools/server/README.md, GET /metrics (--metrics)"

NAMES: tuple[Name, ...] = (
    Name("running", "vllm", "vllm:num_requests_running", _VLLM_V1),
    Name("waiting", "vllm", "vllm:num_requests_waiting", _VLLM_V1),
    Name("kv_usage", "vllm", "vllm:kv_cache_usage_perc", _VLLM_V1 + " (a fraction despite its name)"),
    Name("kv_usage", "vllm", "vllm:gpu_cache_usage_perc", _VLLM_V0),
    Name("prefix_cache_queries", "vllm", "vllm:prefix_cache_queries_total", _VLLM_V1),
    Name("prefix_cache_hits", "vllm", "vllm:prefix_cache_hits_total", _VLLM_V1),
    Name("prompt_tokens", "vllm", "vllm:prompt_tokens_total", _VLLM_V1),
    Name("generation_tokens", "vllm", "vllm:generation_tokens_total", _VLLM_V1),
    Name("running", "sglang", "sglang:num_running_reqs", _SGLANG),
    Name("waiting", "sglang", "sglang:num_queue_reqs", _SGLANG),
    Name("kv_usage", "sglang", "sglang:token_usage", _SGLANG),
    Name("prefix_cache_queries", "sglang", "sglang:prompt_tokens_total", _SGLANG + " (counted as requests finish)"),
    Name("prefix_cache_hits", "sglang", "sglang:cached_tokens_total", _SGLANG + " (counted as requests finish)"),
    Name("prompt_tokens", "sglang", "sglang:prompt_tokens_total", _SGLANG),
    Name("generation_tokens", "sglang", "sglang:generation_tokens_total", _SGLANG),
    Name("running", "tgi", "tgi_batch_current_size", _TGI),
    Name("waiting", "tgi", "tgi_queue_size", _TGI),
    Name("prompt_tokens", "tgi", "tgi_request_input_length_sum", _TGI + " (a histogram's sum)"),
    Name("generation_tokens", "tgi", "tgi_request_generated_tokens_sum", _TGI + " (a histogram's sum)"),
    Name("running", "llamacpp", "llamacpp:requests_processing", _LLAMACPP),
    Name("waiting", "llamacpp", "llamacpp:requests_deferred", _LLAMACPP),
    Name("kv_usage", "llamacpp", "llamacpp:kv_cache_usage_ratio", _LLAMACPP + " (older builds; removed in 2025)"),
    Name("prompt_tokens", "llamacpp", "llamacpp:prompt_tokens_total", _LLAMACPP),
    Name("generation_tokens", "llamacpp", "llamacpp:tokens_predicted_total", _LLAMACPP),
)
