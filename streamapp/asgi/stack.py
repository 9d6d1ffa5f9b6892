"""StreamAppMiddlewareStack as one ASGI layer: every step of the stack, one coroutine, one scope.

The steps are the middlewares of this package: the Origin check (origin.py), the handshake
limits (handshakes.py), the user (tokenauth.py: a token's, else the session's when the
handshake carries the session cookie), the socket's send backlog (transport.py) and the refusal
of a path no route matches (notfound.py). Each of those stays usable on its own; here they run
inline. A socket lives for hours and most sit idle: nested middlewares would each keep a
coroutine frame and a copy of the scope for as long as the socket is open (about 2 KiB a
socket, measured with ``python -m bench.socketmem``). For the same reason, when the stack wraps
a URLRouter and the path is one of streamapp's own routes, it routes the socket itself, as the
router would (adapters/routing.py), so the socket keeps one copy of the scope, not two.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import WebsocketDenier

from ..adapters.daphne import backlog_of
from ..adapters.routing import DirectRoutes, is_no_route
from ..addresses import scope_address
from . import servers
from .handshakes import (
    ADDRESS_KEY,
    CREDENTIAL_KEY,
    SocketLimitMiddleware,
    claim_socket,
    presented_credential,
    refuse_connection,
    refuse_rate_limited,
    release,
)
from .notfound import refuse_not_found
from .origin import AllowedHostsOriginValidator
from .sendqueue import SendQueue
from .tokenauth import authenticated
from .transport import SCOPE_KEY
from .wiring import STACK_KEY

route_logger = logging.getLogger("streamapp.asgi")


class FirstReceive:
    """``receive``, noting whether the application has asked for a message yet."""

    __slots__ = ("receive", "started")

    def __init__(self, receive: Any) -> None:
        self.receive = receive
        self.started = False

    def __call__(self) -> Any:
        self.started = True
        return self.receive()


class StreamAppStack:
    """The whole stack around ``inner``; ``manage.py check`` looks for it in ASGI_APPLICATION."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.origins = AllowedHostsOriginValidator(None)  # its rule, not its __call__
        self.direct = DirectRoutes(inner)  # streamapp's own routes, when inner is a URLRouter
        # A session's user is known only inside channels' session middlewares: its handshake
        # and socket limits are counted in there.
        self.with_session = AuthMiddlewareStack(SocketLimitMiddleware(inner))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.inner({**scope, STACK_KEY: True}, receive, send)
        if not self.origins.admits(scope):
            return await WebsocketDenier()(scope, receive, send)
        address, credential = scope_address(scope), presented_credential(scope)
        refusal = await refuse_connection(address, credential)
        if refusal is not None:
            return await refuse_rate_limited(receive, send, refusal)
        application, scope, queue = await self._prepare(scope, send, address, credential)
        slot, member = None, ""
        if "user" in scope:  # a token's user or anonymous (the session's, in with_session)
            refusal, slot, member = await claim_socket(scope)
            if refusal is not None:
                return await refuse_rate_limited(receive, send, refusal)
        if queue is not None:
            send = queue.send
        first = FirstReceive(receive)
        try:
            return await application(scope, first, send)
        except Exception as exc:
            if first.started or not is_no_route(exc):
                raise
            route_logger.info("no WebSocket route path=%s", scope.get("path", "")[:200])
            return await refuse_not_found(scope.get("path", ""), receive, send)
        finally:
            if slot is not None:
                await release(slot, member)
            if queue is not None:
                await queue.stop()

    async def _prepare(
        self, scope: dict[str, Any], send: Any, address: str | None, credential: str | None
    ) -> tuple[Any, dict[str, Any], SendQueue | None]:
        """The application to run, the scope it gets and the send queue, if any; what it took
        to find them goes with this frame, not kept for the socket's lifetime."""
        added: dict[str, Any] = {STACK_KEY: True, ADDRESS_KEY: address, CREDENTIAL_KEY: credential}
        application = self.inner
        user = await authenticated(scope)
        if user is None:
            application = self.with_session  # the session's user (a thread hop to the DB)
        else:
            added.update(user)
        queue = self._transport(scope, send, added)
        if user is not None and (route := self.direct.match(scope)) is not None:
            application, routed = route  # the router's work, without its frame and copy
            added.update(routed)
        return application, {**scope, **added}, queue  # the one copy the socket keeps

    def _transport(
        self, scope: dict[str, Any], send: Any, added: dict[str, Any]
    ) -> SendQueue | None:
        """The socket's send backlog for the scope (transport.py): daphne's own, else a queue
        of ours in front of a lifespan server's ``send`` (returned: frames go through it),
        else none."""
        if SCOPE_KEY in scope:  # a test's own backlog
            return None
        backlog = backlog_of(send)
        if backlog is not None:
            added[SCOPE_KEY] = backlog
            return None
        if not servers.served_with_lifespan():
            servers.warn_unbounded_once(scope)
            return None
        queue = added[SCOPE_KEY] = SendQueue(send)
        return queue
