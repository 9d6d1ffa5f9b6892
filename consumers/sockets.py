"""What both WebSocket consumers share: one socket's subscriptions, client frames and live news.

The fast path reads one way: the process's hub (hub.py) hands a layer message to the socket
(here), the socket to its subscription (subscription.py), the subscription to the socket's
outlet (outlet.py), and the outlet to daphne's transport. Consumers never write task state:
starting and cancelling go through the coordinator.

An idle socket costs what it must and no more: no task of its own beside the one the server
runs it in (the process's upkeep, upkeep.py, looks after every socket), no channel, no frame
limiter until the client sends a frame, no task row kept.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable
from typing import Any

from asgiref.sync import markcoroutinefunction
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer

from streamapp import metrics, protocol
from streamapp.access import allowed, denial
from streamapp.adapters.routing import DIRECT
from streamapp.asgi.wiring import note_connection
from streamapp.conf import app_settings
from streamapp.coordinator import coordinator
from streamapp.handover import open_sockets
from streamapp.models import Status, StreamTask

from .hub import hub_for
from .limits import SocketLimits
from .outlet import SocketOutlet
from .protocol import Action, ProtocolError, parse
from .subscription import Subscription
from .upkeep import SocketUpkeep, upkeep_for

logger = logging.getLogger("streamapp.consumers")


class TaskSocketConsumer(AsyncWebsocketConsumer):
    """Shared machinery: subscriptions, client actions, and live news from the process's hub."""

    # No channel per socket: live news comes from the process's fan-out hub (hub.py).
    channel_layer_alias = None
    groups = ()  # none to join: and no empty list per socket
    upkeep: SocketUpkeep | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' loop, without a task of its own per receive (there is nothing else to
        await: no channel), and without a database hop per message (the upkeep looks after
        the process's connection)."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:  # however the consumer ends (even cancelled or crashed), nothing stays behind
            await self.release()

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> Any:
        """Channels' ``as_asgi``, less a coroutine frame kept per socket: the application
        hands back the consumer's own coroutine instead of awaiting it."""

        def app(scope: Any, receive: Any, send: Any) -> Any:
            return cls(**initkwargs)(scope, receive, send)

        app.consumer_class = cls  # type: ignore[attr-defined]
        app.consumer_initkwargs = initkwargs  # type: ignore[attr-defined]
        functools.update_wrapper(app, cls, updated=())
        setattr(app, DIRECT, True)  # StreamAppMiddlewareStack may route to it itself
        return markcoroutinefunction(app)

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        self.subscriptions: dict[str, Subscription] = {}
        self.user = self.scope.get("user")
        unread_token = note_connection(self.scope)
        if unread_token is not None:
            self.scope["token_error"] = unread_token
        self.limits: SocketLimits | None = None  # made when the client first sends a frame
        self.closing = False
        self.hub = hub_for(get_channel_layer())
        self.outlet = SocketOutlet.for_socket(self.scope, self, app_settings.SEND_BUFFER_BYTES)
        self.upkeep = upkeep_for(self.hub)
        metrics.SOCKETS_CONNECTED.inc()
        open_sockets.add(self)
        await super().websocket_connect(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.disconnect(message["code"])
        raise StopConsumer

    async def release(self) -> None:
        """Give back what the socket holds, once."""
        upkeep, self.upkeep = self.upkeep, None
        if upkeep is None:
            return
        self.closing = True
        open_sockets.discard(self)
        metrics.SOCKETS_CONNECTED.dec()
        await self.unsubscribe_all()
        upkeep.forget(self)

    # -- sending ----------------------------------------------------------------------------

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.outlet.send(protocol.encode(frame))

    async def send_text(self, text: str) -> None:
        await self.outlet.send(text)

    async def send_text_fallback(self, text: str) -> None:
        """A frame the ASGI way, where the server's transport is not at hand."""
        await self.send(text_data=text)

    # -- the socket as its subscriptions' feed (subscription.py) ---------------------------

    async def join(self, key: str) -> None:
        """Have the process's hub hand ``key``'s news to this socket."""
        await self.hub.join(key, self)

    async def leave(self, key: str) -> None:
        await self.hub.leave(key, self)

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

    async def subscribe(
        self, model: type[StreamTask], pk: Any, key: str, since: int | None
    ) -> Subscription:
        """Join, read the task (one query), check access, send its state and replay; start a
        pending task when AUTO_START is on. UnknownTask when there is no such row."""
        subscription = Subscription.of(model, pk, key, self, self.outlet)
        old = self.subscriptions.pop(key, None)
        if old is not None:
            await old.close()
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
        if subscription.behind and self.upkeep is not None:
            self.upkeep.attend(self)  # its replay waits for room
        elif self.upkeep is not None:
            self.upkeep.ensure_running()
        if subscription.status == Status.PENDING and app_settings.AUTO_START:
            await coordinator.start_task(task)
        return subscription

    async def check_watch(self, task: StreamTask) -> None:
        if not await allowed(task.can_subscribe, self.user):
            key = task.task_key
            raise ProtocolError("forbidden", self.denied(f"you may not watch {key}"), key)

    async def unsubscribe_all(self) -> None:
        subscriptions, self.subscriptions = self.subscriptions, {}
        for subscription in subscriptions.values():
            await subscription.close()

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
        if self.limits is None:
            self.limits = SocketLimits()
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

    async def progressed(self, subscription: Subscription) -> None:
        """Hook: ``subscription`` may have sent frames (its final state, for one)."""

    async def disconnect(self, code: int) -> None:
        await self.release()
