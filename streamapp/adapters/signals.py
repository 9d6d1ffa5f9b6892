"""Run something first when a server's own asyncio signal handler fires (hypercorn's).

hypercorn handles SIGTERM with ``loop.add_signal_handler``, then keeps WebSockets open for its
``graceful_timeout`` and cancels them (close 1011) before the lifespan shutdown begins: too late
for the 1012 handover. asyncio keeps one handler per signal, in the loop's private
``_signal_handlers`` (a ``Handle`` with private ``_callback`` and ``_args``); ``chain_before``
re-registers the server's handler behind streamapp's. uvicorn installs its handlers with
``signal.signal`` and closes its sockets with 1012 itself: nothing to chain there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("streamapp.asgi")


def _handlers(loop: asyncio.AbstractEventLoop) -> dict[int, Any] | None:
    handlers = getattr(loop, "_signal_handlers", None)
    return handlers if isinstance(handlers, dict) else None


def chain_before(signum: int, first: Callable[[], object]) -> bool:
    """If the running loop handles ``signum``, call ``first`` before that handler; True if so."""
    loop = asyncio.get_running_loop()
    handlers = _handlers(loop)
    handle = handlers.get(signum) if handlers is not None else None
    callback, args = getattr(handle, "_callback", None), getattr(handle, "_args", ())
    if callback is None or getattr(callback, "streamapp_chained", False):
        return False

    def both() -> None:
        try:
            first()
        except Exception:  # noqa: BLE001 - the server's own shutdown must still happen
            logger.exception("streamapp's shutdown hook failed")
        callback(*args)

    both.streamapp_chained = True  # type: ignore[attr-defined]
    loop.add_signal_handler(signum, both)
    return True


def probe() -> list[str]:
    """What asyncio lacks of what ``chain_before`` reads ([]: all there)."""
    loop = asyncio.new_event_loop()
    try:
        missing = [] if _handlers(loop) is not None else ["asyncio loop._signal_handlers"]
        handle = asyncio.Handle(print, (), loop)
        missing += [f"asyncio.Handle.{name}" for name in ("_callback", "_args")
                    if not hasattr(handle, name)]
        return missing
    finally:
        loop.close()
