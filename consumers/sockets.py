"""What both WebSocket consumers share: one socket's subscriptions, client frames and live news.

The fast path reads one way: the process's hub (hub.py) hands a layer message to the socket
(here), the socket to its subscription (subscription.py), the subscription to the socket's
outlet (outlet.py), and the outlet to daphne's transport. Consumers never write task state:
starting and cancelling go through the coordinator.

How a socket lives and closes is consumers/connection.py.

An idle socket costs what it must and no more: no task of its own beside the one the server
runs it in (the process's upkeep, upkeep.py, looks after every socket), no channel, no frame
limiter until the client sends a frame, no task row kept.
"""

from __future__ import annotations

import logging
from typing import Any

from streamapp import metrics, protocol
from streamapp.access import allowed
from streamapp.conf import app_settings
from streamapp.coordinator import coordinator
from streamapp.models import Status, StreamTask
from streamapp.positions import Position

from .connection import SocketConnection
from .limits import REFUSALS, SocketLimits
from .protocol import Action, ProtocolError, parse
from .subscription import Subscription

logger = logging.getLogger("streamapp.consumers")


def who(user: Any) -> str:
    """How a cancel's final state names the client that asked for it."""
    if getattr(user, "is_authenticated", False):
        return str(user.get_username())
    return "an anonymous client"


class TaskSocketConsumer(SocketConnection):
    """Shared machinery: subscriptions, client actions, and live news from the process's hub."""

    # -- subscriptions ----------------------------------------------------------------------

    async def subscribe(
        self, model: type[StreamTask], pk: Any, key: str, since: int | None,
        recheck_user: bool = True,
    ) -> Subscription:
        """Check the user; join, read the task (one query), check access, send its state and
        replay; start a pending task when AUTO_START is on. UnknownTask when there is no row.

        ``recheck_user`` False: the handshake has just checked the user (the one-task endpoint).
        """
        if recheck_user:
            await self.current_user(key)
        old = self.subscriptions.pop(key, None)
        if old is not None:
            await old.close()
        subscription = Subscription.of(model, pk, key, self, self.outlet)
        self.subscriptions[key] = subscription
        try:
            task, notes = await subscription.open(since, self.check_watch)
        except BaseException:
            if self.subscriptions.get(key) is subscription:
                del self.subscriptions[key]
            await subscription.close()
            raise
        for note in notes:
            await self.send_frame(note)
        if self.upkeep is not None:
            if subscription.behind:
                self.upkeep.attend(self)  # its replay waits for room
            else:
                self.upkeep.ensure_running()
        if subscription.status == Status.PENDING and app_settings.AUTO_START:
            await coordinator.start_task(task)
        if self.limits is not None:
            self.limits.granted()
        return subscription

    async def check_watch(self, task: StreamTask) -> None:
        """May the socket's user watch ``task``? (Before anything of it is sent.)"""
        if not await allowed(task.can_subscribe, self.user):
            key = task.task_key
            raise ProtocolError("forbidden", self.denied(f"you may not watch {key}"), key)

    async def unsubscribe_all(self) -> None:
        subscriptions, self.subscriptions = self.subscriptions, {}
        for subscription in subscriptions.values():
            await subscription.close()

    async def cancel(self, task: StreamTask) -> None:
        user = await self.current_user(task.task_key)
        if not await allowed(task.can_cancel, user):
            raise ProtocolError(
                "forbidden", self.denied(f"you may not cancel {task.task_key}"), task.task_key
            )
        await coordinator.cancel_task(task, reason=f"cancelled by {who(user)}")
        if self.limits is not None:
            self.limits.granted()

    # -- client frames ----------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return  # the close is sent: nothing may follow it
        if self.limits is None:
            self.limits = SocketLimits()
        if not self.limits.admit():
            metrics.rate_limited("messages")
            if self.limits.flooded():
                logger.info("closing a socket that kept flooding")
                await self.refuse("rate_limited", "too many frames; slow down")
            else:
                await self.send_frame(protocol.error("rate_limited", "too many frames; slow down"))
            return
        try:
            action = parse(text_data, bytes_data, app_settings.MAX_CLIENT_FRAME_BYTES)
            if action.name == "ping":
                await self.send_text(protocol.PONG)
            else:
                await self.act(action)
        except ProtocolError as exc:
            await self.answer(exc)

    async def answer(self, exc: ProtocolError) -> None:
        """The error frame; then the close, when the error or the socket's record calls for it."""
        await self.send_frame(protocol.error(exc.code, exc.message, exc.task))
        if self.limits is None:
            self.limits = SocketLimits()
        if exc.close:
            await self.close_now(protocol.CLOSE_CODES[exc.code])
        elif self.limits.must_close(exc.code):
            code = exc.code
            if code in REFUSALS:
                metrics.rate_limited("refusals")
                if code != "rate_limited":
                    await self.send_frame(protocol.error(
                        "rate_limited", "too many refused subscribes and cancels; closing"
                    ))
                code = "rate_limited"
            logger.info("closing a misbehaving socket code=%s", code)
            await self.close_now(protocol.CLOSE_CODES[code])

    async def act(self, action: Action) -> None:
        raise NotImplementedError

    # -- live news (from the hub) ------------------------------------------------------------

    def ready_for(self, message: dict[str, Any]) -> bool:
        """Would ``message`` go out at once? Only in-step events do; the hub runs others apart."""
        subscription = self.subscriptions.get(message["task"])
        if subscription is None:
            return True  # nothing to do
        return message["type"] == "stream.events" and subscription.in_step(message["events"][0][0])

    async def take_news(self, message: dict[str, Any]) -> None:
        subscription = self.subscriptions.get(message["task"])
        if subscription is None:
            return
        if message["type"] == "stream.events":
            await subscription.on_events(message["events"])
        elif message["type"] == "stream.state":
            await subscription.on_state(message)
        else:
            return
        await self.progressed(subscription)
        if subscription.behind and self.upkeep is not None:
            self.upkeep.attend(self)  # it waits for room, or for the log

    async def recheck(self, key: str, position: Position) -> None:
        """The layer was away and is back: repair ``key``'s subscription if it missed news."""
        subscription = self.subscriptions.get(key)
        if subscription is not None and subscription.missed(position):
            await subscription.converge(position)
            await self.progressed(subscription)
            if subscription.behind and self.upkeep is not None:
                self.upkeep.attend(self)

    async def progressed(self, subscription: Subscription) -> None:
        """Hook: ``subscription`` may have sent frames (its final state, for one)."""

    async def disconnect(self, code: int) -> None:
        await self.release()
