"""Which kind of server runs this process, as the WebSocket side needs to know it.

daphne is recognised from each socket's ``send`` (adapters/daphne.py); a server that sends
``lifespan.startup`` is another one (uvicorn, hypercorn) and gets each socket's send queued
(sendqueue.py). A WebSocket served by neither (no lifespan routed, or ``--lifespan off``) has
no slow-client bound and no drain on shutdown: that is logged once, at its first socket.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Any

logger = logging.getLogger("streamapp.asgi")

_lifespan = False
_warned = False


def note_lifespan_server() -> None:
    """The server sent ``lifespan.startup``: say once how slow clients are bounded here."""
    global _lifespan
    _lifespan = True
    if "uvicorn" in sys.modules and not any(
        importlib.util.find_spec(name) for name in ("websockets", "wsproto")
    ):
        logger.warning("uvicorn serves no WebSocket without the websockets or wsproto package "
                       "(ws/ requests get HTTP 404): pip install websockets")
    logger.info(
        "served by an ASGI server with lifespan (not daphne): each WebSocket's frames queue in "
        "streamapp (SEND_BUFFER_BYTES, then SLOW_CLIENT_SECONDS closes 4408); the server's own "
        "write buffer comes on top; sockets close with 1012 and tasks drain at shutdown"
    )


def served_with_lifespan() -> bool:
    return _lifespan


def forget_lifespan_server() -> None:
    """Tests: back to a process no lifespan server has started."""
    global _lifespan, _warned
    _lifespan, _warned = False, False


def warn_unbounded_once(scope: dict[str, Any]) -> None:
    """A WebSocket neither daphne nor a lifespan server serves: say once what is off.

    Only for a real server's connection (it names itself in ``scope["server"]``), not for
    test communicators, which need neither.
    """
    global _warned
    if _warned or scope.get("server") is None:
        return
    _warned = True
    logger.warning(
        "this WebSocket is served neither by daphne nor by a server that ran the ASGI lifespan: "
        "the slow-client bound (SEND_BUFFER_BYTES) is off and nothing closes sockets or drains "
        "tasks at shutdown. Route \"lifespan\": streamapp.asgi.lifespan in your "
        "ProtocolTypeRouter and keep the server's lifespan on (uvicorn --lifespan on)"
    )
