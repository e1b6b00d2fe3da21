"""Simulator configuration: the static `SimulatorConfig`, the runtime-patchable settings, and the CLI parser."""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

FAIL_MODES = ("error", "hang", "disconnect")


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything `python -m simulator` accepts; defaults mirror a mid-size vLLM deployment."""

    served_model_names: tuple[str, ...] = ("sim-model",)
    host: str = "127.0.0.1"
    port: int = 8001
    max_model_len: int = 32768
    ttft_ms: float = 80.0
    itl_ms: float = 15.0
    prefill_ms_per_1k_tokens: float = 20.0
    max_num_seqs: int = 256
    failure_rate: float = 0.0
    fail_mode: str = "error"
    disconnect_after_chunks: int = 3
    prefix_cache: bool = True
    prefix_cache_speedup: float = 0.8
    prefix_cache_blocks: int = 8192
    block_size: int = 16
    kv_cache_tokens: int = 524288
    seed: int = 0
    embedding_dim: int = 1024
    model_version: str = "sim-v1"
    replica_id: str | None = None
    load_seconds: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.served_model_names, str):
            object.__setattr__(self, "served_model_names", (self.served_model_names,))
        else:
            object.__setattr__(self, "served_model_names", tuple(self.served_model_names))
        if not self.served_model_names or not all(self.served_model_names):
            raise ValueError("at least one non-empty served model name is required")
        for name in (
            "max_model_len",
            "max_num_seqs",
            "prefix_cache_blocks",
            "block_size",
            "kv_cache_tokens",
            "embedding_dim",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.port < 0 or self.port > 65535:
            raise ValueError("port must be within 0..65535")
        if self.load_seconds < 0:
            raise ValueError("load_seconds must be >= 0")
        validate_runtime_patch({name: getattr(self, name) for name in RUNTIME_FIELDS})

    @property
    def model_name(self) -> str:
        """The primary served name: vLLM labels its metrics with it."""
        return self.served_model_names[0]


@dataclass
class RuntimeSettings:
    """The latency and failure knobs that `POST /_sim/config` may change while the simulator runs."""

    ttft_ms: float
    itl_ms: float
    prefill_ms_per_1k_tokens: float
    max_num_seqs: int
    failure_rate: float
    fail_mode: str
    disconnect_after_chunks: int
    prefix_cache: bool
    prefix_cache_speedup: float
    unhealthy: bool = field(default=False)

    @classmethod
    def from_config(cls, config: SimulatorConfig) -> RuntimeSettings:
        return cls(**validate_runtime_patch({name: getattr(config, name) for name in RUNTIME_FIELDS}))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RUNTIME_FIELDS = (
    "ttft_ms",
    "itl_ms",
    "prefill_ms_per_1k_tokens",
    "max_num_seqs",
    "failure_rate",
    "fail_mode",
    "disconnect_after_chunks",
    "prefix_cache",
    "prefix_cache_speedup",
)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_runtime_patch(patch: dict[str, Any]) -> dict[str, Any]:
    """Check a partial settings dict and return it normalised; raises ValueError naming the bad field."""
    allowed = set(RUNTIME_FIELDS) | {"unhealthy"}
    clean: dict[str, Any] = {}
    for key, value in patch.items():
        if key not in allowed:
            raise ValueError(f"unknown setting {key!r}; allowed: {', '.join(sorted(allowed))}")
        if key in ("ttft_ms", "itl_ms", "prefill_ms_per_1k_tokens"):
            if not _is_number(value) or value < 0:
                raise ValueError(f"{key} must be a number >= 0")
            clean[key] = float(value)
        elif key in ("failure_rate", "prefix_cache_speedup"):
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be a number within 0..1")
            clean[key] = float(value)
        elif key == "max_num_seqs":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError("max_num_seqs must be an integer >= 1")
            clean[key] = value
        elif key == "disconnect_after_chunks":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError("disconnect_after_chunks must be an integer >= 0")
            clean[key] = value
        elif key == "fail_mode":
            if value not in FAIL_MODES:
                raise ValueError(f"fail_mode must be one of {', '.join(FAIL_MODES)}")
            clean[key] = value
        else:  # prefix_cache, unhealthy
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be a boolean")
            clean[key] = value
    return clean


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Fake vLLM engine speaking the OpenAI-compatible HTTP API, for running without a GPU.",
    )
    d = SimulatorConfig()
    parser.add_argument("--host", default=d.host)
    parser.add_argument("--port", type=int, default=d.port, help="0 picks a free port")
    parser.add_argument(
        "--served-model-name",
        dest="served_model_names",
        action="append",
        metavar="NAME",
        help=f"model id clients use; repeat for aliases (default: {d.model_name})",
    )
    parser.add_argument("--max-model-len", type=int, default=d.max_model_len)
    parser.add_argument("--ttft-ms", type=float, default=d.ttft_ms, help="base time to first token")
    parser.add_argument("--itl-ms", type=float, default=d.itl_ms, help="inter-token latency")
    parser.add_argument(
        "--prefill-ms-per-1k-tokens",
        type=float,
        default=d.prefill_ms_per_1k_tokens,
        help="extra time to first token per 1000 prompt tokens",
    )
    parser.add_argument(
        "--max-num-seqs", type=int, default=d.max_num_seqs, help="requests running at once; the rest wait"
    )
    parser.add_argument(
        "--failure-rate",
        type=float,
        default=d.failure_rate,
        help="fraction of inference requests that fail in --fail-mode",
    )
    parser.add_argument("--fail-mode", choices=FAIL_MODES, default=d.fail_mode)
    parser.add_argument(
        "--disconnect-after-chunks",
        type=int,
        default=d.disconnect_after_chunks,
        help="in --fail-mode disconnect, token chunks sent before the connection is cut",
    )
    parser.add_argument("--prefix-cache", action=argparse.BooleanOptionalAction, default=d.prefix_cache)
    parser.add_argument(
        "--prefix-cache-speedup",
        type=float,
        default=d.prefix_cache_speedup,
        help="TTFT is multiplied by (1 - speedup * cached fraction of the prompt)",
    )
    parser.add_argument(
        "--prefix-cache-blocks",
        type=int,
        default=d.prefix_cache_blocks,
        help="LRU capacity of the prefix cache, in blocks",
    )
    parser.add_argument("--block-size", type=int, default=d.block_size, help="tokens per KV block")
    parser.add_argument(
        "--kv-cache-tokens", type=int, default=d.kv_cache_tokens, help="KV capacity used for vllm:kv_cache_usage_perc"
    )
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--embedding-dim", type=int, default=d.embedding_dim)
    parser.add_argument("--model-version", default=d.model_version, help="reported as system_fingerprint")
    parser.add_argument("--replica-id", default=None, help="x-simulator-replica header (default HOST:PORT)")
    parser.add_argument(
        "--load-seconds", type=float, default=d.load_seconds, help="/health answers 503 for this long after start"
    )
    return parser


def config_from_args(argv: list[str] | None = None) -> SimulatorConfig:
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    values = vars(args)
    if not values["served_model_names"]:
        values.pop("served_model_names")
    try:
        return SimulatorConfig(**values)
    except ValueError as exc:
        parser.error(str(exc))
        raise  # parser.error exits; this keeps type checkers informed
