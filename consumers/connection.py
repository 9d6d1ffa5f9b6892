"""One WebSocket's life, apart from what it is for: accepted, counted, sent to through its
outlet, closed in protocol (never a bare 1011), and everything it holds given back once.

Whatever a client sends, it gets an answer in protocol: a failure of ours (a bug, a database
outage) is a ``server_error`` frame and close 1011 (4011 under daphne), never a bare 1011 with
every subscription dropped unexplained. What a socket holds (the sockets gauge, its
subscriptions, its place in the upkeep and the revocation watch) is given back once, in a
``finally``, however the consumer ends.
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
from streamapp.access import denial
from streamapp.adapters.routing import DIRECT
from streamapp.asgi.wiring import note_connection
from streamapp.conf import app_settings
from streamapp.credentials import Credential, credential_of, recheck
from streamapp.handover import open_sockets

from .hub import hub_for
from .limits import SocketLimits
from .outlet import SocketOutlet
from .protocol import ProtocolError
from .revocation import watch
from .subscription import Subscription
from .upkeep import SocketUpkeep, upkeep_for

logger = logging.getLogger("streamapp.consumers")


class SocketConnection(AsyncWebsocketConsumer):
    """One socket's life: connect, send through its outlet, close in protocol, give back.

    Its subclass (consumers/sockets.py) adds what the socket is for: subscriptions, client
    actions and live news.
    """

    # No channel per socket: live news comes from the process's fan-out hub (hub.py).
    channel_layer_alias = None
    groups = ()  # none to join: and no empty list per socket

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subscriptions: dict[str, Subscription] = {}
        self.upkeep: SocketUpkeep | None = None
        self.limits: SocketLimits | None = None  # made when the client first sends a frame
        self.credential: Credential | None = None
        self.counted = False  # in the sockets gauge
        self.accepted = False
        self.closing = False
        self.released = False

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

    async def release(self) -> None:
        """Give back what the socket holds, once."""
        if self.released:
            return
        self.released = True
        open_sockets.discard(self)
        if self.counted:
            metrics.SOCKETS_CONNECTED.dec()
        if self.credential is not None:
            watch().discard(self)
        await self.unsubscribe_all()
        if self.upkeep is not None:
            self.upkeep.forget(self)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Run the handler; a failure of ours closes the socket in protocol (server_error)."""
        try:
            handler = getattr(self, get_handler_name(message), None)
            if handler is None:
                raise ValueError(f"No handler for message type {message['type']}")
            await handler(message)
        except StopConsumer:
            raise
        except Exception:
            logger.exception("socket failed handling %s", message.get("type"))
            await self.fail()

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        if open_sockets.refusing:  # this server is stopping: refused, not yet accepted
            await self.close()
            raise StopConsumer
        self.user = self.scope.get("user")
        unread_token = note_connection(self.scope)
        if unread_token is not None:
            self.scope["token_error"] = unread_token
        metrics.SOCKETS_CONNECTED.inc()
        self.counted = True
        self.credential = credential_of(self.scope)
        if self.credential is not None:
            watch().add(self)
        self.hub = hub_for(get_channel_layer())
        self.outlet = SocketOutlet.for_socket(self.scope, self, app_settings.SEND_BUFFER_BYTES)
        self.upkeep = upkeep_for(self.hub)
        open_sockets.add(self)
        await super().websocket_connect(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.disconnect(message["code"])
        raise StopConsumer

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)
        self.accepted = True

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

    def close_sent(self) -> bool:
        """Has everything written to this socket left the process (streamapp.handover)?"""
        return self.outlet.sent()

    async def fail(self) -> None:
        """Our failure: say so, close 1011 (4011 under daphne); the client resumes with since."""
        if self.closing:
            raise StopConsumer  # a close is under way: nothing more can be said
        try:
            if not self.accepted:
                await self.accept()
            error = protocol.error(
                protocol.SERVER_ERROR, "the server failed handling this socket; reconnect"
            )
            await self.send(text_data=protocol.encode(error))  # the outlet may be what failed
            await self.close_now(protocol.CLOSE_SERVER_ERROR)
        except Exception:
            logger.warning("could not close a failed socket in protocol", exc_info=True)
            raise StopConsumer from None

    async def revoke(self, reason: str) -> None:
        """The user's sign-in no longer holds: say why and close 4403 (revocation.py)."""
        if self.closing:
            return
        logger.info("closing a socket whose sign-in no longer holds reason=%s", reason)
        await self.send_frame(protocol.error("forbidden", f"you are no longer signed in: {reason}"))
        await self.close_now(protocol.CLOSE_FORBIDDEN)

    async def current_user(self, key: str | None = None) -> Any:
        """The socket's user, checked afresh (one indexed query); refused when revoked."""
        if self.credential is None:
            return self.user  # anonymous: nothing to revoke
        user, reason = await recheck(self.credential)
        if reason is not None:
            raise ProtocolError("forbidden", f"you are no longer signed in: {reason}", key,
                                close=True)
        self.user = user
        return user

    async def close_slow(self) -> None:
        """The client has not read for SLOW_CLIENT_SECONDS: what it missed stays in the log."""
        client = self.scope.get("client") or ("?", "?")
        logger.warning("closing a socket that stopped reading client=%s:%s tasks=%s",
                       client[0], client[1], ",".join(self.subscriptions)[:200])
        await self.close_now(protocol.CLOSE_TOO_SLOW)
