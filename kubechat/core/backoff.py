"""The back-off of supervisors: loops that keep a connection up for as long as the process runs.

An MCP server's session and a Kubernetes list-then-watch are supervised, not retried: they never
give up, a connection that held for a while forgets the failures before it, and some endings
are not failures at all (a watch that expired). Retrying one call until it succeeds or runs out
is tenacity's job, and the Elasticsearch stores use it; its retry loop does not fit these, so
they share this schedule instead (docs/design-decisions.md, "Retries").
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Waits after consecutive failures: `delays` in turn, then the last one for ever, each
    spread by ±`jitter` (a fraction) so that replicas turned away together do not return together."""

    delays: tuple[float, ...]
    jitter: float = 0.0
    failures: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not self.delays or min(self.delays) < 0 or not 0 <= self.jitter < 1:
            raise ValueError("delays must be non-negative and given; jitter in [0, 1)")

    def next_delay(self) -> float:
        """How long to wait after one more failure."""
        delay = self.delays[min(self.failures, len(self.delays) - 1)]
        self.failures += 1
        return delay * random.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else delay

    def reset(self) -> None:
        """A connection held: the next failure waits the first delay again."""
        self.failures = 0
