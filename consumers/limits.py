"""Per-socket limits: frames admitted by a token bucket, and how far a socket has misbehaved.

Counted in-process, with no I/O on the hot path. ``now`` is the one clock of this module: tests
replace it. Handshakes are limited before the consumer, in streamapp/asgi/handshakes.py.
"""

from __future__ import annotations

import time

from streamapp.conf import app_settings


def now() -> float:
    """Seconds, on the clock the buckets refill by."""
    return time.time()


class TokenBucket:
    """``count`` tokens, refilled at ``count / seconds`` per second; one token per frame."""

    def __init__(self, count: int, seconds: float) -> None:
        self.capacity = float(count)
        self.per_second = count / seconds
        self.tokens = self.capacity
        self.stamp = now()

    def take(self) -> bool:
        moment = now()
        elapsed = max(0.0, moment - self.stamp)  # a clock stepped back refills nothing
        self.tokens = min(self.capacity, self.tokens + elapsed * self.per_second)
        self.stamp = moment
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class SocketLimits:
    """One socket's allowance of frames, and how far it has misbehaved."""

    def __init__(self) -> None:
        rate = app_settings.MESSAGE_RATE
        self.bucket = TokenBucket(*rate) if rate else None
        self.refused_in_a_row = 0
        self.bad_frames = 0

    def admit(self) -> bool:
        """Take a frame from the allowance; False when the socket is over its rate."""
        if self.bucket is None or self.bucket.take():
            self.refused_in_a_row = 0
            return True
        self.refused_in_a_row += 1
        return False

    def must_close(self, code: str) -> bool:
        """Record an error answered to the client; True when the socket must now be closed."""
        if code == "too_large":
            return True
        if code == "rate_limited":
            return self.refused_in_a_row >= app_settings.MAX_REFUSED_FRAMES
        if code == "bad_request":
            self.bad_frames += 1
            return self.bad_frames >= app_settings.MAX_BAD_FRAMES
        return False
