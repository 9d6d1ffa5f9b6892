"""Per-socket limits (consumers/limits.py) on a clock the test turns by hand."""

from __future__ import annotations

import pytest

from consumers import limits
from consumers.limits import SocketLimits, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(limits, "now", clock)
    return clock


def test_a_bucket_starts_full_and_refuses_once_empty(clock):
    bucket = TokenBucket(3, 1.0)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_a_bucket_refills_at_count_per_seconds(clock):
    bucket = TokenBucket(4, 2.0)  # 2 tokens a second
    for _ in range(4):
        bucket.take()
    clock.now += 0.49
    assert not bucket.take()  # 0.98 of a token
    clock.now += 0.01
    assert bucket.take() and not bucket.take()
    clock.now += 1.0
    assert bucket.take() and bucket.take() and not bucket.take()


def test_a_bucket_never_holds_more_than_its_count(clock):
    bucket = TokenBucket(2, 1.0)
    clock.now += 100.0
    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_a_clock_stepped_back_refills_nothing(clock):
    bucket = TokenBucket(1, 1.0)
    assert bucket.take()
    clock.now -= 50.0
    assert not bucket.take()
    clock.now += 1.0  # one second after the step back: one token
    assert bucket.take()


def test_a_socket_is_admitted_within_its_rate_and_counts_refusals_in_a_row(clock, settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "MESSAGE_RATE": (2, 1.0)}
    socket = SocketLimits()
    assert socket.admit() and socket.admit()
    assert not socket.admit() and not socket.admit()
    assert socket.refused_in_a_row == 2
    clock.now += 0.5
    assert socket.admit() and socket.refused_in_a_row == 0


def test_too_large_closes_at_once(settings):
    assert SocketLimits().must_close("too_large")


def test_bad_requests_close_after_so_many_in_all(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "MAX_BAD_FRAMES": 3}
    socket = SocketLimits()
    assert [socket.must_close("bad_request") for _ in range(3)] == [False, False, True]
    assert socket.bad_frames == 3
