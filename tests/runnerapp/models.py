"""Task models for the runner's multi-process, retry, cancel and database-trouble tests."""

import asyncio
import time

from asgiref.sync import sync_to_async
from django.db import connection, models
from django.db.models import F

from streamapp.models import StreamTask


class RetryTask(StreamTask):
    """Like demo.SlowTask, but a lost worker's run is retried once: ``max_attempts = 2``."""

    seconds = models.FloatField(default=30)
    max_attempts = 2

    async def process(self):
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < self.seconds:
            await self.send_event("progress", {"attempt": self.attempts, "elapsed": elapsed})
            await asyncio.sleep(0.1)
        return {"attempt": self.attempts}


class CountedTask(StreamTask):
    """Counts its runs in its own column, then waits for the signal ``finish``."""

    runs = models.PositiveIntegerField(default=0)

    async def process(self):
        await type(self).objects.filter(pk=self.pk).aupdate(runs=F("runs") + 1)
        await self.send_event("started", {})
        return await self.wait_signal("finish")


class CleanupTask(StreamTask):
    """Waits until cancelled, then reports its clean-up as an event before it stops."""

    async def process(self):
        await self.send_event("waiting", {})
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await self.send_event("cleanup", {})
            raise


class StubbornTask(StreamTask):
    """Swallows cancellation once and goes on: shutdown must not wait for it forever."""

    async def process(self):
        await self.send_event("waiting", {})
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.Event().wait()


class QueryTask(StreamTask):
    """Runs its own SQL statement ``sql``: a task whose own queries fail."""

    sql = models.TextField()

    async def process(self):
        await self.send_event("querying", {})
        await sync_to_async(self.execute)()
        return "queried"

    def execute(self):
        with connection.cursor() as cursor:
            cursor.execute(self.sql)
