"""The database and the channel layer as this process sees them: up, or away since when.

Code that meets an outage (a failed write it will retry, a publish it drops) reports it here
instead of logging it: the outage is logged once, when it starts, and once more, when the first
operation succeeds again, with what failed meanwhile counted by kind. Metrics count outages,
their seconds and the failed operations (streamapp/metrics.py).
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from . import metrics

logger = logging.getLogger("streamapp.outages")

# A dependency that is not up: these exceptions (anywhere in their class's MRO, by name, so that
# no client library is imported here) say the server is away, not that the request was wrong.
UNAVAILABLE_NAMES = frozenset({
    "ConnectionError", "TimeoutError", "OSError", "BusyLoadingError", "ConnectionClosedError",
})


def is_unavailable(exc: BaseException) -> bool:
    """Does ``exc`` say its server is away (refused, reset, timed out)?"""
    return any(cls.__name__ in UNAVAILABLE_NAMES for cls in type(exc).__mro__)


class Outage:
    """One dependency's availability in this process: outage start and end, logged once each."""

    def __init__(self, dependency: str) -> None:
        self.dependency = dependency
        self.since: float | None = None  # monotonic start of the current outage
        self.ended_at = float("-inf")  # monotonic end of the last one
        self.failed_by_kind: Counter[str] = Counter()

    def reset(self) -> None:
        """Forget any outage (tests: one test's outage is not the next one's)."""
        self.since, self.ended_at = None, float("-inf")
        self.failed_by_kind.clear()

    @property
    def down(self) -> bool:
        return self.since is not None

    def seconds_since_return(self) -> float:
        """How long ago the last outage ended (infinite when there was none)."""
        return time.monotonic() - self.ended_at

    def failed(self, what: str, exc: BaseException) -> None:
        """An operation of kind ``what`` failed because the dependency is away."""
        if self.since is None:
            self.since = time.monotonic()
            self.failed_by_kind.clear()
            logger.warning(
                "%s unavailable, riding it out what=%s error=%s: %s",
                self.dependency, what, type(exc).__name__, " ".join(str(exc).split()),
            )
            metrics.outage_started(self.dependency)
        self.failed_by_kind[what] += 1
        metrics.outage_failure(self.dependency)

    def answered(self) -> None:
        """An operation succeeded: an outage under way is over."""
        if self.since is None:
            return
        now = time.monotonic()
        seconds, self.since, self.ended_at = now - self.since, None, now
        counts = " ".join(
            f"{kind.replace(' ', '_')}={count}"
            for kind, count in sorted(self.failed_by_kind.items())
        )
        logger.warning(
            "%s back after %.1f s failed=%d %s",
            self.dependency, seconds, sum(self.failed_by_kind.values()), counts,
        )
        metrics.outage_ended(self.dependency, seconds)


database = Outage("database")
channel_layer = Outage("channel layer")


def reset() -> None:
    """Forget every outage (tests)."""
    for outage in (database, channel_layer):
        outage.reset()
