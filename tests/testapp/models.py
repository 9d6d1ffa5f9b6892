"""Task models used only by the tests: each drives one behaviour deterministically."""

import asyncio

from django.conf import settings
from django.db import models

from streamapp.exceptions import EventTooLarge
from streamapp.models import StreamTask

ERRORS = {
    "ValueError": ValueError,
    "MemoryError": MemoryError,
    "TimeoutError": asyncio.TimeoutError,
    "KeyError": KeyError,
    "RuntimeError": RuntimeError,
}


class BurstTask(StreamTask):
    """Sends ``count`` events as fast as it can; each ``{"i": n}``."""

    count = models.PositiveIntegerField(default=10)
    payload_bytes = models.PositiveIntegerField(default=0)

    async def process(self):
        pad = "x" * self.payload_bytes
        for i in range(1, self.count + 1):
            await self.send_event("tick", {"i": i, "pad": pad} if pad else {"i": i})
        return self.count


class StepTask(StreamTask):
    """Sends one event per ``step`` signal until it gets ``stop``: the test sets the pace."""

    label = models.CharField(max_length=50, default="")

    async def process(self):
        n = 0
        while True:
            command = await self.wait_signal("step")
            if command == "stop":
                return n
            if command == "raise":
                raise ValueError("asked to fail")
            n += 1
            await self.send_event("step", {"n": n})


class ErrorTask(StreamTask):
    """Sends one event, then raises the exception class named in ``kind``."""

    kind = models.CharField(max_length=50, default="ValueError")

    async def process(self):
        await self.send_event("before", {})
        raise ERRORS[self.kind]("failure on purpose")


class GeneratorTask(StreamTask):
    count = models.PositiveIntegerField(default=3)
    sync = models.BooleanField(default=False)

    async def process(self):
        if self.sync:
            return await self.process_sync_generator(self.sync_items())
        return await self.process_generator(self.async_items())

    async def async_items(self):
        for i in range(1, self.count + 1):
            yield {"step": i, "total": self.count}

    def sync_items(self):
        for i in range(1, self.count + 1):
            yield {"step": i, "total": self.count}


class TimeoutTask(StreamTask):
    timeout = 0.3

    async def process(self):
        await self.send_event("waiting", {})
        await asyncio.sleep(60)


class OwnedTask(StreamTask):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.CASCADE)

    @classmethod
    def visible_to(cls, user):
        """Listed for their owner and for staff (anyone signed in may still watch by key)."""
        if getattr(user, "is_staff", False):
            return cls.objects.all()
        if not getattr(user, "is_authenticated", False):
            return cls.objects.none()
        return cls.objects.filter(owner=user)

    async def process(self):
        await self.send_event("hello", {})
        return await self.wait_signal("finish")


class OversizeTask(StreamTask):
    """Tries an event of ``size`` characters, catches EventTooLarge, and completes anyway."""

    size = models.PositiveIntegerField(default=0)

    async def process(self):
        await self.send_event("before", {})
        try:
            await self.send_event("huge", {"pad": "x" * self.size})
        except EventTooLarge as exc:
            await self.send_event("refused", {"error": str(exc)})
            return "caught"
        return "sent"


class PacedTask(StreamTask):
    """Sends ``count`` events ``{"i": n}``, ``pause`` seconds apart (0: just lets others run).

    Like a task doing a little work between events: its events reach the layer in many small
    messages, not a few big batches, so a busy subscriber process falls behind and the layer
    drops some.
    """

    count = models.PositiveIntegerField(default=10)
    pause = models.FloatField(default=0)

    async def process(self):
        for i in range(1, self.count + 1):
            await self.send_event("tick", {"i": i})
            await asyncio.sleep(self.pause)
        return self.count
