"""The WebSocket consumers: one task per socket, or many tasks over one socket.

Consumers never write task state: starting and cancelling go through the coordinator.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from streamapp import frames, metrics
from streamapp.access import allowed, denial
from streamapp.conf import app_settings
from streamapp.coordinator import coordinator
from streamapp.exceptions import UnknownTask
from streamapp.keys import aget_task, canonical_key, split_key, stream_task_model
from streamapp.models import Status, StreamTask

from .hub import HubFeed
from .outlet import SocketOutlet
from .protocol import Action, ProtocolError, parse, parse_since
from .ratelimit import CLOSE_RATE_LIMITED, SocketLimits
from .subscription import Subscription
from .transport import SCOPE_KEY as TRANSPORT_SCOPE_KEY
from .transport import TransportBacklog
from .upkeep import Upkeep

logger = logging.getLogger("streamapp.consumers")

CLOSE_NORMAL = 1000
CLOSE_TOO_LARGE = 1009
CLOSE_BAD_REQUEST = 4400
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_CODES = {
    "forbidden": CLOSE_FORBIDDEN,
    "not_found": CLOSE_NOT_FOUND,
    "too_large": CLOSE_TOO_LARGE,
    "rate_limited": CLOSE_RATE_LIMITED,
    "bad_request": CLOSE_BAD_REQUEST,  # a socket that kept sending malformed frames
}
CLOSE_TOO_SLOW = 4408  # the client did not read for SLOW_CLIENT_SECONDS: reconnect with since


class TaskSocketConsumer(AsyncWebsocketConsumer):
    """Shared machinery: subscriptions, client actions, and live news from the process's hub."""

    # No channel per socket: live news comes from the process's fan-out hub (hub.py).
    channel_layer_alias = None
    upkeep: Upkeep | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:  # however the consumer ends (even cancelled or crashed), nothing stays behind
            if self.upkeep is not None:
                await self.upkeep.stop()
                await self.unsubscribe_all()

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        self.subscriptions: dict[str, Subscription] = {}
        self.user = self.scope.get("user")
        metrics.SOCKETS_CONNECTED.inc()
        self.limits = SocketLimits()
        self.closing = False
        self.feed = HubFeed(self)
        transport = self.scope.get(TRANSPORT_SCOPE_KEY)
        self.outlet = SocketOutlet(
            self.frame_sender(transport), transport, app_settings.SEND_BUFFER_BYTES
        )
        self.upkeep = Upkeep(self, self.feed.layer)
        self.upkeep.start()
        await super().websocket_connect(message)

    # -- sending ----------------------------------------------------------------------------

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.outlet.send(frames.encode(frame))

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
            if not isinstance(code, int) or code == CLOSE_NORMAL or 3000 <= code <= 4999:
                raise
            fallback = 4000 + code % 1000
            logger.info("server refused close code=%s; closing with %s", code, fallback)
            await super().close(code=fallback, reason=reason)

    def denied(self, message: str) -> str:
        return denial(message, self.scope.get("token_error"))

    def frame_sender(self, transport: TransportBacklog | None) -> Callable[[str], Awaitable[None]]:
        """How subscriptions send frames: straight to daphne when it is there (transport.py)."""
        if transport is None:
            return lambda text: self.send(text_data=text)
        server_send, is_open = transport.send, transport.open

        async def send_to_daphne(text: str) -> None:
            if is_open():  # a client that has just left: nothing to send to, and no error
                await server_send({"type": "websocket.send", "text": text})

        return send_to_daphne

    async def refuse(self, code: str, message: str, task: str | None = None) -> None:
        """Tell the client why, then close with the matching code (DESIGN §3)."""
        await self.send_frame(frames.error(code, message, task))
        await self.close_now(CLOSE_CODES[code])

    async def close_now(self, code: int) -> None:
        """Leave every group at once (not when the client gets round to it), then close."""
        self.closing = True
        await self.unsubscribe_all()
        await self.close(code=code)

    async def close_slow(self) -> None:
        """The client has not read for SLOW_CLIENT_SECONDS: what it missed stays in the log."""
        client = self.scope.get("client") or ("?", "?")
        logger.warning("closing a socket that stopped reading client=%s:%s tasks=%s",
                       client[0], client[1], ",".join(self.subscriptions)[:200])
        await self.close_now(CLOSE_TOO_SLOW)

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
        await coordinator.cancel_task(task)

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
                await self.send_text(frames.PONG)
            else:
                await self.act(action)
        except ProtocolError as exc:
            if self.limits.must_close(exc.code):
                logger.info("closing a misbehaving socket code=%s", exc.code)
                await self.refuse(exc.code, exc.message, exc.task)
            else:
                await self.send_frame(frames.error(exc.code, exc.message, exc.task))

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

    async def progressed(self, subscription: Subscription) -> None:
        """Hook: ``subscription`` may have sent frames (its final state, for one)."""

    async def disconnect(self, code: int) -> None:
        metrics.SOCKETS_CONNECTED.dec()
        if self.upkeep is not None:
            await self.upkeep.stop()
        await self.unsubscribe_all()


