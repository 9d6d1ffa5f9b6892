"""Per-socket limits: frames admitted by a token bucket, and how far a socket has misbehaved.

Counted in-process, with no I/O on the hot path, and small: a socket that never misbehaves holds
one bucket (made at its first frame) and two counters. ``now`` is the one clock of this module:
tests replace it. Handshakes are limited before the consumer, in streamapp/asgi/handshakes.py.
"""

from __future__ import annotations

import time

from streamapp.conf import app_settings

# Answers that refuse what a client asked for: each spends one token of the socket's
# REFUSAL_RATE, so a client that keeps asking for what it may not have is closed (4429).
REFUSALS = frozenset({"forbidden", "not_found", "rate_limited"})


def now() -> float:
    """Seconds, on the clock the buckets refill by."""
    return time.monotonic()


class TokenBucket:
    """``count`` tokens, refilled at ``count / seconds`` per second; one token per take."""

    __slots__ = ("capacity", "per_second", "tokens", "stamp")

    def __init__(self, count: int, seconds: float) -> None:
        self.capacity = float(count)
        self.per_second = count / seconds
        self.tokens = self.capacity
        self.stamp = now()

    def give_back(self) -> None:
        """One token back (up to the capacity)."""
        self.tokens = min(self.capacity, self.tokens + 1.0)

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

    __slots__ = ("frames", "refusals", "refused_in_a_row", "bad_frames")

    def __init__(self) -> None:
        self.frames: TokenBucket | None = None  # made at the first frame
        self.refusals: TokenBucket | None = None  # made at the first refusal
        self.refused_in_a_row = 0
        self.bad_frames = 0

    def admit(self) -> bool:
        """Take a frame from the allowance; False when the socket is over its rate."""
        if self.frames is None:
            rate = app_settings.MESSAGE_RATE
            if not rate:
                return True
            self.frames = TokenBucket(*rate)
        if self.frames.take():
            self.refused_in_a_row = 0
            return True
        self.refused_in_a_row += 1
        return False

    def flooded(self) -> bool:
        """After ``admit()`` said no: has the socket gone on sending for too long?"""
        return self.refused_in_a_row >= app_settings.MAX_REFUSED_FRAMES

    def granted(self) -> None:
        """A subscribe or cancel was granted: it pays back one refusal. A client resubscribing
        many tasks, some of them gone, mixes the two; a flood of refusals does not."""
        if self.refusals is not None:
            self.refusals.give_back()

    def must_close(self, code: str) -> bool:
        """Record an error answered to the client; True when the socket must now be closed."""
        if code == "too_large":
            return True
        if code == "bad_request":
            self.bad_frames += 1
            return self.bad_frames >= app_settings.MAX_BAD_FRAMES
        if code in REFUSALS:
            if self.refusals is None:
                rate = app_settings.REFUSAL_RATE
                if not rate:
                    return False
                self.refusals = TokenBucket(*rate)
            return not self.refusals.take()
        return False
