"""Counters the server exposes at GET /metrics in the Prometheus text format."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Metrics:
    started: float = field(default_factory=time.monotonic)
    requests: dict[str, int] = field(default_factory=dict)  # by route and status
    tokens_generated: int = 0
    requests_cancelled: int = 0
    queue_depth: int = 0
    active_rows: int = 0
    engine_steps: int = 0
    engine_row_steps: int = 0  # rows over all steps: / engine_steps is the mean batch
    engine_batch_max: int = 0  # the most rows one engine step ran
    prefix_batches: int = 0  # batched builds of deferred prefixes (LLaDA-o: one ViT forward each)
    prefixes_built: int = 0

    def count(self, route: str, status: int) -> None:
        key = f'route="{route}",status="{status}"'
        self.requests[key] = self.requests.get(key, 0) + 1

    def render(self) -> str:
        uptime = max(time.monotonic() - self.started, 1e-9)
        lines = ["# TYPE omnidlm_requests_total counter"]
        lines += [f"omnidlm_requests_total{{{key}}} {n}" for key, n in sorted(self.requests.items())]
        lines += [
            "# TYPE omnidlm_tokens_generated_total counter",
            f"omnidlm_tokens_generated_total {self.tokens_generated}",
            "# TYPE omnidlm_requests_cancelled_total counter",
            f"omnidlm_requests_cancelled_total {self.requests_cancelled}",
            "# TYPE omnidlm_tokens_per_second gauge",
            f"omnidlm_tokens_per_second {self.tokens_generated / uptime:.3f}",
            "# TYPE omnidlm_queue_depth gauge",
            f"omnidlm_queue_depth {self.queue_depth}",
            "# TYPE omnidlm_active_rows gauge",
            f"omnidlm_active_rows {self.active_rows}",
            "# TYPE omnidlm_engine_steps_total counter",
            f"omnidlm_engine_steps_total {self.engine_steps}",
            "# TYPE omnidlm_engine_row_steps_total counter",
            f"omnidlm_engine_row_steps_total {self.engine_row_steps}",
            "# TYPE omnidlm_engine_batch_max gauge",
            f"omnidlm_engine_batch_max {self.engine_batch_max}",
            "# TYPE omnidlm_prefix_batches_total counter",
            f"omnidlm_prefix_batches_total {self.prefix_batches}",
            "# TYPE omnidlm_prefixes_built_total counter",
            f"omnidlm_prefixes_built_total {self.prefixes_built}",
        ]
        return "\n".join(lines) + "\n"