class TaskConsumer(TaskSocketConsumer):
    """``ws/tasks/<app_label>/<model>/<pk>/[?since=N]``: one task, closed after its final state."""

    async def connect(self) -> None:
        await self.accept()
        kwargs = self.scope["url_route"]["kwargs"]
        try:
            model = stream_task_model(kwargs["app_label"], kwargs["model"])
            self.key = canonical_key(model, kwargs["pk"])
            task = await aget_task(self.key)
        except UnknownTask as exc:
            await self.refuse("not_found", str(exc))
            return
        since, note = self.since_from_query()
        if note is not None:
            await self.send_frame(note)
        try:
            subscription = await self.subscribe(task, since)
        except ProtocolError as exc:
            await self.refuse(exc.code, exc.message, exc.task)
            return
        await self.progressed(subscription)

    def since_from_query(self) -> tuple[int | None, dict[str, Any] | None]:
        """``?since=N`` from the URL; a bad value is reported and ignored."""
        query = self.scope.get("query_string", b"").decode("latin-1")
        values = [part[6:] for part in query.split("&") if part.startswith("since=")]
        if not values:
            return None, None
        try:
            return parse_since(values[-1]), None
        except ProtocolError as exc:
            return None, frames.error(exc.code, exc.message, self.key)

    async def act(self, action: Action) -> None:
        if action.name != "cancel":
            raise ProtocolError("bad_request", f"{action.name} works on ws/tasks/ only", self.key)
        if action.task is not None and action.task != self.key:
            raise ProtocolError("bad_request", f"this socket watches {self.key} only", action.task)
        try:
            task = await aget_task(self.key)  # fresh: the hook may look at the owner
        except UnknownTask as exc:
            raise ProtocolError("not_found", str(exc), self.key) from None
        await self.cancel(task)

    async def progressed(self, subscription: Subscription) -> None:
        """After the final state, close 1000 once the client has it all.

        Waiting for the socket to drain matters: daphne drops a connection that does not answer
        the close within a second, and the kernel would discard what a slow reader had not read.
        """
        if subscription.finished and not self.closing:
            self.closing = True
            await self.outlet.drained(app_settings.SLOW_CLIENT_SECONDS)
            await self.close_now(CLOSE_NORMAL)


class MultiTaskConsumer(TaskSocketConsumer):
    """``ws/tasks/``: any number of tasks over one socket by subscribe/unsubscribe actions."""

    async def connect(self) -> None:
        await self.accept()

    async def act(self, action: Action) -> None:
        if action.task is None:
            raise ProtocolError("bad_request", "cancel on ws/tasks/ needs a task key")
        try:
            key = canonical_key(*split_key(action.task))
            if action.name == "unsubscribe":
                subscription = self.subscriptions.pop(key, None)
                if subscription is not None:
                    await subscription.close()
                return
            task = await aget_task(key)
        except UnknownTask as exc:
            raise ProtocolError("not_found", str(exc), action.task[:100]) from None
        if action.name == "cancel":
            await self.cancel(task)
            return
        if key not in self.subscriptions and len(self.subscriptions) >= app_settings.MAX_SUBSCRIPTIONS:
            metrics.rate_limited("subscriptions")
            raise ProtocolError(
                "rate_limited",
                f"a socket may hold {app_settings.MAX_SUBSCRIPTIONS} subscriptions",
                key,
            )
        await self.subscribe(task, action.since)


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: say so and close 4404, never a server error."""

    channel_layer_alias = None  # nothing to receive: no channel

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=frames.encode(
            frames.error("not_found", f"no WebSocket endpoint at {self.scope.get('path', '')[:200]}")
        ))
        await self.close(code=CLOSE_NOT_FOUND)
