"""The WebSocket consumers: one task per socket, or many tasks over one socket."""

from __future__ import annotations

from typing import Any

from streamapp import metrics, protocol
from streamapp.conf import app_settings
from streamapp.exceptions import UnknownTask
from streamapp.keys import aget_task, canonical_key, route_key, split_key

from .protocol import Action, ProtocolError, since_from_query
from .sockets import TaskSocketConsumer
from .subscription import Subscription


class TaskConsumer(TaskSocketConsumer):
    """``ws/tasks/<app_label>/<model>/<pk>/[?since=N]``: one task, closed after its final state."""

    key = ""

    async def connect(self) -> None:
        await self.accept()
        kwargs = self.scope["url_route"]["kwargs"]
        try:
            self.key = route_key(kwargs.get("app_label"), kwargs.get("model"), kwargs.get("pk"))
            model, pk = split_key(self.key)  # checked, nothing read yet
        except UnknownTask as exc:
            await self.refuse("not_found", str(exc))
            return
        since, note = self.since_from_query()
        if note is not None:
            await self.send_frame(note)
        try:
            subscription = await self.subscribe(model, pk, self.key, since, recheck_user=False)
        except UnknownTask as exc:
            await self.refuse("not_found", str(exc))
            return
        except ProtocolError as exc:
            await self.refuse(exc.code, exc.message, exc.task)
            return
        await self.progressed(subscription)

    def since_from_query(self) -> tuple[int | None, dict[str, Any] | None]:
        """``?since=N`` from the URL; a bad value is reported and ignored."""
        try:
            return since_from_query(self.scope.get("query_string")), None
        except ProtocolError as exc:
            return None, protocol.error(exc.code, exc.message, self.key)

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
            await self.close_now(protocol.CLOSE_NORMAL)


class MultiTaskConsumer(TaskSocketConsumer):
    """``ws/tasks/``: any number of tasks over one socket by subscribe/unsubscribe actions."""

    async def connect(self) -> None:
        await self.accept()

    async def act(self, action: Action) -> None:
        if action.task is None:
            raise ProtocolError("bad_request", "cancel on ws/tasks/ needs a task key")
        try:
            model, pk = split_key(action.task)
            key = canonical_key(model, pk)
            if action.name == "unsubscribe":
                subscription = self.subscriptions.pop(key, None)
                if subscription is not None:
                    await subscription.close()
                return
            if action.name == "cancel":
                await self.cancel(await aget_task(key))
                return
            full = len(self.subscriptions) >= app_settings.MAX_SUBSCRIPTIONS
            if key not in self.subscriptions and full:
                metrics.rate_limited("subscriptions")
                raise ProtocolError(
                    "rate_limited",
                    f"a socket may hold {app_settings.MAX_SUBSCRIPTIONS} subscriptions",
                    key,
                )
            await self.subscribe(model, pk, key, action.since)
        except UnknownTask as exc:
            raise ProtocolError("not_found", str(exc), action.task[:100]) from None

