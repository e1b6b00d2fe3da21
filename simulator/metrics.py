"""Prometheus exposition of the metrics a vLLM server publishes, under vLLM's names."""

from __future__ import annotations

from bisect import bisect_left

# Bucket bounds copied from vLLM's own histograms so dashboards built for vLLM read the simulator unchanged.
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)


class Histogram:
    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last slot is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times
        self.count += times

    def render(self, name: str, help_text: str, labels: str, out: list[str]) -> None:
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} histogram\n")
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append(f'{name}_bucket{{{labels},le="{bound}"}} {running}\n')
        out.append(f'{name}_bucket{{{labels},le="+Inf"}} {self.count}\n')
        out.append(f"{name}_sum{{{labels}}} {self.sum!r}\n")
        out.append(f"{name}_count{{{labels}}} {self.count}\n")


class EngineMetrics:
    """Counters and histograms; gauges are read from the engine at scrape time."""

    def __init__(self, model_name: str) -> None:
        escaped = model_name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        self.labels = f'model_name="{escaped}"'
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.request_success: dict[str, int] = {"stop": 0, "length": 0, "abort": 0}
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)

    def render(self, *, running: int, waiting: int, kv_usage: float) -> str:
        labels = self.labels
        out: list[str] = []

        def simple(name: str, kind: str, help_text: str, value: float) -> None:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n{name}{{{labels}}} {value}\n")

        simple("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", running)
        simple("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", waiting)
        simple("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", kv_usage)
        simple(
            "vllm:gpu_cache_usage_perc",
            "gauge",
            "GPU KV-cache usage (pre-V1 name). 1 means 100 percent usage.",
            kv_usage,
        )
        simple("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", self.prompt_tokens)
        simple(
            "vllm:generation_tokens_total", "counter", "Number of generation tokens processed.", self.generation_tokens
        )
        simple(
            "vllm:prefix_cache_queries_total",
            "counter",
            "Prefix cache queries, in terms of number of queried tokens.",
            self.prefix_cache_queries,
        )
        simple(
            "vllm:prefix_cache_hits_total",
            "counter",
            "Prefix cache hits, in terms of number of cached tokens.",
            self.prefix_cache_hits,
        )
        name = "vllm:request_success_total"
        out.append(f"# HELP {name} Count of successfully processed requests.\n# TYPE {name} counter\n")
        for reason, value in self.request_success.items():
            out.append(f'{name}{{{labels},finished_reason="{reason}"}} {value}\n')
        self.ttft.render(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", labels, out
        )
        self.itl.render("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", labels, out)
        self.itl.render(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds (pre-V1 name).",
            labels,
            out,
        )
        self.e2e.render(
            "vllm:e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.", labels, out
        )
        return "".join(out)
