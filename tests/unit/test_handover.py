"""Closing every socket for a restart (streamapp/handover.py): the close frames must leave the
process before shutdown goes on, or the client sees a reset (1006), not 1012/4012."""

from __future__ import annotations

import asyncio

from streamapp import handover
from streamapp.handover import OpenSockets


class Socket:
    """A socket whose close frame is written at once and leaves after ``turns`` looks."""

    def __init__(self, turns: int = 0, closes_later: bool = False) -> None:
        self.turns = turns
        self.closes_later = closes_later
        self.codes: list[int] = []
        self.finished = asyncio.Event()

    def close_for_restart(self, code: int):
        self.codes.append(code)
        return self.finished.wait() if self.closes_later else None

    def close_sent(self) -> bool:
        self.turns -= 1
        return self.turns < 0


async def test_shutdown_waits_until_every_close_frame_has_left():
    sockets = OpenSockets()
    quick, slow = Socket(), Socket(turns=5)
    sockets.add(quick)
    sockets.add(slow)
    [sent] = sockets.close_all()
    assert quick.codes == slow.codes == [handover.CLOSE_SERVICE_RESTART]
    assert len(sockets) == 0
    await asyncio.wait_for(sent, timeout=5)
    assert slow.turns < 0  # looked at until its frame had left


async def test_a_frame_that_never_leaves_is_waited_for_a_bounded_time(monkeypatch):
    monkeypatch.setattr(handover, "CLOSE_WAIT_SECONDS", 0.05)
    sockets = OpenSockets()
    stuck = Socket(turns=10**9)
    sockets.add(stuck)
    [sent] = sockets.close_all(4012)
    await asyncio.wait_for(sent, timeout=5)  # done, though the frame is still held
    assert stuck.codes == [4012] and stuck.turns > 0


async def test_closes_under_way_are_returned_beside_the_written_ones():
    sockets = OpenSockets()
    later, now = Socket(closes_later=True), Socket()
    sockets.add(later)
    sockets.add(now)
    pending = sockets.close_all()
    assert len(pending) == 2
    later.finished.set()
    await asyncio.wait_for(asyncio.gather(*pending), timeout=5)


def test_no_socket_nothing_to_wait_for():
    assert OpenSockets().close_all() == []
