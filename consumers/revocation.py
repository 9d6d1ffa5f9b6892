"""Open sockets whose sign-in no longer holds: found every REVALIDATE_SECONDS, closed with 4403.

One task per event loop watches the loop's sockets that have a signed-in user; a round costs one
query per 500 users (``streamapp.credentials.problems``), however many sockets they hold.
Anonymous sockets are not watched: there is nothing to revoke. Subscribes and cancels do not wait
for a round: they check the user themselves (sockets.py).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from streamapp.conf import app_settings
from streamapp.credentials import Credential, problems

logger = logging.getLogger("streamapp.consumers")


class Revocable(Protocol):
    """A socket, as the watch sees it."""

    credential: Credential | None

    async def revoke(self, reason: str) -> None:
        """Tell the client why, and close (4403)."""


class RevocationWatch:
    """This event loop's signed-in sockets, re-checked every REVALIDATE_SECONDS."""

    def __init__(self) -> None:
        self.sockets: dict[Revocable, None] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, socket: Revocable) -> None:
        self.sockets[socket] = None
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="streamapp revocation watch")

    def discard(self, socket: Revocable) -> None:
        self.sockets.pop(socket, None)
        task = self._task
        if not self.sockets and task is not None and task is not asyncio.current_task():
            task.cancel()  # nothing to watch: no task outlives the sockets
            self._task = None

    async def _run(self) -> None:
        while self.sockets:
            await asyncio.sleep(app_settings.REVALIDATE_SECONDS)
            try:
                await self.sweep()
            except Exception:
                logger.warning("re-checking open sockets' users failed", exc_info=True)
                await sync_to_async(close_old_connections)()

    async def sweep(self) -> None:
        """One round: close every watched socket whose sign-in no longer holds."""
        sockets = [s for s in self.sockets if s.credential is not None]
        found = await problems(s.credential for s in sockets)
        for socket in sockets:
            reason = found.get(socket.credential)
            if reason is None:
                continue
            try:
                await socket.revoke(reason)
            except Exception:
                logger.warning("closing a revoked socket failed", exc_info=True)


_watches: weakref.WeakKeyDictionary[Any, RevocationWatch] = weakref.WeakKeyDictionary()


def watch() -> RevocationWatch:
    """The running event loop's watch."""
    loop = asyncio.get_running_loop()
    found = _watches.get(loop)
    if found is None:
        found = _watches[loop] = RevocationWatch()
    return found
