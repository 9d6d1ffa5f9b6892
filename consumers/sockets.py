"""What both WebSocket consumers share: one socket's subscriptions, client frames and live news.

The fast path reads one way: the process's hub (hub.py) hands a layer message to the socket
(here), the socket to its subscription (subscription.py), the subscription to the socket's
outlet (outlet.py), and the outlet to daphne's transport. Consumers never write task state:
starting and cancelling go through the coordinator.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from streamapp import metrics, protocol
from streamapp.access import allowed, denial
from streamapp.asgi.wiring import note_connection
from streamapp.conf import app_settings
from streamapp.coordinator import coordinator
from streamapp.handover import open_sockets
from streamapp.models import Status, StreamTask
from streamapp.positions import Position

from .hub import HubFeed
from .limits import SocketLimits
from .outlet import SocketOutlet
from .protocol import Action, ProtocolError, parse
from .subscription import Subscription
from .upkeep import Upkeep

logger = logging.getLogger("streamapp.consumers")


def who(user: Any) -> str:
    """How a cancel's final state names the client that asked for it."""
    if getattr(user, "is_authenticated", False):
        return str(user.get_username())
    return "an anonymous client"


class TaskSocketConsumer(AsyncWebsocketConsumer):
    """Shared machinery: subscriptions, client actions, and live news from the process's hub."""

    # No channel per socket: live news comes from the process's fan-out hub (hub.py).
    channel_layer_alias = None
    upkeep: Upkeep | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:  # however the consumer ends (even cancelled or crashed), nothing stays behind
            open_sockets.discard(self)
            if self.upkeep is not None:
                await self.upkeep.stop()
                await self.unsubscribe_all()

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        self.subscriptions: dict[str, Subscription] = {}
        self.user = self.scope.get("user")
        unread_token = note_connection(self.scope)
        if unread_token is not None:
            self.scope["token_error"] = unread_token
        metrics.SOCKETS_CONNECTED.inc()
        self.limits = SocketLimits()
        self.closing = False
        self.feed = HubFeed(self)
        self.outlet = SocketOutlet.for_socket(
            self.scope, lambda text: self.send(text_data=text), app_settings.SEND_BUFFER_BYTES
        )
        self.upkeep = Upkeep(self, self.feed.layer)
        self.upkeep.start()
        open_sockets.add(self)
        await super().websocket_connect(message)

    # -- sending ----------------------------------------------------------------------------

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.outlet.send(protocol.encode(frame))

    async def send_text(self, text: str) -> None:
        await self.outlet.send(text)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self.closing = True  # frames the client sent before it saw the close are dropped
        try:
            await super().close(code=code, reason=reason)
        except Exception:
            # Daphne (autobahn) lets an application send only 1000 and 3000-4999, so it refuses
            # 1009 (DESIGN's too_large code). The error frame already said why: close with the
            # private-use twin (4009) rather than crash into a 1011.
            if not isinstance(code, int) or protocol.server_close_code(code) == code:
                raise
            fallback = protocol.server_close_code(code)
            logger.info("server refused close code=%s; closing with %s", code, fallback)
            await super().close(code=fallback, reason=reason)

    def denied(self, message: str) -> str:
        return denial(message, self.scope.get("token_error"))

    async def refuse(self, code: str, message: str, task: str | None = None) -> None:
        """Tell the client why, then close with the matching code (DESIGN §3)."""
        await self.send_frame(protocol.error(code, message, task))
        await self.close_now(protocol.CLOSE_CODES[code])

    async def close_now(self, code: int) -> None:
        """Leave every group at once (not when the client gets round to it), then close."""
        self.closing = True
        await self.unsubscribe_all()
        await self.close(code=code)

    def close_for_restart(self, code: int) -> Awaitable[None] | None:
        """This process is going away (streamapp.handover): close now; the client resumes
        elsewhere with ``since``. Under daphne the close frame is written before this returns."""
        self.closing = True
        if self.outlet.close_at_once(code):
            return None
        return self.close_now(code)

    async def close_slow(self) -> None:
        """The client has not read for SLOW_CLIENT_SECONDS: what it missed stays in the log."""
        client = self.scope.get("client") or ("?", "?")
        logger.warning("closing a socket that stopped reading client=%s:%s tasks=%s",
                       client[0], client[1], ",".join(self.subscriptions)[:200])
        await self.close_now(protocol.CLOSE_TOO_SLOW)

    # -- subscriptions ----------------------------------------------------------------------

    async def subscribe(self, task: StreamTask, since: int | None) -> Subscription | None:
        """Check access, subscribe and replay; start a pending task when AUTO_START is on."""
        key = task.task_key
        if not await allowed(task.can_subscribe, self.user):
            raise ProtocolError("forbidden", self.denied(f"you may not watch {key}"), key)
        old = self.subscriptions.pop(key, None)
        if old is not None:
            await old.close()
        subscription = Subscription(task, self.feed, self.outlet)
        self.subscriptions[key] = subscription
        for note in await subscription.open(since):
            await self.send_frame(note)
        if subscription.status == Status.PENDING and app_settings.AUTO_START:
            await coordinator.start_task(task)
        return subscription

    async def unsubscribe_all(self) -> None:
        for subscription in self.subscriptions.values():
            await subscription.close()
        self.subscriptions.clear()

    async def cancel(self, task: StreamTask) -> None:
        if not await allowed(task.can_cancel, self.user):
            raise ProtocolError(
                "forbidden", self.denied(f"you may not cancel {task.task_key}"), task.task_key
            )
        await coordinator.cancel_task(task, reason=f"cancelled by {who(self.user)}")

    # -- client frames ----------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return  # the close is sent: nothing may follow it
        try:
            if not self.limits.admit():
                metrics.rate_limited("messages")
                raise ProtocolError("rate_limited", "too many frames; slow down")
            action = parse(text_data, bytes_data, app_settings.MAX_CLIENT_FRAME_BYTES)
            if action.name == "ping":
                await self.send_text(protocol.PONG)
            else:
                await self.act(action)
        except ProtocolError as exc:
            if self.limits.must_close(exc.code):
                logger.info("closing a misbehaving socket code=%s", exc.code)
                await self.refuse(exc.code, exc.message, exc.task)
            else:
                await self.send_frame(protocol.error(exc.code, exc.message, exc.task))

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
        if message["type"] == "stream.events":
            await self.stream_events(message)
        elif message["type"] == "stream.state":
            await self.stream_state(message)

    async def stream_events(self, message: dict[str, Any]) -> None:
        subscription = self.subscriptions.get(message["task"])
        if subscription is not None:
            await subscription.on_events(message["events"])
            await self.progressed(subscription)

    async def stream_state(self, message: dict[str, Any]) -> None:
        subscription = self.subscriptions.get(message["task"])
        if subscription is not None:
            await subscription.on_state(message)
            await self.progressed(subscription)

    async def recheck(self, key: str, position: Position) -> None:
        """The layer was away and is back: repair ``key``'s subscription if it missed news."""
        subscription = self.subscriptions.get(key)
        if subscription is not None and subscription.missed(position):
            await subscription.converge(position)
            await self.progressed(subscription)

    async def progressed(self, subscription: Subscription) -> None:
        """Hook: ``subscription`` may have sent frames (its final state, for one)."""

    async def disconnect(self, code: int) -> None:
        metrics.SOCKETS_CONNECTED.dec()
        if self.upkeep is not None:
            await self.upkeep.stop()
        await self.unsubscribe_all()
